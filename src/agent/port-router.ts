// One subscribed port of the target's network namespace, for every session that subscribed it: the agent that routes
// it holds the listener its redirect points at, and sends each caller connection (or, with HTTP filters or probes to
// keep, each request) to the session that takes it, to the target's server, and as copies to the mirroring sessions.
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Channel } from '../protocol/channel.ts';
import type { Connection } from '../protocol/connection.ts';
import { RemoteError } from '../protocol/errors.ts';
import type { ConcurrentSteal, IncomingMode, Operations } from '../protocol/messages.ts';
import { isProbe, type RequestHead, type RequestTest } from './http-filter.ts';
import { copyHttp, stealHttp, type HttpStealing, type Route } from './incoming-http.ts';
import type { Log } from './log.ts';

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

/** One session's subscription of the port. */
export interface Taker {
  /** The session's id, which is also the key its requests are routed by. */
  readonly session: string;
  /** Who the session is, for the line another session's conflict prints. */
  readonly owner: string;
  readonly mode: IncomingMode;
  /** The HTTP requests it takes; all of them without a filter. */
  readonly matches: RequestTest | undefined;
  readonly stealProbes: boolean;
  /** Where its callers' connections go: its own client, or the agent of another session (a member). */
  readonly connection: Connection;
}

export interface PortRouter {
  /** The listener's port, where the redirect sends the subscribed port's connections. */
  readonly toPort: number;
  /**
   * Adds a session under mirrord's `on_concurrent_steal` rules: a steal collides with another session's when either
   * of them has no filter. `abort` fails with EBUSY naming the other, `continue` adds it without traffic (the result
   * names who has it), `override` takes the traffic from the others, who are told.
   */
  add(taker: Taker, onConcurrentSteal: ConcurrentSteal): { stolenBy?: string };
  /** Removes a session; callers taken request by request for it are ended after their current request. */
  remove(session: string): Promise<void>;
  /** Callers' connections being taken request by request. */
  callers(): number;
  /**
   * Routes for nobody from now on (connections still arriving pass to the target's server, while the redirect is being
   * removed), ends callers taken request by request after their current request, and at most `drainMs` later closes
   * what is left: connections through the agent cannot outlive its chain, which goes next.
   */
  close(drainMs: number): Promise<void>;
  /** Drops every listener and connection at once: for an exiting agent. */
  destroy(): void;
}

export async function createPortRouter(port: number, log: Log): Promise<PortRouter> {
  const takers: Taker[] = [];
  /** Sessions added with `continue`, or overridden: subscribed, but given nothing. */
  const idle = new Set<string>();
  const sockets = new Set<Socket>();
  /** Callers' connections taken request by request, with the sessions they have routed to. */
  const stealing = new Set<{ taken: HttpStealing; routed: Set<string> }>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const active = () => takers.filter((taker) => !idle.has(taker.session));
  /** The active steals in the order requests are offered to them: filtered ones first. Kept for the per-request path. */
  let routing: Taker[] = [];
  const reorder = () => {
    const steals = active().filter((taker) => taker.mode === 'steal');
    routing = [...steals.filter((taker) => taker.matches !== undefined), ...steals.filter((taker) => taker.matches === undefined)];
  };

  const server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (socket) => {
    track(socket);
    const mirrors = active().filter((taker) => taker.mode === 'mirror');
    if (routing.length === 0) return mirror(socket, port, log, track, mirrors);
    const only = routing[0]!;
    if (routing.length === 1 && only.matches === undefined && only.stealProbes && mirrors.length === 0) return steal(socket, port, only, log);
    const taken = stealRequests(socket, port, log, track, () => routing, mirrors);
    stealing.add(taken);
    socket.once('close', () => stealing.delete(taken));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '0.0.0.0', () => resolve());
  });

  const drain = (which: (routed: Set<string>) => boolean) => Promise.all([...stealing].filter(({ routed }) => which(routed)).map(({ taken }) => taken.drain()));

  return {
    toPort: (server.address() as { port: number }).port,

    add(taker, onConcurrentSteal) {
      const others = active().filter((other) => collide(other, taker));
      const holder = others[0];
      if (holder === undefined) {
        takers.push(taker);
        reorder();
        return {};
      }
      if (onConcurrentSteal === 'abort') throw new RemoteError('EBUSY', `port ${port} is already stolen by ${holder.owner}`);
      takers.push(taker);
      if (onConcurrentSteal === 'continue') {
        idle.add(taker.session);
        log.info(`port ${port}: session ${taker.session} goes on without traffic, which ${holder.owner} steals`);
        return { stolenBy: holder.owner };
      }
      for (const other of others) {
        idle.add(other.session);
        log.info(`port ${port}: session ${taker.session} overrides ${other.session}'s steal`);
        other.connection.request('incoming.revoked', { port, why: `${taker.owner} took it over with on_concurrent_steal: override` }).catch((error: Error) => log.debug(`port ${port}: telling session ${other.session} of the override: ${error.message}`));
      }
      reorder();
      void drain((routed) => others.some((other) => routed.has(other.session)));
      return {};
    },

    async remove(session) {
      const index = takers.findIndex((taker) => taker.session === session);
      if (index < 0) return;
      takers.splice(index, 1);
      idle.delete(session);
      reorder();
      await drain((routed) => routed.has(session));
    },

    callers: () => stealing.size,

    async close(drainMs) {
      takers.length = 0;
      routing = [];
      await Promise.race([drain(() => true), new Promise((resolve) => setTimeout(resolve, drainMs).unref())]);
      destroy();
    },

    destroy,
  };

  function destroy(): void {
    server.close();
    takers.length = 0;
    routing = [];
    // A destroyed socket's fd closes at once, so its FIN leaves while the namespace still has our NAT, which turns
    // its source back into the subscribed port. Sent after, it would not reach the caller, and an idle kept-alive
    // connection (the HTTP path keeps them) would stay open at the caller's end.
    for (const socket of sockets) socket.destroy();
  }
}

function collide(a: Taker, b: Taker): boolean {
  return a.mode === 'steal' && b.mode === 'steal' && (a.matches === undefined || b.matches === undefined);
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

/** A new channel to the session's program for this caller; refused, it is destroyed (and whoever uses it sees that). */
function openFor(taker: Taker, socket: Socket, port: number, log: Log): Channel {
  const channel = taker.connection.openChannel();
  taker.connection.request('incoming.accepted', accepted(socket, port, channel.id)).catch((error: Error) => {
    log.debug(`port ${port}: session ${taker.session} refused a connection from ${socket.remoteAddress}:${socket.remotePort}: ${error.message}`);
    channel.destroy();
  });
  return channel;
}

/** A connection to the target's own server, as the caller meant it. */
function openTarget(socket: Socket, port: number, track: (socket: Socket) => void): Socket {
  // From inside the namespace this connection leaves through OUTPUT, which has no rule of ours.
  const upstream = connect({ host: socket.localAddress ?? '127.0.0.1', port, noDelay: true, allowHalfOpen: true });
  track(upstream);
  return upstream;
}

/** The caller talks to the session's program only; ends and resets cross both ways. */
function steal(socket: Socket, port: number, taker: Taker, log: Log): void {
  const channel = openFor(taker, socket, port, log);
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

/**
 * Request by request: each goes to the first steal whose filter matches it (filtered ones before an unfiltered one),
 * probes only to those that take probes, and the rest to the target's server; mirrors get copies of what the caller
 * sent. The steals are looked up at each request, so a kept-alive caller reaches a session that subscribed after it
 * connected; a session that left has its callers ended after their current request (`drain`).
 */
function stealRequests(socket: Socket, port: number, log: Log, track: (socket: Socket) => void, steals: () => readonly Taker[], mirrors: Taker[]): { taken: HttpStealing; routed: Set<string> } {
  const routed = new Set<string>();
  const takers = new Map<string, Taker>();
  const route = (request: RequestHead): Route => {
    const taker = steals().find((one) => (one.stealProbes || !isProbe(request)) && (one.matches === undefined || one.matches(request)));
    if (taker === undefined) return undefined;
    routed.add(taker.session);
    takers.set(taker.session, taker);
    return taker.session;
  };
  const unfiltered = steals().find((taker) => taker.matches === undefined);
  if (unfiltered !== undefined) {
    routed.add(unfiltered.session);
    takers.set(unfiltered.session, unfiltered);
  }
  const copies = mirrors.map((taker) => copyFor(taker, socket, port, log));
  if (copies.length > 0) {
    socket.on('data', (chunk: Buffer) => {
      for (const copy of copies) copy.write(chunk);
    });
    socket.once('end', () => copies.forEach((copy) => copy.end()));
    socket.once('close', () => copies.forEach((copy) => copy.destroy()));
  }
  const taken = stealHttp(socket, {
    route,
    open: (to) => {
      const taker = to === undefined ? undefined : takers.get(to);
      if (taker === undefined) return openTarget(socket, port, track);
      const channel = openFor(taker, socket, port, log);
      channel.on('error', () => {});
      return channel;
    },
    // Not HTTP: an unfiltered steal takes anything; filtered ones only the requests they match.
    notHttp: unfiltered?.session,
    firstBytesMs: unfiltered === undefined ? FILTERED_FIRST_BYTES_MS : UNFILTERED_FIRST_BYTES_MS,
    log: (message) => log.debug(`port ${port}, caller ${socket.remoteAddress}:${socket.remotePort}: ${message}`),
  });
  socket.resume();
  return { taken, routed };
}

interface Copy {
  write(chunk: Buffer): void;
  end(): void;
  destroy(): void;
}

/** A mirroring session's copy of one caller connection: every byte, or the requests its filter matches. */
function copyFor(taker: Taker, socket: Socket, port: number, log: Log): Copy {
  const open = () => openFor(taker, socket, port, log);
  if (taker.matches === undefined) return wholeCopy(open(), port, log);
  return copyHttp({ take: taker.matches, openClient: open, maxBacklog: MIRROR_BACKLOG, log: (message) => log.debug(`port ${port}, caller ${socket.remoteAddress}:${socket.remotePort}, copy for ${taker.session}: ${message}`) });
}

/** The target's server answers the caller as if we were not there; each mirroring session gets its copy. */
function mirror(socket: Socket, port: number, log: Log, track: (socket: Socket) => void, mirrors: Taker[]): void {
  if (socket.localAddress === undefined) {
    socket.destroy();
    return;
  }
  const upstream = openTarget(socket, port, track);
  let copies: Copy[] = [];
  // Whichever side fails resets the other, and ends the copies.
  upstream.on('error', () => {
    socket.resetAndDestroy();
    copies.forEach((copy) => copy.destroy());
  });
  socket.on('error', () => {
    upstream.resetAndDestroy();
    copies.forEach((copy) => copy.destroy());
  });
  // Until the target's server answers, the caller waits; a caller gone by then ends the attempt.
  const early = () => upstream.destroy();
  socket.once('close', early);
  upstream.once('connect', () => {
    socket.off('close', early);
    copies = mirrors.map((taker) => copyFor(taker, socket, port, log));
    socket.on('data', (chunk: Buffer) => {
      if (!upstream.write(chunk)) {
        socket.pause();
        upstream.once('drain', () => socket.resume());
      }
      for (const copy of copies) copy.write(chunk);
    });
    socket.on('end', () => {
      upstream.end();
      copies.forEach((copy) => copy.end());
    });
    // A caller that goes away leaves the parser no half-read request.
    socket.once('close', () => copies.forEach((copy) => copy.destroy()));
    upstream.pipe(socket);
    socket.resume();
  });
}

/** The copy of every byte the caller sends, on one channel; what the session's program answers goes nowhere. */
function wholeCopy(channel: Channel, port: number, log: Log): Copy {
  // A reset ends the copy, not the caller's connection.
  channel.on('data', () => {});
  channel.on('error', () => {});
  return {
    write(chunk) {
      if (channel.destroyed) return;
      if (channel.writableLength > MIRROR_BACKLOG) {
        log.warn(`port ${port}: a session fell ${MIRROR_BACKLOG} bytes behind a mirrored connection; its copy is dropped`);
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
