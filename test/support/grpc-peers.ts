// gRPC peers for an HTTP-filtered steal: the Echo service (echo.proto) as the target's server in the pod and as the
// developer's program, each saying who answered, and a client for it. Each call is recorded as a stream.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type * as grpc from '@grpc/grpc-js';
import { startPeer, type RecordingServer } from './http-peers.ts';

const require = createRequire(import.meta.url);
const grpcJs = require('@grpc/grpc-js') as typeof grpc;
const protoLoader = require('@grpc/proto-loader') as typeof import('@grpc/proto-loader');
export const ECHO_PROTO = fileURLToPath(new URL('echo.proto', import.meta.url));

/**
 * The server's source, for `node -e <source> <who> <port> <grpc-js> <proto-loader> <proto>`: Unary answers
 * "<who> unary <text>", ServerStream `count` times "<who> <i> <text>", Bidi "<who> echo <text>" to each message; with
 * `fail`, the status is PERMISSION_DENIED "<who> refuses"; every status carries the trailer `x-answered-by: <who>`.
 */
const grpcPeerServer = `
const [who, port, grpcPath, loaderPath, protoPath] = process.argv.slice(1);
const grpc = require(grpcPath);
const loader = require(loaderPath);
const { Echo } = grpc.loadPackageDefinition(loader.loadSync(protoPath)).doppel.test;
const trailer = () => { const metadata = new grpc.Metadata(); metadata.set('x-answered-by', who); return metadata; };
const refusal = () => ({ code: grpc.status.PERMISSION_DENIED, details: who + ' refuses', metadata: trailer() });
const record = (call, path, body) => console.log(JSON.stringify({ stream: { path, headers: call.metadata.getMap(), trailers: null, body, reset: null } }));
const server = new grpc.Server();
server.addService(Echo.service, {
  Unary(call, callback) {
    record(call, '/doppel.test.Echo/Unary', call.request.text);
    if (call.request.fail) return callback(refusal());
    callback(null, { text: who + ' unary ' + call.request.text }, trailer());
  },
  ServerStream(call) {
    record(call, '/doppel.test.Echo/ServerStream', call.request.text);
    for (let i = 0; i < call.request.count; i++) call.write({ text: who + ' ' + i + ' ' + call.request.text });
    if (call.request.fail) return call.emit('error', refusal());
    call.end(trailer());
  },
  Bidi(call) {
    const texts = [];
    call.on('data', (say) => {
      texts.push(say.text);
      call.write({ text: who + ' echo ' + say.text });
    });
    call.on('end', () => {
      record(call, '/doppel.test.Echo/Bidi', texts.join(','));
      call.end(trailer());
    });
  },
});
server.bindAsync('0.0.0.0:' + port, grpc.ServerCredentials.createInsecure(), (error, bound) => {
  if (error) throw error;
  console.log('ready ' + bound);
});
process.on('SIGTERM', () => process.exit(0));
`;

/** Where grpc-js, proto-loader and echo.proto are, as the peers' scripts take them. */
export const grpcPaths = (): string[] => [require.resolve('@grpc/grpc-js'), require.resolve('@grpc/proto-loader'), ECHO_PROTO];

const serverArgs = (who: string, port: number) => ['-e', grpcPeerServer, who, String(port), ...grpcPaths()];

/** The Echo server as the target's own, in the target's network namespace on `port`. */
export function podGrpcPeer(pid: number, port: number): Promise<RecordingServer> {
  return startPeer(['nsenter', `--net=/proc/${pid}/ns/net`, '--', process.execPath, ...serverArgs('target', port)]);
}

/** The Echo server as the developer's program, on a free port of this machine. */
export function localGrpcPeer(): Promise<RecordingServer & { port: number }> {
  return startPeer(grpcServerCommand('program', 0));
}

/** The command line of an Echo server answering as `who` on `port`; it prints `ready <port>`. */
export function grpcServerCommand(who: string, port: number): string[] {
  return [process.execPath, ...serverArgs(who, port)];
}

export interface Say {
  text: string;
  count?: number;
  fail?: boolean;
}

/** How a call ended: its status, as the client saw it, with the trailer naming who answered. */
export interface Ended {
  code: grpc.status;
  details: string;
  answeredBy: string | undefined;
}

export interface EchoClient {
  unary(say: Say, metadata?: Record<string, string>): Promise<{ text?: string; status: Ended }>;
  serverStream(say: Say, metadata?: Record<string, string>): Promise<{ texts: string[]; status: Ended }>;
  /** Sends each text, each after the answer to the one before, then ends. */
  bidi(texts: string[], metadata?: Record<string, string>): Promise<{ texts: string[]; status: Ended }>;
  close(): void;
}

type Call = { on(event: 'status', listener: (status: grpc.StatusObject) => void): unknown };
type Stub = Record<string, (...args: unknown[]) => unknown> & grpc.Client;

/** One client (one HTTP/2 connection) to an Echo server at `address` (host:port). */
export function echoClient(address: string): EchoClient {
  const loaded = grpcJs.loadPackageDefinition(protoLoader.loadSync(ECHO_PROTO)) as unknown as { doppel: { test: { Echo: new (address: string, credentials: grpc.ChannelCredentials) => Stub } } };
  const stub = new loaded.doppel.test.Echo(address, grpcJs.credentials.createInsecure());
  const meta = (pairs: Record<string, string> = {}) => {
    const metadata = new grpcJs.Metadata();
    for (const [key, value] of Object.entries(pairs)) metadata.set(key, value);
    return metadata;
  };
  const ended = (call: Call) =>
    new Promise<Ended>((resolve) => call.on('status', (status) => resolve({ code: status.code, details: status.details, answeredBy: status.metadata.get('x-answered-by')[0]?.toString() })));
  return {
    async unary(say, metadata) {
      let answered!: (text: string | undefined) => void;
      const text = new Promise<string | undefined>((resolve) => (answered = resolve));
      const call = stub.Unary!(say, meta(metadata), (_error: unknown, said?: { text: string }) => answered(said?.text)) as Call;
      const [status, said] = await Promise.all([ended(call), text]);
      return { text: said, status };
    },
    async serverStream(say, metadata) {
      const call = stub.ServerStream!(say, meta(metadata)) as Call & { on(event: 'data', listener: (said: { text: string }) => void): unknown; on(event: 'error', listener: () => void): unknown };
      const texts: string[] = [];
      call.on('data', (said) => texts.push(said.text));
      call.on('error', () => {});
      return { texts, status: await ended(call) };
    },
    async bidi(texts, metadata) {
      const call = stub.Bidi!(meta(metadata)) as Call & grpc.ClientDuplexStream<Say, { text: string }>;
      const answers: string[] = [];
      call.on('error', () => {});
      const status = ended(call);
      for (const text of texts) {
        // An answer, or the end of the call (which has failed, then).
        const answer = Promise.race([new Promise<void>((resolve) => call.once('data', (said: { text: string }) => resolve(void answers.push(said.text)))), status]);
        call.write({ text });
        await answer;
      }
      call.end();
      return { texts: answers, status: await status };
    },
    close: () => stub.close(),
  };
}
