// Incoming traffic at the agent: subscribes the target's ports the program listens for, and hands each connection the
// agent accepts to the program's own listener, remembering its real caller for the layer's getpeername.
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import { DoppelError } from '../errors.ts';
import { RemoteError } from '../protocol/errors.ts';
import type { ConcurrentSteal, HttpFilter, IncomingMode, SocketAddress } from '../protocol/messages.ts';
import type { AgentClient } from './agent-client.ts';
import type { SockAddr } from './layer-handler.ts';

export interface IncomingDecider {
  /**
   * For a TCP socket the program binds to `address`:`port`: the target's port it takes, and the local port to bind
   * instead (`listen_ports`); undefined keeps it local. Asked by the layer's bind and listen (listeners.ts).
   */
  decide(port: number, address: string): { remotePort: number; localPort?: number } | undefined;
  /**
   * How a subscribed target port is taken, whether a steal first flushes its tracked connections, the HTTP filter
   * that picks the requests it takes (none: all of them), whether Kubernetes probes are taken too, and what a steal
   * does when another session steals the port.
   */
  subscription(remotePort: number): { mode: IncomingMode; flush: boolean; filter?: HttpFilter; stealProbes: boolean; onConcurrentSteal: ConcurrentSteal };
}

/** What the session around the proxy hears of other sessions on the same target. */
export interface IncomingSession {
  /** Names this session in other sessions' conflict lines. */
  owner: string;
  /** A line for the user: the port is someone else's, or was taken over. */
  notice(text: string): void;
  /** The session must end: a steal collided and `on_concurrent_steal` is `abort`. */
  abort(error: DoppelError): void;
}

export interface IncomingRequests {
  /** The program listens on `local` (its real local socket) for the target's `port`: subscribe it remotely. */
  listen(port: number, local: SockAddr): Promise<void>;
  /** The program closed that listening socket. */
  unlisten(port: number): Promise<void>;
  /**
   * For an accepted connection whose peer (as the kernel sees it) is the proxy's loopback socket `localPeerPort`:
   * the real caller and the target-side address it called. Undefined when not one of ours.
   */
  peerOf(localPeerPort: number): { peer: SocketAddress; local: SocketAddress } | undefined;
  /** Whether a port is subscribed, or being given back. */
  holdsPorts(): boolean;
  /**
   * Gives every subscribed port back (waiting for the agents' answers, 2 s at most, so that the session ends with the
   * target as it was found), then drops what is left.
   */
  close(): Promise<void>;
}

/** How long a closing session waits for its agents to give its ports back. */
const CLOSE_WAIT_MS = 2000;

export function createIncomingRequests(agent: AgentClient, policy: IncomingDecider, session: IncomingSession): IncomingRequests {
  /** The program's listener for each subscribed target port. */
  const listeners = new Map<number, SockAddr>();
  /** Our loopback socket's port → who really called. */
  const peers = new Map<number, { peer: SocketAddress; local: SocketAddress }>();
  const open = new Set<{ destroy(): void }>();
  /** Unsubscribes under way: a listen on the same port waits for its own, so the agent sees them in order. */
  const leaving = new Map<number, Promise<void>>();

  agent.serveIncoming({
    async accepted({ port, peer, local, stream }) {
      const listener = listeners.get(port);
      if (!listener) throw new RemoteError('ECONNREFUSED', `the program no longer listens for port ${port}`);
      await handOff(stream, listener, { peer, local });
    },
    revoked({ port, why }) {
      session.notice(`port ${port} no longer brings this session any traffic: ${why}`);
    },
  });

  /** Connects to the program's listener and splices the agent's stream to it; ends and resets cross both ways. */
  async function handOff(stream: Duplex, listener: SockAddr, caller: { peer: SocketAddress; local: SocketAddress }): Promise<void> {
    const socket = connect({ host: loopbackFor(listener), port: listener.port, noDelay: true, allowHalfOpen: true });
    const pair = { destroy: () => { socket.destroy(); stream.destroy(); } };
    open.add(pair);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
    } catch (error) {
      open.delete(pair);
      const code = (error as NodeJS.ErrnoException).code ?? 'ECONNREFUSED';
      throw new RemoteError(code, `connecting to the program's listener ${listener.address}:${listener.port}: ${(error as Error).message}`);
    }
    const localPort = socket.localPort!;
    peers.set(localPort, caller);
    socket.once('close', () => {
      peers.delete(localPort);
      open.delete(pair);
    });
    socket.on('error', () => stream.destroy());
    stream.on('error', () => socket.resetAndDestroy());
    // A stream dropped without an end (the agent connection went away) leaves the program no half-open socket.
    stream.once('close', () => {
      if (socket.readable || socket.writable) socket.resetAndDestroy();
    });
    socket.pipe(stream);
    stream.pipe(socket);
  }

  return {
    async listen(port, local) {
      await leaving.get(port);
      const { filter, ...how } = policy.subscription(port);
      listeners.set(port, local);
      try {
        const { stolenBy } = await agent.subscribeIncoming({ port, ...how, ...(filter === undefined ? {} : { filter }), owner: session.owner });
        if (stolenBy !== undefined) session.notice(`port ${port} is stolen by ${stolenBy}: this session goes on without its traffic (on_concurrent_steal: continue)`);
      } catch (error) {
        if (listeners.get(port) === local) listeners.delete(port);
        if (error instanceof RemoteError && error.code === 'EBUSY') {
          session.abort(
            new DoppelError('E_INCOMING_CONFLICT', `${error.message}; the program was stopped`, {
              category: 'target',
              hint: 'steal only some requests (feature.network.incoming.http_filter), or set feature.network.incoming.on_concurrent_steal to "continue" or "override"',
            }),
          );
        }
        throw error;
      }
    },

    async unlisten(port) {
      if (!listeners.delete(port)) return;
      const done = agent.unsubscribeIncoming(port);
      leaving.set(port, done.catch(() => undefined));
      try {
        await done;
      } finally {
        leaving.delete(port);
      }
    },

    peerOf: (localPeerPort) => peers.get(localPeerPort),

    holdsPorts: () => listeners.size > 0 || leaving.size > 0,

    async close() {
      const giving = [...leaving.values(), ...[...listeners.keys()].map((port) => agent.unsubscribeIncoming(port).catch(() => undefined))];
      listeners.clear();
      await Promise.race([Promise.all(giving), new Promise((resolve) => setTimeout(resolve, CLOSE_WAIT_MS).unref())]);
      agent.serveIncoming(undefined);
      for (const item of open) item.destroy();
      open.clear();
      peers.clear();
    },
  };
}

/** A listener on every address is reached on loopback. */
function loopbackFor(listener: SockAddr): string {
  if (listener.address === '0.0.0.0') return '127.0.0.1';
  if (listener.address === '::') return '::1';
  return listener.address;
}
