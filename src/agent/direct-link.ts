// `link.direct`: a client that reaches this agent through Kubernetes' port-forward (the API server, the kubelet and
// the runtime, about a millisecond a round trip) may move its connection to a TCP connection of its own to this
// agent's pod, where it can reach the pod's address. One connection is taken, the one that opens with the key, within
// a few seconds, admitted as a launcher's client is (admission.ts) with a fresh key for token; the listener then closes.
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { Connection } from '../protocol/connection.ts';
import type { Operations } from '../protocol/messages.ts';
import { admit } from './admission.ts';
import type { Log } from './log.ts';

/** How long the listener waits for the client's connection. */
const LISTEN_MS = 5000;

export async function listenDirect(connection: Connection, log: Log): Promise<Operations['link.direct']['result']> {
  const key = randomBytes(16).toString('hex');
  const server = createServer({ noDelay: true });
  const done = () => {
    clearTimeout(timer);
    server.close();
  };
  const timer = setTimeout(done, LISTEN_MS);
  server.on('connection', (socket) => {
    // Taken before the client, answered, can send its move on the old stream: a later turn of the event loop.
    admit(socket, key).then(
      () => {
        done();
        connection.acceptMove(socket);
        log.info(`the client linked directly from ${socket.remoteAddress}`);
      },
      // Told `denied` already, or silent too long: ended either way, its answer flushed.
      () => socket.end(),
    );
  });
  void connection.closed.then(done);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, resolve);
  });
  const { port } = server.address() as { port: number };
  // IPv4 first: a pod's IPv6 addresses are often link-local only.
  const addresses = Object.values(networkInterfaces())
    .flat()
    .filter((address) => address !== undefined && !address.internal && !address.address.startsWith('fe80:'))
    .sort((a, b) => Number(a!.family === 'IPv6') - Number(b!.family === 'IPv6'))
    .map((address) => address!.address);
  return { addresses, port, key };
}
