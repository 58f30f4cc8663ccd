// Outgoing streams: TCP from the target's network namespace, and its Unix sockets; the bytes relayed over a channel.
import { connect, isIP, type Socket } from 'node:net';
import type { Connection } from '../protocol/connection.ts';
import { RemoteError } from '../protocol/errors.ts';
import type { Operations } from '../protocol/messages.ts';
import { resolveInRoot } from './root-path.ts';
import type { Log } from './log.ts';

type TcpConnect = Operations['tcp.connect'];
type UnixConnect = Operations['unix.connect'];
/** sun_path holds 108 bytes with its NUL. */
const SUN_PATH_MAX = 107;
const CONNECT_TIMEOUT_MS = 30_000;

export function createOutgoing(log: Log): (args: TcpConnect['args'], connection: Connection) => Promise<TcpConnect['result']> {
  return async ({ host, port, channel }, connection) => {
    if (isIP(host) === 0) throw new RemoteError('EINVAL', `not an IP address: ${host}`);
    // Half-open: the program's shutdown(SHUT_WR) reaches the server, whose answer still comes back.
    const socket = await relay(() => connect({ host, port, noDelay: true, timeout: CONNECT_TIMEOUT_MS, allowHalfOpen: true }), `${host}:${port}`, channel, connection);
    log.debug(`tcp ${host}:${port} on channel ${channel}`);
    return { localAddress: socket.localAddress ?? '', localPort: socket.localPort ?? 0 };
  };
}

/** Version 5: a Unix stream socket of the target's, by path in its mount namespace or by abstract name in its network namespace. */
export function createUnixOutgoing(root: string, log: Log): (args: UnixConnect['args'], connection: Connection) => Promise<UnixConnect['result']> {
  return async ({ path, abstract, channel }, connection) => {
    const where = abstract ? `\0${path}` : (await resolveInRoot(root, path, true)).host;
    // sun_path's limit; the target's own path fit, but its root's prefix may not.
    if (Buffer.byteLength(where) > SUN_PATH_MAX) throw new RemoteError('ENAMETOOLONG', `${path}: too long to reach through ${root}`);
    await relay(() => connect({ path: where, allowHalfOpen: true }), abstract ? `@${path}` : path, channel, connection);
    log.debug(`unix ${abstract ? '@' : ''}${path} on channel ${channel}`);
    return {};
  };
}

/** Connects, then pipes the socket and the client's channel both ways; resolves with the connected socket. */
function relay(open: () => Socket, what: string, channelId: number, connection: Connection): Promise<Socket> {
  return new Promise((resolve, reject) => {
    // Attached before connecting, so a client that gave up (its deadline) resets the channel and ends the attempt.
    const channel = connection.attachChannel(channelId);
    const socket = open();
    const fail = (error: Error) => {
      socket.destroy();
      channel.destroy();
      reject(error);
    };
    socket.once('timeout', () => fail(new RemoteError('ETIMEDOUT', `connecting to ${what} timed out`)));
    socket.once('error', fail);
    const cancelled = () => fail(new RemoteError('ECANCELED', `the client gave up connecting to ${what}`));
    channel.once('error', cancelled);
    socket.once('connect', () => {
      socket.off('error', fail);
      channel.off('error', cancelled);
      socket.setTimeout(0);
      socket.on('error', (error) => channel.destroy(error));
      channel.on('error', () => socket.destroy());
      socket.pipe(channel);
      channel.pipe(socket);
      resolve(socket);
    });
  });
}
