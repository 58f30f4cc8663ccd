// The two servers an HTTP-filtered steal chooses between, as tests play them: each answers "<who> <method> <url> <body>"
// and, to a WebSocket upgrade, sends one text message "<who> <url>"; /close closes it; the target's runs in the pod and
// keeps every byte.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';

/**
 * The server's source, for `node -e <source> <who> <port>`: prints `ready` and then, as JSON lines, every byte received
 * (`{"bytes": base64}`). Written out in full so that it runs alike in the pod and under doppel.
 */
export const peerServer = `
const http = require('http');
const crypto = require('crypto');
const [who, port] = [process.argv[1], Number(process.argv[2])];
const frame = (text) => Buffer.concat([Buffer.from([0x81, Buffer.byteLength(text)]), Buffer.from(text)]);
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => res.end(who + ' ' + req.method + ' ' + req.url + ' ' + Buffer.concat(chunks)));
  if (req.url === '/close') server.close(() => console.log('closed'));
});
server.on('connection', (socket) => socket.on('data', (bytes) => console.log(JSON.stringify({ bytes: bytes.toString('base64') }))));
server.on('upgrade', (req, socket) => {
  const accept = crypto.createHash('sha1').update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: ' + accept + '\\r\\n\\r\\n');
  socket.write(frame(who + ' ' + req.url));
  socket.on('error', () => {});
});
server.keepAliveTimeout = 60000;
server.listen(port, '0.0.0.0', () => console.log('ready ' + server.address().port));
process.on('SIGTERM', () => process.exit(0));
`;

export interface RecordingServer {
  /** Every byte it has received so far, across its connections, in arrival order. */
  received(): Buffer;
  /** The HTTP/2 streams (or gRPC calls) it has been sent, as it saw them, in the order their requests ended or reset. */
  streams(): RecordedStream[];
  stop(): Promise<void>;
}

/** The peer server as the target's own, in the target's network namespace on `port`. */
export function podPeer(pid: number, port: number): Promise<RecordingServer> {
  return startPeer(['nsenter', `--net=/proc/${pid}/ns/net`, '--', process.execPath, '-e', peerServer, 'target', String(port)]);
}

/** The peer server as the developer's program, on a free port of this machine. */
export function localPeer(who = 'program'): Promise<RecordingServer & { port: number }> {
  return startPeer([process.execPath, '-e', peerServer, who, '0']) as Promise<RecordingServer & { port: number }>;
}

/** Starts a recording server: it prints `ready <port>`, then JSON lines of `{ bytes }` received and `{ stream }` seen. */
export async function startPeer(command: string[]): Promise<RecordingServer & { port: number }> {
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  const chunks: Buffer[] = [];
  const streams: RecordedStream[] = [];
  let partial = '';
  let ready: (port: number) => void;
  const up = new Promise<number>((resolve) => (ready = resolve));
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (text: string) => {
    const lines = (partial + text).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      if (line.startsWith('ready')) ready(Number(line.split(' ')[1]));
      else if (line.startsWith('{')) {
        const record = JSON.parse(line) as { bytes?: string; stream?: RecordedStream };
        if (record.stream) streams.push(record.stream);
        else chunks.push(Buffer.from(record.bytes!, 'base64'));
      }
    }
  });
  const exited = once(child, 'exit');
  const port = await Promise.race([up, exited.then(() => Promise.reject(new Error(`${command.join(' ')}: exited before it was ready`)))]);
  return {
    port,
    received: () => Buffer.concat(chunks),
    streams: () => [...streams],
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** The first message a WebSocket at `url` receives (Node's built-in client), then closes it. */
export async function firstWebSocketMessage(url: string): Promise<string> {
  const socket = new WebSocket(url);
  try {
    return await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no WebSocket message from ${url} within 5 s`)), 5000);
      socket.addEventListener('message', (event) => {
        clearTimeout(timer);
        resolve(String(event.data));
      });
      socket.addEventListener('error', () => {
        clearTimeout(timer);
        reject(new Error(`WebSocket ${url} failed`));
      });
    });
  } finally {
    socket.close();
  }
}

/**
 * Writes `bytes` (several requests) in one write on one connection and reads `count` answers with a Content-Length;
 * returns their bodies in the order they came.
 */
export async function pipelined(host: string, port: number, bytes: Buffer, count: number): Promise<string[]> {
  const socket = connect({ host, port });
  await once(socket, 'connect');
  socket.write(bytes);
  let buffered = Buffer.alloc(0);
  const bodies: string[] = [];
  try {
    for await (const chunk of socket) {
      buffered = Buffer.concat([buffered, chunk as Buffer]);
      for (;;) {
        const head = buffered.indexOf('\r\n\r\n');
        if (head === -1) break;
        const length = Number(/content-length: *(\d+)/i.exec(buffered.subarray(0, head).toString('latin1'))?.[1]);
        if (buffered.length < head + 4 + length) break;
        bodies.push(buffered.subarray(head + 4, head + 4 + length).toString());
        buffered = buffered.subarray(head + 4 + length);
      }
      if (bodies.length >= count) break;
    }
  } finally {
    socket.destroy();
  }
  return bodies;
}

/** One HTTP/2 stream as a recording peer saw it. */
export interface RecordedStream {
  path: string;
  headers: Record<string, string | string[]>;
  trailers: Record<string, string | string[]> | null;
  body: string;
  /** The code of the RST_STREAM that ended it, if one did. */
  reset: number | null;
}

/**
 * The HTTP/2 (h2c, prior knowledge) peer, for `node -e <source> <who> <port>`: answers each stream with `x-who: <who>`,
 * the body "<who> <method> <path> <body>" and the trailer `x-answered-by: <who>`; `/reset` is reset with the code its
 * `x-reset-code` header asks, `/cut` too, after the headers and "partial" of an answer. A stream is answered when its request ends, so one the caller resets before is recorded
 * with that reset. Each connection's bytes go through a stream of ours, so that they can be recorded.
 */
export const h2PeerServer = `
const http2 = require('http2');
const net = require('net');
const { Duplex } = require('stream');
const [who, port] = [process.argv[1], Number(process.argv[2])];
const server = http2.createServer();
server.on('stream', (stream, headers) => {
  const path = headers[':path'];
  const chunks = [];
  let trailers = null;
  let answered = false;
  stream.on('error', () => {});
  stream.on('trailers', (received) => (trailers = received));
  stream.on('data', (chunk) => chunks.push(chunk));
  stream.on('close', () => {
    const reset = answered ? null : stream.rstCode;
    console.log(JSON.stringify({ stream: { path, headers, trailers, body: Buffer.concat(chunks).toString(), reset } }));
  });
  if (path === '/reset') {
    answered = true;
    stream.close(Number(headers['x-reset-code']));
    return;
  }
  if (path === '/cut') {
    answered = true;
    stream.respond({ ':status': 200, 'x-who': who }, { waitForTrailers: true });
    stream.write('partial', () => setTimeout(() => stream.close(Number(headers['x-reset-code'])), 100));
    return;
  }
  stream.on('end', () => {
    // Node ends a reset stream's body too.
    if (stream.closed) return;
    answered = true;
    stream.respond({ ':status': 200, 'x-who': who }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-answered-by': who }));
    stream.end(who + ' ' + headers[':method'] + ' ' + path + ' ' + Buffer.concat(chunks));
  });
});
net.createServer((socket) => {
  const view = new Duplex({ read: () => socket.resume(), write: (chunk, _encoding, callback) => socket.write(chunk, callback), final: (callback) => socket.end(callback) });
  socket.on('data', (bytes) => {
    console.log(JSON.stringify({ bytes: bytes.toString('base64') }));
    if (!view.push(bytes)) socket.pause();
  });
  socket.on('end', () => view.push(null));
  socket.on('error', () => view.destroy());
  socket.on('close', () => view.destroy());
  view.on('error', () => socket.destroy());
  server.emit('connection', view);
}).listen(port, '0.0.0.0', function () { console.log('ready ' + this.address().port); });
process.on('SIGTERM', () => process.exit(0));
`;

/** The HTTP/2 peer as the target's own, in the target's network namespace on `port`. */
export function podH2Peer(pid: number, port: number): Promise<RecordingServer> {
  return startPeer(['nsenter', `--net=/proc/${pid}/ns/net`, '--', process.execPath, '-e', h2PeerServer, 'target', String(port)]);
}

/** The HTTP/2 peer as the developer's program, on a free port of this machine. */
export function localH2Peer(): Promise<RecordingServer & { port: number }> {
  return startPeer([process.execPath, '-e', h2PeerServer, 'program', '0']);
}
