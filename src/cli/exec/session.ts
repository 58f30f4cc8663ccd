// A session owns all of its agents: the primary serves env, files, DNS and outgoing; every agent serves incoming.
// When the primary is lost another takes over; when the last one is lost, the session ends with one clear error.
import { DoppelError } from '../../errors.ts';
import { trace } from '../../trace.ts';
import { lastWord, type AgentTransport } from '../../platform/agent-transport.ts';
import type { Platform, StepReporter } from '../../platform/platform.ts';
import { connectAgent, type AgentClient, type AgentClientOptions, type IncomingHandler } from '../../proxy/agent-client.ts';
import { localFileCalls, type FileCalls } from '../../proxy/local-files.ts';
import { sameMachineTarget, stillRuns, type LocalTarget } from '../../platform/local-target.ts';

export interface SessionOptions {
  handshakeTimeoutMs: number;
  /** Every request's deadline (agent.communication_timeout). */
  communicationTimeoutMs: number;
  /** `--trace`: told of each request to an agent as it goes out. */
  onCall?: AgentClientOptions['onCall'];
}

export interface Session {
  /**
   * Requests go to the current primary agent, whichever it is at the time of the call. Before the first handshakes are
   * done (see `startSession`), a request waits for them.
   */
  readonly agent: AgentClient;
  /** Settles once every first agent has answered its handshake; rejects as the session is lost (see `lost`). */
  readonly ready: Promise<void>;
  /** How many agents the session holds now. */
  size(): number;
  /** Settles with the error that ends the session: its last agent was lost, or its first ones failed their handshake. */
  readonly lost: Promise<DoppelError>;
  /** Ends the session; agents that can stay warm are parked for the next one unless `park` is false. Says if any was. */
  close(options?: { park?: boolean }): Promise<boolean>;
}

interface Member {
  transport: AgentTransport;
  client: AgentClient;
  /** Its replica's process, where this machine reaches it itself (a pod on this node), and the proxy's reads of it. */
  local: { target: LocalTarget; files: FileCalls } | undefined;
  /** The platform said its replica left, so its end is no surprise. */
  leaving: boolean;
}

/** How long a broken link waits for its agent's exit to say why. */
const EXIT_GRACE_MS = 250;
/**
 * How long the end of one replica's agent waits for the platform to say the replica left: its pod going away often
 * ends the agent a moment before the watch reports it, and one line then says what happened.
 */
const LEFT_GRACE_MS = 2000;

/** Starts the session's agents and waits for their handshakes, saying so on a slow start. */
export async function openSession(platform: Platform, options: SessionOptions, progress: StepReporter): Promise<Session> {
  const { session, agents } = await startSession(platform, options, progress);
  await progress.step(agents === 1 ? 'connecting to the agent' : `connecting to ${agents} agents`, () => session.ready);
  return session;
}

/**
 * Starts the session's agents and returns before their handshakes: what needs no agent (a program whose environment
 * the platform reads itself) goes on meanwhile, with no progress line to mix with its output. A failed handshake
 * stops the platform and ends the session (`lost`).
 */
export async function startSession(platform: Platform, options: SessionOptions, progress: StepReporter): Promise<{ session: Session; agents: number }> {
  const transports = await platform.start(progress);
  const members: Member[] = [];
  let closing = false;
  let endSession: (error: DoppelError) => void = () => {};
  const lost = new Promise<DoppelError>((resolve) => (endSession = resolve));

  // Incoming traffic arrives at every replica: the handler and the subscriptions go to every agent, joiners included.
  let incomingHandler: IncomingHandler | undefined;
  const subscriptions = new Map<number, Parameters<AgentClient['subscribeIncoming']>[0]>();

  const join = async (transport: AgentTransport) => {
    const client = await handshake(transport, options);
    transport.afterHandshake?.(client.connection);
    const target = platform.local ? undefined : sameMachineTarget(client.connection.peer.target);
    const local = target && { target, files: localFileCalls(target, (path) => client.fetch(path), options.onCall) };
    if (target) trace(`${transport.description}: its target is process ${target.pid} of this machine, whose files and network the program reaches itself`);
    const member: Member = { transport, client, local, leaving: false };
    members.push(member);
    if (incomingHandler) client.serveIncoming(incomingHandler);
    // A replica that joins later is given the ports already taken. The first agents are not: a subscription made
    // before their handshakes (a program listening at once) reaches each of them from `everyAgent`, once.
    if (connected) for (const args of subscriptions.values()) {
      client.subscribeIncoming(args).catch((error: Error) => progress.warn(`${transport.description} does not take port ${args.port}'s traffic: ${error.message}`));
    }
    // A link that stalls ends the connection while the transport may still look open. A link broken by the agent's
    // death (EPIPE, a reset) is said as that death when its exit is known within a moment.
    const stalled = client.connection.closed.then((error) =>
      error ? Promise.race([transport.exited, new Promise<string>((resolve) => setTimeout(() => resolve(`stopped answering (${error.message})`), EXIT_GRACE_MS).unref())]) : transport.exited,
    );
    void Promise.race([transport.exited, stalled]).then((how) => onExit(member, how));
  };
  /** Agents that ended while their replica was still in the target: told as an end unless it leaves in LEFT_GRACE_MS. */
  const unexplained = new Map<AgentTransport, { next: string | undefined; tell(): void; timer: NodeJS.Timeout }>();
  const onExit = async (member: Member, how: string) => {
    const index = members.indexOf(member);
    if (index < 0 || closing) return;
    members.splice(index, 1);
    member.client.close();
    if (members.length === 0) {
      endSession(await agentLost(member.transport, how));
    } else if (!member.leaving) {
      const next = index === 0 ? members[0]!.transport.description : undefined;
      const tell = () => {
        unexplained.delete(member.transport);
        progress.warn(`the agent in ${member.transport.description} ${how}; ${next ? `${next} serves the session now` : 'the session goes on without it'}`);
      };
      unexplained.set(member.transport, { next, tell, timer: setTimeout(tell, LEFT_GRACE_MS).unref() });
    }
  };

  const follow = () =>
    platform.follow({
      joined: (transport) => {
        join(transport).then(
          () => progress.warn(`${transport.description} joined the session`),
          (error: Error) => {
            progress.warn(`${transport.description} became ready but its agent did not answer: ${error.message}`);
            void transport.stop();
          },
        );
      },
      left: (transport, why) => {
        const ended = unexplained.get(transport);
        if (ended) {
          clearTimeout(ended.timer);
          unexplained.delete(transport);
        }
        const member = members.find((m) => m.transport === transport);
        if (member) member.leaving = true;
        const next = ended ? ended.next : member === members[0] ? members.find((m) => !m.leaving)?.transport.description : undefined;
        progress.warn(`${transport.description} left the session: ${why}${next ? `; ${next} serves the session now` : ''}`);
      },
      failed: (description, error) => progress.warn(`${description} became ready but its agent could not start: ${error.message}`),
    });

  let connected = false;
  let following: { stop(): void } | undefined;
  const ready = Promise.all(transports.map(join)).then(
    () => {
      trace('handshake done');
      // The platform's first agent is the primary, whichever answered first.
      members.sort((a, b) => transports.indexOf(a.transport) - transports.indexOf(b.transport));
      connected = true;
      following = follow();
    },
    async (error: unknown) => {
      closing = true;
      // A program already running is stopped while the platform stops.
      endSession(error as DoppelError);
      for (const member of members) member.client.close();
      await platform.stop();
      throw error;
    },
  );
  ready.catch(() => undefined);

  // A replica that is leaving still answers until its agent ends, but it will not for long.
  const primaryMember = (): Member | undefined => members.find((m) => !m.leaving) ?? members[0];
  const primary = () => {
    const member = primaryMember();
    if (!member) throw new DoppelError('E_AGENT_LOST', 'the session has no agent left', { category: 'agent' });
    return member.client;
  };
  /** Runs `call` on every agent and returns the primary's answer; the primary's failure is the caller's, another's a warning. */
  const everyAgent = async <T>(what: string, call: (client: AgentClient) => Promise<T>): Promise<T> => {
    if (!connected) await ready;
    const first = primary();
    const index = members.findIndex(({ client }) => client === first);
    const answers = await Promise.all(
      members.map(({ client, transport }) =>
        call(client).catch((error: Error) => {
          if (client === first) throw error;
          progress.warn(`${transport.description} could not ${what}: ${error.message}`);
          return undefined;
        }),
      ),
    );
    return answers[index] as T;
  };
  const incoming: Pick<AgentClient, 'serveIncoming' | 'subscribeIncoming' | 'unsubscribeIncoming'> = {
    serveIncoming(handler) {
      incomingHandler = handler;
      for (const { client } of members) client.serveIncoming(handler);
    },
    subscribeIncoming(args) {
      subscriptions.set(args.port, args);
      return everyAgent(`take port ${args.port}'s traffic`, (client) => client.subscribeIncoming(args));
    },
    async unsubscribeIncoming(port) {
      subscriptions.delete(port);
      await everyAgent(`give port ${port} back`, (client) => client.unsubscribeIncoming(port));
    },
  };
  // Before the handshakes, a request waits for them (and fails as they did); the agent's pid is the platform's to tell
  // (the proxy's rules need it before the program starts), and what reads the link itself awaits `connected` first.
  const beforeHandshake = (key: keyof AgentClient): unknown => {
    if (key === 'connected') return ready;
    if (key === 'handoverPid') return () => transports[0]?.handoverPid;
    if (key === 'connection' || key === 'openUdp' || key === 'close') throw new Error(`internal error: the session's agent was asked for ${key} before its handshake`);
    return (...args: unknown[]) => ready.then(() => (primary()[key] as (...a: unknown[]) => unknown)(...args));
  };
  const onPrimary = (key: keyof AgentClient): unknown => (connected ? primary()[key] : beforeHandshake(key));
  // What the platform can serve itself (a local process target's files and sockets) goes no further, and needs no
  // agent yet. A primary whose replica runs on this machine serves them too, while that replica's process runs. What
  // only the session serves is here either way, absent or not: never asked of an agent.
  const platformFiles = platform.local && localFileCalls(platform.local, (path) => (onPrimary('fetch') as AgentClient['fetch'])(path), options.onCall);
  const primaryLocal = () => {
    const local = connected ? primaryMember()?.local : undefined;
    return local && stillRuns(local.target) ? local : undefined;
  };
  const here: Partial<AgentClient> = { localTarget: () => platform.local ?? primaryLocal()?.target };
  const files = (key: keyof FileCalls) => platformFiles?.[key] ?? primaryLocal()?.files[key];
  // Everything else is looked up on the primary at call time, so a takeover needs no re-wiring.
  const agent = new Proxy({} as AgentClient, {
    get: (_, key) => {
      if (key in incoming) return incoming[key as keyof typeof incoming];
      if (key in here) return here[key as keyof AgentClient];
      // A target's file by its path on this machine is for a target this machine reaches: never the agent's to answer.
      if (key === 'hostFile') return files(key);
      return (FILE_CALLS.has(key) && files(key as keyof FileCalls)) || onPrimary(key as keyof AgentClient);
    },
  });

  const session: Session = {
    agent,
    ready,
    size: () => members.length,
    lost,
    async close({ park = true } = {}) {
      // A program that ended before its agents answered: they are parked or ended all the same, once they have.
      await ready.catch(() => undefined);
      closing = true;
      following?.stop();
      for (const { timer, tell } of [...unexplained.values()]) {
        clearTimeout(timer);
        tell();
      }
      // A session that ends with its agents answering leaves those that can stay warm parked for the next one.
      const parked = park ? await Promise.all(members.map(({ transport, client }) => transport.park?.((args) => withTimeout(client.park(args), PARK_TIMEOUT_MS)).then(() => true, () => false))) : [];
      for (const member of members) member.client.close();
      await platform.stop();
      return parked.some(Boolean);
    },
  };
  return { session, agents: transports.length };
}

const FILE_CALLS = new Set<string | symbol>(
  ['stat', 'fetch', 'readdir', 'readlink', 'access', 'realpath', 'openForWrite', 'writeBack', 'mkdir', 'rmdir', 'unlink', 'rename', 'chmod'] satisfies (keyof FileCalls)[],
);

/** Parking is local to the agent (its rules go, a socket is made); one that takes longer is not worth keeping. */
const PARK_TIMEOUT_MS = 2000;

function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)));
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

async function handshake(transport: AgentTransport, options: SessionOptions): Promise<AgentClient> {
  const timeoutMs = options.handshakeTimeoutMs;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(async () => {
      reject(
        new DoppelError('E_AGENT_TIMEOUT', `the agent in ${transport.description} did not answer within ${timeoutMs / 1000}s`, {
          category: 'agent',
          hint: `raise agent.startup_timeout if the machine is slow; the agent said: ${lastWord(await transport.logTail()) || '(nothing)'}`,
        }),
      );
    }, timeoutMs);
  });
  const died = transport.exited.then(async (how) => {
    throw await agentFailedToStart(transport, how);
  });
  try {
    const connect = () => connectAgent(transport.stream, { handshakeTimeoutMs: timeoutMs, communicationTimeoutMs: options.communicationTimeoutMs, onCall: options.onCall });
    return await Promise.race([transport.connected ? transport.connected.then(connect) : connect(), timeout, died]);
  } catch (error) {
    // A broken stream usually means the agent died; say that rather than what the socket saw.
    const how = await Promise.race([transport.exited, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 200))]);
    if (how !== undefined && !(error instanceof DoppelError && error.code === 'E_AGENT_START')) throw await agentFailedToStart(transport, how);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

async function agentFailedToStart(transport: AgentTransport, how: string): Promise<DoppelError> {
  const said = lastWord(await transport.logTail());
  return new DoppelError('E_AGENT_START', `the agent in ${transport.description} ${how} before it was ready${said ? `: ${said}` : ''}`, {
    category: 'agent',
    hint: 'run with --agent-log-level debug to see the agent\'s log',
  });
}

async function agentLost(transport: AgentTransport, how: string): Promise<DoppelError> {
  const said = lastWord(await transport.logTail());
  return new DoppelError('E_AGENT_LOST', `the agent in ${transport.description} ${how} while the program ran${said ? `: ${said}` : ''}; the program was stopped`, {
    category: 'agent',
    hint: 'run doppel exec again; if it keeps happening, run with --agent-log-level debug and report the agent\'s log',
  });
}
