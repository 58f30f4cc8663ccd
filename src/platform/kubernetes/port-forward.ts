// A byte stream to a port on a pod's loopback, through the API server's port-forward (one WebSocket per stream);
// our side closes the WebSocket when either end is done, because the library leaves it open.
import { PortForward, type KubeConfig } from '@kubernetes/client-node';
import { Duplex, PassThrough, Writable } from 'node:stream';

export interface ForwardedStream {
  readonly stream: Duplex;
  /** Settles with what ended the stream: the peer, a port-forward error, or our own close. */
  readonly closed: Promise<string>;
}

export async function openPortForward(config: KubeConfig, namespace: string, pod: string, port: number): Promise<ForwardedStream> {
  const toPod = new PassThrough();
  const fromPod = new PassThrough();
  let said = '';
  let end: (why: string) => void = () => {};
  const closed = new Promise<string>((resolve) => (end = resolve));
  // The second channel carries the kubelet's complaints ("connection refused", "pod not found").
  const errors = new Writable({
    write(chunk: Buffer, _encoding, done) {
      // Each channel opens with its port number, which the library strips, leaving an empty first chunk.
      if (chunk.length === 0) return done();
      said += chunk.toString();
      stream.destroy(new Error(said.trim()));
      done();
    },
  });
  const stream = Duplex.from({ readable: fromPod, writable: toPod });
  // Errors surface through `closed` and to whoever reads the stream; an unread one must not crash the CLI.
  stream.on('error', (error: Error) => end(error.message || 'the port-forward failed'));
  const ws = await new PortForward(config, true).portForward(namespace, pod, [port], fromPod, errors, toPod).catch((error: Error) => {
    throw withHttpStatus(error);
  });
  const socket = ws as unknown as { close(): void; once(event: 'close', listener: (code: number, reason: Buffer) => void): void; once(event: 'error', listener: (error: Error) => void): void };
  socket.once('close', (code, reason) => {
    end(said.trim() || `the port-forward closed (${code}${reason.length ? ` ${reason.toString()}` : ''})`);
    fromPod.end();
  });
  socket.once('error', (error) => stream.destroy(error));
  stream.once('close', () => {
    end('closed by us');
    socket.close();
  });
  return { stream, closed };
}

/** A refused WebSocket upgrade says its HTTP status only in words; carry it as the status API errors have, so a 403 reads as RBAC's. */
function withHttpStatus(error: Error): Error {
  const status = /Unexpected server response: (\d{3})/.exec(error.message)?.[1];
  return status === undefined ? error : Object.assign(error, { statusCode: Number(status) });
}
