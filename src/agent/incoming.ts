// Incoming traffic: a subscribed port of the target's network namespace is redirected to a listener of the agent's; each
// connection is handed to the client (steal), or passed on to the target's server while its bytes are copied to the client
// (mirror); with an HTTP filter, or probes to keep, request by request (incoming-http.ts).
import { execFile } from 'node:child_process';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Channel } from '../protocol/channel.ts';
import type { Connection } from '../protocol/connection.ts';
import { RemoteError } from '../protocol/errors.ts';
import type { IncomingMode, Operations } from '../protocol/messages.ts';
import { compileFilter, isProbe, type RequestHead, type RequestTest } from './http-filter.ts';
import { copyHttp, stealHttp } from './incoming-http.ts';
import { addRedirect, chainName, createChain, deleteRedirect, detectBackend, removeChain, removeChainSync, type Backend } from './iptables.ts';
import type { Log } from './log.ts';

type Subscribe = Operations['incoming.subscribe'];
type Unsubscribe = Operations['incoming.unsubscribe'];

/**
 * What a mirrored connection's copy may hold unsent before it is given up: the caller's traffic never waits for
 * the client, so a client that stops reading loses its copy (the log says so), not the target its speed.
 */
const MIRROR_BACKLOG = 4 * 1024 * 1024;

/**
 * How long a filtered steal waits for a caller's first bytes before it takes the connection for a protocol whose
 * server speaks first, and passes it to the target whole (mirrord waits as long).
 */
const FILTERED_FIRST_BYTES_MS = 10_000;
/**
 * The same for an unfiltered steal that keeps probes with the target: such a connection goes to the program whole, so
 * a short wait costs a server-first protocol little; probes speak at once.
 */
const UNFILTERED_FIRST_BYTES_MS = 500;

export interface Incoming {
  subscribe(args: Subscribe['args'], connection: Connection): Promise<Subscribe['result']>;
  unsubscribe(args: Unsubscribe['args']): Promise<Unsubscribe['result']>;
  /** Settles when no rule change is under way: an exiting agent waits for it, so that close() sees every rule. */
  settled(): Promise<void>;
  /** Removes every rule and chain, then drops listeners and connections; synchronous, so an exit handler can call it. */
  close(): void;
}

interface Subscription {
  port: number;
  mode: IncomingMode;
  server: Server;
  /** The listener's port, where the rule sends the subscribed port's connections. */
  toPort: number;
}

export function createIncoming(options: { session: string; log: Log }): Incoming {
  const { log } = options;
  const chain = chainName(options.session);
  const subscriptions = new Map<number, Subscription>();
  const sockets = new Set<Socket>();
  let backend: Promise<Backend> | undefined;
  /** Whether our chain (and the jump to it) exists; set before the first command that makes it. */
  let chainMade: Backend | undefined;
  // Rule changes run one at a time, so a chain is never made twice or removed under a rule being added.
  let queue: Promise<unknown> = Promise.resolve();
  let closed = false;
  let watching = false;
  const serialized = <T>(work: () => Promise<T>): Promise<T> => {
    const next = queue.then(work);
    queue = next.catch(() => undefined);
    return next;
  };

  const redirect = (port: number, toPort: number) =>
    serialized(async () => {
      backend ??= detectBackend([]);
      const which = await backend;
      if (chainMade === undefined) {
        chainMade = which;
        // A chain by our name can only be a leftover of this session's name (a reused CLI pid): start afresh.
        removeChainSync([], which, chain);
        await createChain([], which, chain);
        log.info(`${which}: chain ${chain} made, jumped to from PREROUTING`);
      }
      await addRedirect([], which, chain, port, toPort);
    });

  const unredirect = (port: number, toPort: number) =>
    serialized(async () => {
      if (chainMade === undefined) return;
      await deleteRedirect([], chainMade, chain, port, toPort);
      if (subscriptions.size === 0) {
        // Forgotten only once gone, so that a failure here still leaves it to close().
        await removeChain([], chainMade, chain);
        log.info(`${chainMade}: chain ${chain} removed`);
        chainMade = undefined;
      }
    });

  const close = () => {
    if (closed) return;
    closed = true;
    // Connections first: a destroyed socket's fd closes at once, so its FIN leaves while the namespace still has our
    // NAT, which turns its source back into the subscribed port. Sent after, it would not reach the caller, and an
    // idle kept-alive connection (the HTTP path keeps them) would stay open at the caller's end.
    for (const socket of sockets) socket.destroy();
    for (const subscription of subscriptions.values()) subscription.server.close();
    subscriptions.clear();
    if (chainMade !== undefined) {
      const failures = removeChainSync([], chainMade, chain);
      for (const failure of failures) log.warn(`leaving the namespace: ${failure}`);
      if (failures.length === 0) log.info(`${chainMade}: chain ${chain} removed`);
      chainMade = undefined;
    }
  };

  return {
    async subscribe({ port, mode, flush, filter, stealProbes = false }, connection) {
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RemoteError('EINVAL', `not a TCP port: ${port}`);
      if (mode !== 'steal' && mode !== 'mirror') throw new RemoteError('EINVAL', `unknown incoming mode "${mode}"`);
      const matches = filter === undefined ? undefined : compileFilter(filter);
      if (closed) throw new RemoteError('ESHUTDOWN', 'the agent is exiting');
      if (subscriptions.has(port)) throw new RemoteError('EADDRINUSE', `port ${port} is already subscribed`);
      const track = (socket: Socket) => {
        sockets.add(socket);
        socket.once('close', () => sockets.delete(socket));
      };
      const server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (socket) => {
        track(socket);
        if (mode === 'mirror') mirror(socket, port, connection, log, track, matches);
        else if (matches === undefined && stealProbes) steal(socket, port, connection, log);
        else stealRequests(socket, port, connection, log, track, takes(matches, stealProbes), matches === undefined ? 'client' : 'target');
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '0.0.0.0', () => resolve());
      });
      const toPort = (server.address() as { port: number }).port;
      const subscription: Subscription = { port, mode, server, toPort };
      subscriptions.set(port, subscription);
      try {
        await redirect(port, toPort);
      } catch (error) {
        subscriptions.delete(port);
        server.close();
        throw new RemoteError('EIO', `redirecting port ${port}: ${(error as Error).message}`);
      }
      log.info(`${mode} port ${port} (to ${toPort})${matches ? ', HTTP requests that match the filter' : ''}${mode === 'steal' && !stealProbes ? ', probes left to the target' : ''}`);
      if (flush && mode === 'steal') await flushTracked(port, log);
      if (!watching) {
        watching = true;
        // One client per agent: when it is gone, so is every subscription.
        void connection.closed.then(close);
      }
      return {};
    },

    async unsubscribe({ port }) {
      const subscription = subscriptions.get(port);
      if (!subscription) return {};
      subscriptions.delete(port);
      // Connections already accepted go on: their translation lives in conntrack, not in the rule.
      subscription.server.close();
      try {
        await unredirect(port, subscription.toPort);
      } catch (error) {
        throw new RemoteError('EIO', `removing the redirect of port ${port}: ${(error as Error).message}`);
      }
      log.info(`port ${port} no longer ${subscription.mode === 'steal' ? 'stolen' : 'mirrored'}`);
      return {};
    },

    settled: () => queue.then(() => undefined),
    close,
  };
}

function accepted(socket: Socket, port: number, channel: number): Operations['incoming.accepted']['args'] {
  return {
    port,
    channel,
    peer: { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 },
    // REDIRECT rewrote the destination to the receiving interface's address: the address the caller used on a
    // one-address interface, which is what a pod has.
    local: { address: socket.localAddress ?? '', port },
  };
}

/** The caller talks to the client's program only; ends and resets cross both ways. */
function steal(socket: Socket, port: number, connection: Connection, log: Log): void {
  const channel = openClient(socket, port, connection, log);
  socket.on('error', () => channel.destroy());
  channel.on('error', () => socket.resetAndDestroy());
  // A channel dropped without an end (the client connection went away) leaves no caller hanging.
  channel.once('close', () => {
    if (socket.readable || socket.writable) socket.resetAndDestroy();
  });
  socket.pipe(channel);
  channel.pipe(socket);
  socket.resume();
}

/** A new channel to the client's program for this caller; refused, it is destroyed (and whoever uses it sees that). */
function openClient(socket: Socket, port: number, connection: Connection, log: Log): Channel {
  const channel = connection.openChannel();
  connection.request('incoming.accepted', accepted(socket, port, channel.id)).catch((error: Error) => {
    log.debug(`port ${port}: the client refused a connection from ${socket.remoteAddress}:${socket.remotePort}: ${error.message}`);
    channel.destroy();
  });
  return channel;
}

/** The requests a steal takes: those the filter matches (all without one), and probes only when asked. */
function takes(matches: RequestTest | undefined, stealProbes: boolean): (request: RequestHead) => boolean {
  return (request) => (stealProbes || !isProbe(request)) && (matches === undefined || matches(request));
}

/** Request by request: the program answers those `take` says, the target's server the others. */
function stealRequests(socket: Socket, port: number, connection: Connection, log: Log, track: (socket: Socket) => void, take: (request: RequestHead) => boolean, notHttp: 'client' | 'target'): void {
  stealHttp(socket, {
    take,
    openClient: () => {
      const channel = openClient(socket, port, connection, log);
      channel.on('error', () => {});
      return channel;
    },
    openTarget: () => {
      // From inside the namespace this connection leaves through OUTPUT, which has no rule of ours.
      const upstream = connect({ host: socket.localAddress ?? '127.0.0.1', port, noDelay: true, allowHalfOpen: true });
      track(upstream);
      return upstream;
    },
    notHttp,
    firstBytesMs: notHttp === 'target' ? FILTERED_FIRST_BYTES_MS : UNFILTERED_FIRST_BYTES_MS,
    log: (message) => log.debug(`port ${port}, caller ${socket.remoteAddress}:${socket.remotePort}: ${message}`),
  });
  socket.resume();
}

/** The target's server answers the caller as if we were not there; the client gets a copy of what the caller sent. */
function mirror(socket: Socket, port: number, connection: Connection, log: Log, track: (socket: Socket) => void, matches: RequestTest | undefined): void {
  const local = socket.localAddress;
  if (local === undefined) {
    socket.destroy();
    return;
  }
  // From inside the namespace this connection leaves through OUTPUT, which has no rule of ours.
  const upstream = connect({ host: local, port, noDelay: true, allowHalfOpen: true });
  track(upstream);
  let copy: { write(chunk: Buffer): void; end(): void; destroy(): void } | undefined;
  // Whichever side fails resets the other, and ends the copy.
  upstream.on('error', () => {
    socket.resetAndDestroy();
    copy?.destroy();
  });
  socket.on('error', () => {
    upstream.resetAndDestroy();
    copy?.destroy();
  });
  // Until the target's server answers, the caller waits; a caller gone by then ends the attempt.
  const early = () => upstream.destroy();
  socket.once('close', early);
  upstream.once('connect', () => {
    socket.off('close', early);
    const open = () => openClient(socket, port, connection, log);
    const taken = (copy =
      matches === undefined
        ? wholeCopy(open(), port, log)
        : copyHttp({ take: matches, openClient: open, maxBacklog: MIRROR_BACKLOG, log: (message) => log.debug(`port ${port}, caller ${socket.remoteAddress}:${socket.remotePort}: ${message}`) }));
    socket.on('data', (chunk: Buffer) => {
      if (!upstream.write(chunk)) {
        socket.pause();
        upstream.once('drain', () => socket.resume());
      }
      taken.write(chunk);
    });
    socket.on('end', () => {
      upstream.end();
      taken.end();
    });
    // A caller that goes away leaves the parser no half-read request.
    socket.once('close', () => taken.destroy());
    upstream.pipe(socket);
    socket.resume();
  });
}

/** The copy of every byte the caller sends, on one channel; what the client's program answers goes nowhere. */
function wholeCopy(channel: Channel, port: number, log: Log): { write(chunk: Buffer): void; end(): void; destroy(): void } {
  // A reset ends the copy, not the caller's connection.
  channel.on('data', () => {});
  channel.on('error', () => {});
  return {
    write(chunk) {
      if (channel.destroyed) return;
      if (channel.writableLength > MIRROR_BACKLOG) {
        log.warn(`port ${port}: the client fell ${MIRROR_BACKLOG} bytes behind a mirrored connection; its copy is dropped`);
        channel.destroy();
        return;
      }
      channel.write(chunk);
    },
    end() {
      if (!channel.destroyed) channel.end();
    },
    destroy() {
      // An ended copy finishes on its own; only one cut short is dropped.
      if (channel.writableEnded) return;
      channel.destroy();
    },
  };
}

/**
 * mirrord's `agent.flush_connections`: forget the namespace's tracked connections to the port, so a kept-alive
 * one meets the new rule on its next packet and is reset, and its client reconnects into the steal.
 */
function flushTracked(port: number, log: Log): Promise<void> {
  return new Promise((resolve) => {
    execFile('conntrack', ['-D', '-p', 'tcp', '--orig-port-dst', String(port)], { encoding: 'utf8' }, (error, _stdout, stderr) => {
      if ((error as NodeJS.ErrnoException | null)?.code === 'ENOENT') log.info(`conntrack is not installed: connections to port ${port} open before the steal stay with the target`);
      else log.debug(`conntrack -D --orig-port-dst ${port}: ${stderr.trim()}`);
      resolve();
    });
  });
}
