// `link.direct`: a client that reaches this agent through Kubernetes' port-forward (the API server, the kubelet and
// the runtime, about a millisecond a round trip) may move its connection to a TCP connection of its own to this
// agent's pod, where it can reach the pod's address. One connection is taken, the one that opens with the key, within
// a few seconds, proven as a launcher's client proves its token (auth-preface.ts); the listener then closes.
import { randomBytes } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { Connection } from '../protocol/connection.ts';
import { AUTH_MAX_LINE, AUTH_OK, tokenMatches } from '../protocol/auth-preface.ts';
import type { Operations } from '../protocol/messages.ts';
import type { Log } from './log.ts';

/** How long the listener waits for the client's connection. */
const LISTEN_MS = 5000;

export async function listenDirect(connection: Connection, log: Log): Promise<Operations['link.direct']['result']> {
  const key = randomBytes(16).toString('hex');
  const server = createServer({ noDelay: true, pauseOnConnect: true });
  const done = () => {
    clearTimeout(timer);
    server.close();
  };
  const timer = setTimeout(done, LISTEN_MS);
  server.on('connection', (socket) => {
    void firstLine(socket).then((line) => {
      if (!tokenMatches(line, key)) return void socket.destroy();
      done();
      connection.acceptMove(socket);
      socket.write(AUTH_OK);
      log.info(`the client linked directly from ${socket.remoteAddress}`);
    });
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

/** The connection's first line, read without taking a byte beyond it (the client sends nothing more until answered). */
function firstLine(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    let line = '';
    const finish = (value: string) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      resolve(value);
    };
    const timer = setTimeout(() => finish(''), 2000);
    const onData = (chunk: Buffer) => {
      line += chunk.toString('latin1');
      const end = line.indexOf('\n');
      if (end >= 0) finish(end === line.length - 1 ? line.slice(0, end) : '');
      else if (line.length > AUTH_MAX_LINE) finish('');
    };
    socket.on('data', onData);
    socket.on('error', () => finish(''));
    socket.resume();
  });
}
