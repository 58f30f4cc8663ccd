// Where the agents of several sessions on one target find the one that routes a port: an abstract Unix socket named
// after the port. Abstract names belong to the network namespace the agents share, need no file, and vanish with the
// process that holds them, so a killed agent leaves nothing to clean and the next one simply takes the name.
import { connect, createServer, type Server, type Socket } from 'node:net';

const name = (port: number) => `\0doppel-incoming-${port}`;

/** Holds the port's name, or undefined when another agent holds it. `member` gets each agent that joins. */
export function holdRendezvous(port: number, member: (socket: Socket) => void): Promise<Server | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer({ noDelay: true }, member);
    server.once('error', (error: NodeJS.ErrnoException) => (error.code === 'EADDRINUSE' ? resolve(undefined) : reject(error)));
    server.listen({ path: name(port) }, () => resolve(server));
  });
}

/**
 * Errors of a connect that mean "no holder to join now": none holds the name, the holder died while we connected
 * (ECONNRESET), or its backlog is full (EAGAIN: dying, or too busy to accept). The caller tries again.
 */
const NO_HOLDER_NOW = new Set(['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'EAGAIN']);

/** Connects to the agent that holds the port's name, or undefined when none can be joined now. */
export function reachRendezvous(port: number): Promise<Socket | undefined> {
  return new Promise((resolve, reject) => {
    const socket = connect({ path: name(port) });
    socket.once('connect', () => {
      socket.off('error', failed);
      resolve(socket);
    });
    const failed = (error: NodeJS.ErrnoException) => (NO_HOLDER_NOW.has(error.code ?? '') ? resolve(undefined) : reject(error));
    socket.once('error', failed);
  });
}
