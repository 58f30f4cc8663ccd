// One session's incoming traffic. Each subscribed port of the target's network namespace is routed by one agent, of
// whichever session subscribed it first: that agent holds the port's rendezvous name, redirects the port to its router
// (iptables, in a chain of its own session) and routes for every session; the agents of later sessions join it as
// members and relay what it routes to them to their own clients. When the routing session leaves, a member takes over.
import { execFile } from 'node:child_process';
import type { Server, Socket } from 'node:net';
import { Connection, type RequestHandler } from '../protocol/connection.ts';
import { RemoteError } from '../protocol/errors.ts';
import type { Operations } from '../protocol/messages.ts';
import { forgetChain, netnsOf, noteChain } from './chain-notes.ts';
import { compileFilter } from './http-filter.ts';
import { addRedirect, chainName, createChain, deleteRedirect, detectBackend, removeChain, removeChainSync, type Backend } from './iptables.ts';
import type { Log } from './log.ts';
import { holdRendezvous, reachRendezvous } from './port-rendezvous.ts';
import { createPortRouter, type PortRouter, type Taker } from './port-router.ts';

type Subscribe = Operations['incoming.subscribe'];
type Unsubscribe = Operations['incoming.unsubscribe'];

/** How long an unsubscribe waits for requests under way on callers' connections before the chain goes. */
const DRAIN_MS = 2000;
/** How much of that an unsubscribe's answer waits: long enough for idle callers' connections to close. */
const FOREGROUND_DRAIN_MS = 300;
/** Joining a port's router is local and quick; a holder that does not answer in this time is gone. */
const JOIN_TIMEOUT_MS = 5000;
/** Tries at holding or joining a port whose holder is leaving at the same moment. */
const CLAIM_TRIES = 20;

export interface Incoming {
  subscribe(args: Subscribe['args'], client: Connection): Promise<Subscribe['result']>;
  unsubscribe(args: Unsubscribe['args']): Promise<Unsubscribe['result']>;
  /** Settles when no rule change is under way: an exiting agent waits for it, so that close() sees every rule. */
  settled(): Promise<void>;
  /** Removes every rule and chain, then drops listeners and connections; synchronous, so an exit handler can call it. */
  close(): void;
}

/** This agent routes the port, for its own session and its members. */
interface Routing {
  kind: 'router';
  router: PortRouter;
  rendezvous: Server;
  members: Set<Connection>;
}

/** Another session's agent routes the port; this one relays what it is given. */
interface Joined {
  kind: 'member';
  link: Connection;
}

interface Subscription {
  args: Subscribe['args'];
  client: Connection;
  /** This session as the port's router, if it routes, takes it (its filter compiled once). */
  taker: Taker;
  role?: Routing | Joined;
}

/** `notes`: the process platform's agent notes its chain for the sweeps of dead sessions' chains (chain-notes.ts). */
export function createIncoming(options: { session: string; software: string; log: Log; notes?: boolean }): Incoming {
  const { session, software, log } = options;
  const chain = chainName(session);
  const netns = options.notes ? netnsOf('self') : undefined;
  const forget = () => {
    if (netns !== undefined) forgetChain(netns, chain);
  };
  const subscriptions = new Map<number, Subscription>();
  let backend: Promise<Backend> | undefined;
  /** Whether our chain (and the jump to it) exists; set before the first command that makes it. */
  let chainMade: Backend | undefined;
  // Rule changes run one at a time, so a chain is never made twice or removed under a rule being added.
  let queue: Promise<unknown> = Promise.resolve();
  let closed = false;
  const watched = new WeakSet<Connection>();
  /** Keys of the members this agent routes for, unique across its ports. */
  let members = 0;
  const serialized = <T>(work: () => Promise<T>): Promise<T> => {
    const next = queue.then(work);
    queue = next.catch(() => undefined);
    return next;
  };
  const routing = () => [...subscriptions.values()].some((subscription) => subscription.role?.kind === 'router');

  const redirect = (port: number, toPort: number) =>
    serialized(async () => {
      backend ??= detectBackend([]);
      const which = await backend;
      if (chainMade === undefined) {
        // Noted first: a chain no note names would outlive this session if it were killed.
        if (netns !== undefined) noteChain(netns, chain);
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
      if (chainMade !== undefined) await deleteRedirect([], chainMade, chain, port, toPort);
    });

  /** The chain goes when this agent routes no port any more (later, if it routes one again meanwhile). */
  const removeChainIfUnused = () =>
    serialized(async () => {
      const made = chainMade;
      if (made === undefined || routing()) return;
      // Forgotten only once gone, so that a failure here still leaves it to close().
      await removeChain([], made, chain);
      forget();
      if (chainMade === undefined) return;
      log.info(`${made}: chain ${chain} removed`);
      chainMade = undefined;
    });

  /** Routes the port if no agent does, else joins the one that does; a holder leaving meanwhile means trying again. */
  async function claim(port: number, subscription: Subscription): Promise<Subscribe['result']> {
    for (let attempt = 0; attempt < CLAIM_TRIES; attempt++) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 10 * attempt));
      const rendezvous = await holdRendezvous(port, (socket) => admit(port, socket));
      if (rendezvous) return route(port, subscription, rendezvous);
      const socket = await reachRendezvous(port);
      // A holder dying just now may still take the connection, and then drops it during the handshake.
      const link = socket && (await Connection.open(socket, { role: 'client', software, handshakeTimeoutMs: JOIN_TIMEOUT_MS, onRequest: relay(port, subscription.client) }).catch(() => undefined));
      if (link) return join(port, subscription, link);
    }
    throw new RemoteError('EAGAIN', `port ${port}: the agents of other sessions on this target kept changing; try again`);
  }

  async function route(port: number, subscription: Subscription, rendezvous: Server): Promise<Subscribe['result']> {
    const router = await createPortRouter(port, log);
    const role: Routing = { kind: 'router', router, rendezvous, members: new Set() };
    subscription.role = role;
    router.add(subscription.taker, 'abort');
    try {
      await redirect(port, router.toPort);
    } catch (error) {
      subscription.role = undefined;
      rendezvous.close();
      router.destroy();
      throw new RemoteError('EIO', `redirecting port ${port}: ${(error as Error).message}`);
    }
    log.info(`${subscription.args.mode} port ${port} (to ${router.toPort}), routing for every session on it${subscription.args.filter ? ', HTTP requests that match the filter' : ''}`);
    return {};
  }

  /** Another session's agent joins the port this one routes. */
  function admit(port: number, socket: Socket): void {
    const serve: RequestHandler = async (op, args, link) => {
      const role = subscriptions.get(port)?.role;
      if (op !== 'incoming.subscribe') throw new RemoteError('ENOSYS', `${op} is not asked of a port's router`);
      if (role?.kind !== 'router') throw new RemoteError('ECONNREFUSED', `this agent no longer routes port ${port}`);
      const member = args as Subscribe['args'];
      const key = `${session}.${members++}`;
      const result = role.router.add(takerOf(key, member, link), member.onConcurrentSteal ?? 'abort');
      role.members.add(link);
      void link.closed.then(() => {
        role.members.delete(link);
        void role.router.remove(key);
        log.info(`port ${port}: ${member.owner ?? `session ${key}`} left`);
      });
      log.info(`port ${port}: ${member.owner ?? `session ${key}`} joined (${member.mode}${member.filter ? ', filtered' : ''})`);
      return result;
    };
    Connection.open(socket, { role: 'agent', software, handshakeTimeoutMs: JOIN_TIMEOUT_MS, onRequest: serve }).catch((error: Error) => {
      log.debug(`port ${port}: an agent could not join: ${error.message}`);
      socket.destroy();
    });
  }

  async function join(port: number, subscription: Subscription, link: Connection): Promise<Subscribe['result']> {
    subscription.role = { kind: 'member', link };
    let result: Subscribe['result'];
    try {
      result = await link.request('incoming.subscribe', subscription.args);
    } catch (error) {
      subscription.role = undefined;
      link.close();
      throw error;
    }
    log.info(`${subscription.args.mode} port ${port}, routed by another session's agent`);
    // Its session left (or its agent died): the port needs a new router, which may be us.
    void link.closed.then(() => {
      if (closed || subscriptions.get(port) !== subscription || subscription.role?.kind !== 'member' || subscription.role.link !== link) return;
      subscription.role = undefined;
      claim(port, subscription).then(
        () => log.info(`port ${port}: the session routing it left; claimed again`),
        (error: Error) => {
          log.warn(`port ${port}: lost when the session routing it left: ${error.message}`);
          subscription.client.request('incoming.revoked', { port, why: `the session routing it left, and taking it over failed: ${error.message}` }).catch(() => {});
        },
      );
    });
    return result;
  }

  const close = () => {
    if (closed) return;
    closed = true;
    // Connections first: see PortRouter.destroy.
    for (const { role } of subscriptions.values()) {
      if (role?.kind === 'router') {
        role.rendezvous.close();
        for (const member of role.members) member.close();
        role.router.destroy();
      } else role?.link.close();
    }
    subscriptions.clear();
    if (chainMade !== undefined) {
      const failures = removeChainSync([], chainMade, chain);
      for (const failure of failures) log.warn(`leaving the namespace: ${failure}`);
      if (failures.length === 0) {
        forget();
        log.info(`${chainMade}: chain ${chain} removed`);
      }
      chainMade = undefined;
    }
  };

  return {
    async subscribe(args, client) {
      const { port, mode, flush } = args;
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RemoteError('EINVAL', `not a TCP port: ${port}`);
      if (mode !== 'steal' && mode !== 'mirror') throw new RemoteError('EINVAL', `unknown incoming mode "${mode}"`);
      // Compiling the filter checks it, before anything is claimed.
      const taker = takerOf(session, args, client);
      if (closed) throw new RemoteError('ESHUTDOWN', 'the agent is exiting');
      if (subscriptions.has(port)) throw new RemoteError('EADDRINUSE', `port ${port} is already subscribed`);
      const subscription: Subscription = { args, client, taker };
      subscriptions.set(port, subscription);
      let result: Subscribe['result'];
      try {
        result = await claim(port, subscription);
      } catch (error) {
        subscriptions.delete(port);
        throw error;
      }
      if (flush && mode === 'steal' && result.stolenBy === undefined) await flushTracked(port, log);
      if (!watched.has(client)) {
        watched.add(client);
        // One client per agent: when it is gone, so is every subscription.
        void client.closed.then(close);
      }
      return result;
    },

    async unsubscribe({ port }) {
      const subscription = subscriptions.get(port);
      if (!subscription) return {};
      subscriptions.delete(port);
      const role = subscription.role;
      if (role?.kind === 'member') role.link.close();
      if (role?.kind !== 'router') return {};
      // The members take the port over as soon as their links end; until our rule goes, connections still reach our
      // router, which, routing for nobody now, passes them to the target's server.
      role.rendezvous.close();
      for (const member of role.members) member.close();
      const drained = role.router.close(DRAIN_MS);
      try {
        await unredirect(port, role.router.toPort);
      } catch (error) {
        throw new RemoteError('EIO', `removing the redirect of port ${port}: ${(error as Error).message}`);
      }
      // Connections already accepted go on while the chain exists (see createChain), so callers taken request by
      // request are ended after their current request and the chain goes once they are, DRAIN_MS at most. Idle ones
      // end at once, and this answer waits for them; one still being answered is left to finish in the background,
      // since the program's listener may be closing inside the very request being answered.
      const removal = drained.then(removeChainIfUnused);
      const done = await Promise.race([removal.then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), FOREGROUND_DRAIN_MS))]).catch((error: Error) => {
        throw new RemoteError('EIO', `removing chain ${chain}: ${error.message}`);
      });
      // An exiting agent may remove the chain meanwhile.
      if (!done) removal.catch((error: Error) => closed || log.warn(`removing chain ${chain}: ${error.message}`));
      log.info(`port ${port} no longer ${subscription.args.mode === 'steal' ? 'stolen' : 'mirrored'}`);
      return {};
    },

    settled: () => queue.then(() => undefined),
    close,
  };
}

function takerOf(session: string, args: Subscribe['args'], connection: Connection): Taker {
  return {
    session,
    owner: args.owner ?? `session ${session}`,
    mode: args.mode,
    matches: args.filter === undefined ? undefined : compileFilter(args.filter),
    stealProbes: args.stealProbes ?? false,
    connection,
  };
}

/** A member's side of its router's link: what the router routes to this session goes on to its own client. */
function relay(port: number, client: Connection): RequestHandler {
  return async (op, args, link) => {
    if (op === 'incoming.revoked') {
      await client.request('incoming.revoked', args as Operations['incoming.revoked']['args']);
      return {};
    }
    if (op !== 'incoming.accepted') throw new RemoteError('ENOSYS', `${op} is not asked of a port's member`);
    const accepted = args as Operations['incoming.accepted']['args'];
    // Attached before anything is awaited: the caller's bytes follow this request at once.
    const fromRouter = link.attachChannel(accepted.channel);
    const toClient = client.openChannel();
    // Resets, and a side dropped without an end, cross to the other.
    for (const [one, other] of [[fromRouter, toClient], [toClient, fromRouter]] as const) {
      one.on('error', () => other.destroy());
      one.once('close', () => {
        if (other.readable || other.writable) other.destroy();
      });
    }
    fromRouter.pipe(toClient);
    toClient.pipe(fromRouter);
    try {
      await client.request('incoming.accepted', { ...accepted, port, channel: toClient.id });
    } catch (error) {
      fromRouter.destroy();
      toClient.destroy();
      throw error;
    }
    return {};
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
