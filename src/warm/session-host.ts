// The warm session host: started by a `doppel exec` on a process target or a Kubernetes target with one pod
// (agent.ttl > 0) while its program runs, it takes the agent its CLI parks at the end (host-target.ts: how, per
// platform), reads what the target tells once, and listens on a launch socket in the 0700 warm directory. bin/doppel's trampoline asks it to start the next program; a request that matches the session
// gets its own proxy on the same agent and the program's whole environment, and the program runs as the shell's own
// child. It exits, its agent with it, agent.ttl after the last program ended, when the target exits or changes, when
// the agent is lost, on a signal, or after giving its agent back to a CLI that must run a request itself.
//
// stdin from the CLI: one JSON line (the session: configuration, target, layer), then `go` once the agent is parked
// (end of file instead: the session did not end cleanly, and the host exits). Nothing goes back: the CLI leaves a marker
// (start-host.ts) which the host removes once its launch socket listens.
import { closeSync, openSync, realpathSync, writeSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { programEnvironment, programPaths, readTargetEnvironment, readTargetMounts, sessionOwner, sessionPolicies, startProgramProxy, type ProgramPlace } from '../cli/exec/program-proxy.ts';
import { openSession } from '../cli/exec/session.ts';
import { errorText } from '../cli/render-error.ts';
import type { ResolvedConfig } from '../config/schema.ts';
import type { DoppelError } from '../errors.ts';
import type { Proxy } from '../proxy/proxy.ts';
import { parseTarget } from '../config/target.ts';
import { processStat } from '../agent/process-identity.ts';
import { removeFile } from '../remove-file.ts';
import { warmDirectory } from '../platform/process/warm-agents.ts';
import type { HostTarget } from './host-target.ts';
import { decide, type Decision, type HostIdentity } from './launch-decision.ts';
import { decodeLaunchRequest, encodeLaunchAnswer, EXEC_FAILED, type LaunchAnswer, type LaunchRequest } from './launch-wire.ts';
import { processHostTarget } from './process-host-target.ts';

export interface Handoff {
  config: ResolvedConfig;
  layer: string;
  /** The CLI's own command, as a launch request of it would read: the host gets it ready for the next run of it. */
  request?: LaunchRequest;
}

/** The first line on stdin: the handoff, and the path of the marker the CLI leaves at `go` while this host starts. */
export interface HostStart extends Handoff {
  marker: string | undefined;
}

/** How often a running program is looked at. */
const PROGRAM_POLL_MS = 50;
/** How long a request waits for the end of the session of a program that has exited, before it is refused. */
const ENDING_WAIT_MS = 1000;
/** A program stopped because its session ended gets this long after SIGTERM. */
const KILL_AFTER_MS = 3000;

const entry = realpathSync.native(fileURLToPath(new URL(`../cli/entry${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url)));

/** One program running in the session. */
interface Launch {
  pid: number;
  start: string;
  jsonErrors: boolean;
  /** Marks the program's end: it exited, or its exec failed. */
  end(): void;
  /** Settles once the program has ended and its proxy is closed. */
  ended: Promise<void>;
  /** Stops the program: SIGTERM, SIGKILL a while later. */
  stop(): void;
}

/** The program a proxy serves: its notices go to its stderr, its owner names it to other sessions, an abort stops it. */
interface ProxyUser {
  pid: number;
  owner: string;
  abort(error: DoppelError): void;
}

/** Takes the handoff and the `go`, then serves until the session ends (or exits at once when there is no session). */
async function host(): Promise<void> {
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const nextLine = () => lines.next().then(({ value }) => value as string | undefined, () => undefined);
  const handoff = JSON.parse((await nextLine()) ?? 'null') as HostStart | null;
  // The CLI's marker goes once the socket listens, or with the host.
  const dropMarker = () => {
    if (handoff?.marker !== undefined) removeFile(handoff.marker);
  };
  process.once('exit', dropMarker);
  // The target's side is made while the CLI's program runs: the Kubernetes client alone takes most of a second to load.
  const preparing = handoff ? hostTarget(handoff.config) : undefined;
  preparing?.catch(() => undefined);
  if (!handoff || (await nextLine()) !== 'go') process.exit(0);
  const taken = await takeSession(handoff, preparing!, dropMarker).catch(() => false);
  if (!taken) process.exit(0);
}

async function hostTarget(config: ResolvedConfig): Promise<HostTarget> {
  const target = parseTarget(config.target.path);
  if (target.kind === 'process') return processHostTarget(config, target.pid);
  if (target.kind === 'container' || target.kind === 'targetless') throw new Error(`no warm session for ${target.kind} targets`);
  // Loaded only for Kubernetes targets: a process target's host must not pay for the Kubernetes client.
  const { kubeHostTarget } = await import('./kube-host-target.ts');
  return kubeHostTarget(config, target);
}

/**
 * Listens on the launch socket (then calls `listening`), then takes the parked agent: a request that comes meanwhile
 * (the very next run) waits for it. False when there is no session to serve.
 */
async function takeSession({ config, layer, request: own }: Handoff, preparing: Promise<HostTarget>, listening: () => void): Promise<boolean> {
  const told = Date.now();
  const dir = warmDirectory();
  const where = await preparing;
  const socketName = where.socketName(process.pid);
  if (!dir || !socketName) return false;
  let open: (serve: (socket: Socket) => Promise<void>) => void = () => {};
  const opened = new Promise<(socket: Socket) => Promise<void>>((resolve) => (open = resolve));
  const server = createServer((socket) => void opened.then((serve) => serve(socket)).catch(() => socket.destroy()));
  // The socket file goes with the server; one left by a host killed outright is removed by the next start.
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(join(dir, socketName), () => resolve());
  });
  listening();
  const { platform } = where;
  const policies = sessionPolicies(config);
  /** The program running now; `starting` while its proxy starts, so that a second request waits its turn. */
  let current: Launch | 'starting' | undefined;
  const progress = {
    step: <T>(_: string, work: (status: (text: string) => void) => Promise<T>) => work(() => {}),
    warn: (text: string) => typeof current === 'object' && writeToStderr(current.pid, `doppel: warning: ${text}\n`),
  };
  const session = await openSession(platform, { handshakeTimeoutMs: config.agent.startup_timeout * 1000, communicationTimeoutMs: config.agent.communication_timeout * 1000 }, progress).catch(async () => {
    // The requests waiting are refused (their CLIs run them), and the socket goes.
    open(async (socket) => void socket.destroy());
    await new Promise((resolve) => server.close(resolve));
    return undefined;
  });
  if (!session) return false;
  const context = Promise.all([readTargetEnvironment(session.agent, platform, config, progress), readTargetMounts(platform, config)]);
  context.catch(() => undefined);
  const identity: HostIdentity = { entry, isOurs: where.isOurs, config: JSON.stringify(config) };

  let primed = false;
  /** The proxy of the last program, which left nothing in it, kept for the next one with the same paths. */
  let kept: { key: string; proxy: Proxy; users: { current: ProxyUser } } | undefined;
  /** A proxy for programs at `place`, serving whichever program `users.current` is. */
  const makeProxy = (place: ProgramPlace, users: { current: ProxyUser }) =>
    startProgramProxy({
      ...place,
      agent: session.agent,
      config,
      policies,
      session: {
        get owner() {
          return users.current.owner;
        },
        notice: (text) => writeToStderr(users.current.pid, `doppel: warning: ${text}\n`),
        abort: (error) => users.current.abort(error),
      },
    });
  /** Where a request's program runs from, and the key a kept proxy is looked up by: its fs policy's paths. */
  const placeOf = (request: LaunchRequest, decision: Extract<Decision, { kind: 'run' }>, targetMounts: string[]) => {
    const place: ProgramPlace = { cwd: request.cwd, executable: decision.path, localEnv: request.env, targetMounts };
    return { place, key: JSON.stringify(programPaths(place)) };
  };
  // The host's code is cold only for its first proxy: that one warms the call paths, as the CLI's does.
  const primeOnce = (proxy: Proxy) => {
    if (primed) return;
    primed = true;
    void proxy.prime();
  };
  /**
   * The CLI's own command, decided and its proxy made while nothing waits: the next run of it (a restart) finds the
   * host's code warm and its proxy kept, as every later run does (the first run's request took 15-20 ms more).
   */
  const prepare = async (request: LaunchRequest) => {
    const decision = await decide(request, identity);
    if (decision.kind !== 'run') return;
    const { place, key } = placeOf(request, decision, (await context)[1]);
    // No program yet: its notices have nowhere to go (pid 0 has no stderr).
    const users = { current: { pid: 0, owner: sessionOwner(decision.command, request.pid), abort: () => {} } };
    const proxy = await makeProxy(place, users);
    primeOnce(proxy);
    kept = { key, proxy, users };
  };
  const prepared = own ? prepare(own).catch(() => undefined) : Promise.resolve();
  let idle: NodeJS.Timeout | undefined;
  /** The target changed but the agent is still its (another pod became ready): the running program ends first. */
  let retiring = false;
  /** agent.ttl from `since`: the last program's end, or for the CLI's program, the `go` (its CLI did not wait for us). */
  const waitIdle = (since = Date.now()) => {
    clearTimeout(idle);
    if (retiring) return void shutdown(undefined, true);
    idle = setTimeout(() => void shutdown(), Math.max(0, since + config.agent.ttl * 1000 - Date.now()));
  };
  let ending: Promise<void> | undefined;
  /**
   * Every way out. `giveBack`: a CLI will run the request on `socket` and wants the agent, so it is parked again
   * (warm for agent.ttl, as its last CLI left it) before the answer; `park` alone parks it for whoever comes next;
   * otherwise the agent exits when its link closes (on Kubernetes its Job is deleted).
   */
  const shutdown = (giveBack?: Socket, park = giveBack !== undefined) =>
    (ending ??= (async () => {
      server.close();
      clearTimeout(idle);
      if (typeof current === 'object') {
        current.stop();
        await current.ended;
      }
      await prepared;
      await kept?.proxy.close().catch(() => undefined);
      await session.close({ park }).catch(() => undefined);
      if (giveBack) await new Promise<void>((resolve) => giveBack.end(encodeLaunchAnswer({ run: false }), resolve));
      process.exit(0);
    })());

  const serve = async (socket: Socket) => {
    socket.on('error', () => {});
    const request = await readRequest(socket);
    const decision = request && !ending ? await decide(request, identity).catch(() => undefined) : undefined;
    if (!request || !decision || decision.kind === 'other') return answer(socket, { run: false });
    // One program at a time. One that has exited has its session ended first (its proxy closed, its ports given back,
    // which the agent's iptables runs take tens of milliseconds for), and the request waits for that: a restart loop's
    // next program keeps the warm session. One still running gets a poll's time to exit.
    if (typeof current === 'object') {
      const exited = !running(current.pid, current.start);
      if (exited) current.end();
      await Promise.race([current.ended, delay(exited ? ENDING_WAIT_MS : PROGRAM_POLL_MS)]);
    }
    if (current || ending || retiring) return answer(socket, { run: false });
    if (decision.kind === 'cli') return shutdown(socket);
    const start = processStat(request.pid)?.start;
    if (!start) return answer(socket, { run: false });
    current = 'starting';
    clearTimeout(idle);
    const started = await startLaunch(request, start, decision).catch(() => undefined);
    current = started?.launch;
    if (!started) {
      waitIdle();
      return answer(socket, { run: false });
    }
    const text = decision.quiet ? '' : `${decision.note ? `doppel: ${decision.note}\n` : ''}doppel: reusing the warm session of ${where.description} (host pid ${process.pid})\n`;
    answer(socket, { run: true, text, file: decision.executable, argv: decision.command, env: started.env });
    // The trampoline closes the socket when it execs the program; a byte first means the exec failed.
    socket.once('data', (byte: Buffer) => byte[0] === EXEC_FAILED && started.launch.end());
    socket.once('close', () => {
      const timer = setInterval(() => {
        if (!running(request.pid, start)) started.launch.end();
      }, PROGRAM_POLL_MS);
      void started.launch.ended.then(() => clearInterval(timer));
    });
    socket.resume();
  };

  /** The program's proxy and environment: what the CLI would give it, on the session's agent. */
  const startLaunch = async (request: LaunchRequest, start: string, decision: Extract<Decision, { kind: 'run' }>): Promise<{ launch: Launch; env: Record<string, string> }> => {
    let abort: (error: DoppelError) => void = () => {};
    const aborted = new Promise<DoppelError>((resolve) => (abort = resolve));
    const [[target, targetMounts]] = await Promise.all([context, prepared]);
    const user: ProxyUser = { pid: request.pid, owner: sessionOwner(decision.command, request.pid), abort };
    const { place, key } = placeOf(request, decision, targetMounts);
    const previous = kept;
    kept = undefined;
    const reused = previous?.key === key ? previous : undefined;
    if (!reused) await previous?.proxy.close().catch(() => undefined);
    const users = reused?.users ?? { current: user };
    users.current = user;
    const proxy = reused?.proxy ?? (await makeProxy(place, users));
    let env: Record<string, string>;
    try {
      env = programEnvironment({ config, policies, target, localEnv: request.env, layer, socketPath: proxy.socketPath });
    } catch (error) {
      // An env_file that cannot be read: the CLI says so.
      await proxy.close();
      throw error;
    }
    primeOnce(proxy);
    let end: () => void = () => {};
    const exited = new Promise<void>((resolve) => (end = resolve));
    let killer: NodeJS.Timeout | undefined;
    const launch: Launch = {
      pid: request.pid,
      start,
      jsonErrors: decision.jsonErrors,
      end,
      ended: exited.then(async () => {
        clearTimeout(killer);
        // A program that left nothing in its proxy (no connection open, no port held) leaves it to the next program with
        // the same paths: closing it and starting the next one's were most of a request's time.
        if (!ending && proxy.idle()) kept = { key, proxy, users };
        else await proxy.close().catch(() => undefined);
        if (current === launch) current = undefined;
        if (!ending) waitIdle();
      }),
      stop() {
        signal(request.pid, start, 'SIGTERM');
        killer ??= setTimeout(() => signal(request.pid, start, 'SIGKILL'), KILL_AFTER_MS);
      },
    };
    // An incoming conflict (or any error the CLI ends its session with) stops the program, as the CLI does.
    void aborted.then((error) => {
      writeToStderr(request.pid, errorText(error, { json: decision.jsonErrors }));
      launch.stop();
    });
    return { launch, env };
  };

  // The agent lost: a running program hears it as from the CLI, and is stopped.
  void session.lost.then((error) => {
    if (typeof current === 'object') writeToStderr(current.pid, errorText(error, { json: current.jsonErrors }));
    void shutdown();
  });
  // The target's pod gone, the session is over; another one ready, a program running finishes first, as in a CLI's
  // session, which would have taken that pod in.
  where.watch((keepAgent) => {
    if (!keepAgent || current === undefined) return void shutdown(undefined, keepAgent);
    retiring = true;
  });
  for (const name of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(name, () => void shutdown());

  open(serve);
  waitIdle(told);
  return true;
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function answer(socket: Socket, reply: LaunchAnswer): void {
  socket.end(encodeLaunchAnswer(reply));
}

/** Alive and not yet reaped nor a zombie: still the program we started (its PID with its start time). */
function running(pid: number, start: string): boolean {
  const stat = processStat(pid);
  return stat !== undefined && stat.start === start && stat.state !== 'Z';
}

function signal(pid: number, start: string, name: NodeJS.Signals): void {
  if (!running(pid, start)) return;
  try {
    process.kill(pid, name);
  } catch {
    // gone meanwhile
  }
}

/** The program's stderr is the CLI's would-be stderr: what the CLI would print there goes there. */
function writeToStderr(pid: number, text: string): void {
  try {
    const fd = openSync(`/proc/${pid}/fd/2`, 'a');
    try {
      writeSync(fd, text);
    } finally {
      closeSync(fd);
    }
  } catch {
    // the program has gone, or closed its stderr
  }
}

function readRequest(socket: Socket): Promise<LaunchRequest | undefined> {
  return new Promise((resolve) => {
    let buffer = Buffer.alloc(0);
    const finish = (request: LaunchRequest | undefined) => {
      socket.off('data', onData);
      resolve(request);
    };
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      try {
        const decoded = decodeLaunchRequest(buffer);
        if (decoded) finish(decoded.request);
      } catch {
        finish(undefined);
      }
    };
    socket.on('data', onData);
    socket.once('end', () => finish(undefined));
  });
}

void host();
