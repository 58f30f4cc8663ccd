// Outgoing TCP from the layer. On a process target the layer makes the socket in the target's network namespace and
// connects it itself; otherwise the agent connects from the target's network, then either hands its socket itself to
// the program (process platform, a program that may not enter the namespace: the layer takes it with pidfd_getfd) or
// relays it through a one-shot loopback listener.
import dns from 'node:dns';
import { connect as connectSocket, createServer, isIPv4, type Server, type Socket } from 'node:net';
import { PassThrough, type Duplex } from 'node:stream';
import type { Destination, OutgoingPolicy } from '../config/network-policy.ts';
import type { AgentClient } from './agent-client.ts';
import { errorAnswer } from './answer.ts';
import type { Answer, ConnectingSocket, Connected, LayerHandler, SockAddr } from './layer-handler.ts';
import { normalAddress, type ResolvedNames } from './resolved-names.ts';
import type { Route } from './route.ts';

export type OutgoingDecider = OutgoingPolicy;

export interface OutgoingOptions {
  /** The names the program's lookups gave addresses. */
  names: ResolvedNames;
  /** Tells the user something once (a name kept local that does not resolve here). */
  notice(text: string): void;
  /** Which way a destination goes: the policy's decision, except that the target's resolvers follow the DNS switch. */
  route: Route;
}

const SOCK_STREAM = 1;
/** Whether the program's own socket (or one of its family) can reach the destination: an IPv4 one reaches no IPv6 address. */
const reaches = (socket: ConnectingSocket, target: SockAddr) => !(socket.family === 4 && target.family === 6);
/** How long a relayed connection waits for the layer to connect to its loopback listener. */
const HANDOFF_TIMEOUT_MS = 10_000;

export interface OutgoingRequests extends Pick<LayerHandler, 'connect' | 'handedOver'> {
  /** The names a destination goes by, for the filter: those the program resolved to it, and the filter's own that resolve to it. */
  namesOf(address: string): Promise<string[]>;
  /** See `primeHandOff`. */
  prime(): Promise<void>;
  close(): void;
}

export function createOutgoingRequests(agent: AgentClient, policy: OutgoingDecider, { names, notice, route }: OutgoingOptions): OutgoingRequests {
  const open = new Set<{ destroy(): void }>();
  const told = new Set<string>();
  /** What a filter name resolves to where mirrord resolves it; nothing when it does not resolve. */
  const resolveFilterName = async (name: string, at: 'remote' | 'local'): Promise<string[]> => {
    try {
      const found = at === 'remote' ? (await agent.lookup(name, 0)).addresses : await dns.promises.lookup(name, { all: true });
      return found.map(({ address }) => normalAddress(address));
    } catch {
      return [];
    }
  };
  /** The names a destination goes by: those the program resolved to it, and the filter's names that resolve to it. */
  const namesOf = async (address: string): Promise<string[]> => {
    const known = names.namesOf(address);
    const filter = policy.filterNames;
    if (!filter) return known;
    const wanted = normalAddress(address);
    const resolved = await Promise.all(filter.names.filter((name) => !known.includes(name)).map(async (name) => ((await resolveFilterName(name, filter.resolveAt)).includes(wanted) ? [name] : [])));
    return [...known, ...resolved.flat()];
  };
  /**
   * A connection the filter keeps local to an address the target's DNS gave goes where its name resolves here, as in
   * mirrord: the program asked for the name, and the address is the target's.
   */
  const localAnswer = async (target: Destination): Promise<Answer<never>> => {
    const name = policy.redirectsLocal(target) ? names.remoteNameOf(target.address) : undefined;
    if (name === undefined) return { kind: 'local' };
    const found = await dns.promises.lookup(name, { family: isIPv4(normalAddress(target.address)) ? 4 : 0 }).catch(() => undefined);
    if (found) return { kind: 'local', address: { family: found.family === 6 ? 6 : 4, address: found.address, port: target.port } };
    if (!told.has(name)) {
      told.add(name);
      notice(`${name} is kept local by feature.network.outgoing.filter, but it does not resolve on this machine: connections to it fail until it does (for example, a line in /etc/hosts)`);
    }
    return { kind: 'error', code: 'EHOSTUNREACH' };
  };
  /**
   * The agent's own socket for the program, when the agent hands sockets over and the layer can take this one: an IPv4
   * socket to an IPv4 destination, an IPv6 socket to an IPv6 one or (as the agent's IPv6 socket to the IPv4-mapped
   * address) to an IPv4 one. Undefined means relay: that includes an agent whose namespace has no IPv6 for the last.
   */
  const handOver = async (target: SockAddr, socket: ConnectingSocket): Promise<Answer<Connected> | undefined> => {
    if (!socket.takesFd || !reaches(socket, target)) return undefined;
    await agent.connected;
    if (agent.handoverPid() === undefined) return undefined;
    const host = socket.family === 6 && target.family === 4 ? `::ffff:${target.address}` : target.address;
    try {
      return { kind: 'remote', value: { handover: await agent.connectTcpFd(host, target.port) } };
    } catch (error) {
      if ((error as { code?: unknown }).code === 'EAFNOSUPPORT') return undefined;
      return errorAnswer(error, 'ECONNREFUSED');
    }
  };
  return {
    async connect(socktype, target, socket) {
      if (socktype !== SOCK_STREAM) return { kind: 'local' };
      const destination: Destination = { address: target.address, port: target.port, protocol: 'tcp', hostnames: await namesOf(target.address) };
      if ((await route(destination)) === 'local') return localAnswer(destination);
      // The target's network is on this machine: the layer makes the socket there and connects it itself.
      const there = socket.makesSocket && reaches(socket, target) ? agent.localTarget?.() : undefined;
      if (there) return { kind: 'remote', value: { makeSocketIn: there.pid } };
      const handedOver = await handOver(target, socket);
      if (handedOver) return handedOver;
      let relayed: Awaited<ReturnType<AgentClient['connectTcp']>>;
      try {
        relayed = await agent.connectTcp(target.address, target.port);
      } catch (error) {
        return errorAnswer(error, 'ECONNREFUSED');
      }
      const via = await handOff(relayed.stream, open);
      const local: SockAddr = { family: relayed.localAddress.includes(':') ? 6 : 4, address: relayed.localAddress, port: relayed.localPort };
      return { kind: 'remote', value: { via, local } };
    },
    async handedOver(token) {
      agent.releaseFd(token);
      return { kind: 'remote', value: undefined };
    },
    namesOf,
    prime: () => primeHandOff(open),
    close() {
      for (const item of open) item.destroy();
      open.clear();
    },
  };
}

/**
 * One hand-off over loopback, spliced to an echo instead of a relayed stream, left as a finished connection leaves it:
 * the first listen, accept and splice of a process run 10-25 ms of Node's own cold code (the listen's address lookup
 * compiles its IPv6 expression...), which the program's first relayed connection would otherwise wait for.
 */
export async function primeHandOff(open: Set<{ destroy(): void }>): Promise<void> {
  const { port } = await handOff(new PassThrough(), open);
  await new Promise<void>((resolve) => {
    const socket = connectSocket({ host: '127.0.0.1', port, noDelay: true }, () => socket.end('.'));
    socket.on('error', () => resolve());
    socket.on('close', () => resolve());
    socket.resume();
  });
}

/** Listens once on loopback; the first connection is spliced to the relayed stream. */
async function handOff(stream: Duplex, open: Set<{ destroy(): void }>): Promise<SockAddr> {
  const server = await listenOnce(stream, open, (listening) => listening.listen(0, '127.0.0.1'));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('loopback listener has no port');
  return { family: 4, address: '127.0.0.1', port: address.port };
}

/**
 * A server that takes one connection and splices it to the relayed stream, closing at once (or, with none in 10 s,
 * ending the stream); `listen` starts it where the layer will connect.
 */
export async function listenOnce(stream: Duplex, open: Set<{ destroy(): void }>, listen: (server: Server) => void): Promise<Server> {
  // Half-open both ways: a program that shuts down its sending side still reads the answer.
  const server = createServer({ noDelay: true, allowHalfOpen: true });
  const tracked = { destroy: () => { server.close(); stream.destroy(); } };
  open.add(tracked);
  const timer = setTimeout(() => tracked.destroy(), HANDOFF_TIMEOUT_MS);
  server.once('connection', (socket: Socket) => {
    clearTimeout(timer);
    server.close();
    open.delete(tracked);
    const pair = { destroy: () => { socket.destroy(); stream.destroy(); } };
    open.add(pair);
    splice(socket, stream, () => open.delete(pair));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.once('listening', () => resolve());
    listen(server);
  });
  return server;
}

/**
 * Pipes two streams into each other, an end carried over as an end; an error, or either one gone before both its
 * directions ended (a reset, a lost agent), destroys both; `done` once both closed. Plain `pipe`: `pipeline` made an
 * AbortError, stack trace and all, for every connection it finished (about a tenth of the proxy's time per relayed
 * connection, measured with --cpu-prof).
 */
function splice(a: Duplex, b: Duplex, done: () => void): void {
  let closed = 0;
  const fail = () => {
    a.destroy();
    b.destroy();
  };
  for (const stream of [a, b]) {
    stream.on('error', fail);
    stream.once('close', () => {
      if (!(stream.readableEnded && stream.writableFinished)) fail();
      if (++closed === 2) done();
    });
  }
  a.pipe(b);
  b.pipe(a);
}
