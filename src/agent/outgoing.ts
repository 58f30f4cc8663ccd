// Outgoing streams: TCP from the target's network namespace, and its Unix sockets; the bytes relayed over a channel,
// or (process platform) the connected socket itself handed to the program.
import { connect, isIP, Socket } from 'node:net';
import type { Connection } from '../protocol/connection.ts';
import { RemoteError } from '../protocol/errors.ts';
import type { Operations } from '../protocol/messages.ts';
import { resolveInRoot } from './root-path.ts';
import type { Log } from './log.ts';

type TcpConnect = Operations['tcp.connect'];
type UnixConnect = Operations['unix.connect'];
type ConnectFd = Operations['tcp.connectFd'];
/** sun_path holds 108 bytes with its NUL. */
const SUN_PATH_MAX = 107;
const CONNECT_TIMEOUT_MS = 30_000;
/** How long a socket waits to be released after its hand-over: past it, the program died before taking it (or telling). */
const HANDOVER_TIMEOUT_MS = 10_000;

export function createOutgoing(log: Log): (args: TcpConnect['args'], connection: Connection) => Promise<TcpConnect['result']> {
  return async ({ host, port, channel }, connection) => {
    if (isIP(host) === 0) throw new RemoteError('EINVAL', `not an IP address: ${host}`);
    // Half-open: the program's shutdown(SHUT_WR) reaches the server, whose answer still comes back.
    const socket = await relay(() => connect({ host, port, noDelay: true, timeout: CONNECT_TIMEOUT_MS, allowHalfOpen: true }), `${host}:${port}`, channel, connection);
    log.debug(`tcp ${host}:${port} on channel ${channel}`);
    return { localAddress: socket.localAddress ?? '', localPort: socket.localPort ?? 0 };
  };
}

export interface Handover {
  connect(args: ConnectFd['args'], connection: Connection): Promise<ConnectFd['result']>;
  release(args: Operations['tcp.releaseFd']['args']): Promise<Operations['tcp.releaseFd']['result']>;
}

/**
 * Version 8 (process platform): connects from the target's network namespace and hands the socket itself to the
 * program, whose layer takes it with pidfd_getfd; from then on the program and the server talk through the kernel
 * alone. The socket is paused before it connects, so Node never reads from it (lib/net.js starts reading at connect
 * only when the socket is not paused): what a server says first stays in the kernel's queue for the program. Our copy
 * is closed at release, with `destroy` (a close, never a shutdown or a reset): closing one descriptor of a shared
 * socket sends nothing to the server.
 */
export function createHandover(log: Log, releaseWithinMs = HANDOVER_TIMEOUT_MS): Handover {
  const held = new Map<number, { socket: Socket; timer: NodeJS.Timeout }>();
  let nextToken = 1;
  let watched: Connection | undefined;
  const drop = (token: number) => {
    const entry = held.get(token);
    if (!entry) return;
    held.delete(token);
    clearTimeout(entry.timer);
    entry.socket.destroy();
  };
  return {
    async connect({ host, port }, connection) {
      if (isIP(host) === 0) throw new RemoteError('EINVAL', `not an IP address: ${host}`);
      if (watched !== connection) {
        // A client that goes takes its unreleased sockets with it.
        watched = connection;
        void connection.closed.then(() => {
          for (const token of [...held.keys()]) drop(token);
        });
      }
      const socket = new Socket();
      socket.pause();
      await new Promise<void>((resolve, reject) => {
        const fail = (error: Error) => {
          socket.destroy();
          reject(error);
        };
        socket.once('timeout', () => fail(new RemoteError('ETIMEDOUT', `connecting to ${host}:${port} timed out`)));
        socket.once('error', fail);
        socket.once('connect', () => {
          socket.off('error', fail);
          socket.setTimeout(0);
          resolve();
        });
        socket.setTimeout(CONNECT_TIMEOUT_MS);
        socket.connect({ host, port });
      });
      // Nothing is read or written on our copy, so nothing can fail on it; a listener keeps a stray error quiet.
      socket.on('error', () => undefined);
      const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
      if (typeof fd !== 'number' || fd < 0) {
        socket.destroy();
        throw new RemoteError('EOPNOTSUPP', 'this agent\'s sockets have no descriptor to hand over');
      }
      const token = nextToken++;
      const timer = setTimeout(() => {
        log.debug(`tcp ${host}:${port}: hand-over ${token} never released; closed`);
        drop(token);
      }, releaseWithinMs);
      timer.unref();
      held.set(token, { socket, timer });
      log.debug(`tcp ${host}:${port} handed over as fd ${fd} (${token})`);
      return { fd, pid: process.pid, token };
    },
    async release({ token }) {
      drop(token);
      return {};
    },
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
      // A channel destroyed with the connection (its client gone) ends with no error and no end to pipe on.
      channel.once('close', () => socket.destroy());
      socket.pipe(channel);
      channel.pipe(socket);
      resolve(socket);
    });
  });
}
