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

/** Connects to the agent that holds the port's name, or undefined when none does (any more). */
export function reachRendezvous(port: number): Promise<Socket | undefined> {
  return new Promise((resolve, reject) => {
    const socket = connect({ path: name(port) });
    socket.once('connect', () => {
      socket.off('error', failed);
      resolve(socket);
    });
    const failed = (error: NodeJS.ErrnoException) => (error.code === 'ECONNREFUSED' || error.code === 'ENOENT' ? resolve(undefined) : reject(error));
    socket.once('error', failed);
  });
}
