// The process platform: runs the agent inside a local process's network namespace (Linux, root), over a socketpair.
import { accessSync, existsSync, constants as fsConstants, readlinkSync } from 'node:fs';
import { Socket } from 'node:net';
import { constants } from 'node:os';
import process from 'node:process';
import type { Duplex } from 'node:stream';
import { DoppelError } from '../../errors.ts';
import { parseAgentTrace, trace, tracing } from '../../trace.ts';
import type { AgentTransport } from '../agent-transport.ts';
import { createLogTail, type LogTail } from '../log-tail.ts';
import type { Platform } from '../platform.ts';
import { childExit, isAlive, running as shellAgentRunning } from '../../process-alive.ts';
import { adoptEarlyAgent, newSession, spawnAgent, type EarlyAgent } from './agent-spawn.ts';
import { removeSessionChains, sweepDeadSessionChains } from './session-chains.ts';
import { targetEnvironment } from '../../agent/env.ts';
import { targetMounts } from './target-mounts.ts';
import { startTime } from '../../agent/process-identity.ts';
import { handOver, reachWarmAgent, sweepWarmSockets, warmDirectory, warmSocket } from './warm-agents.ts';
import { adoptShellAgent, endUnadopted, readShellAgentLog, removeEndedAgentFiles, type ShellAgent } from './shell-agent.ts';

export interface ProcessAgentOptions {
  pid: number;
  logLevel: string;
  /** agent.ttl: how long, in seconds, a cleanly ended session's agent stays warm for the next one; 0 for never. */
  ttl?: number;
  /** Only a warm agent will do (the warm session host takes the agent its CLI parked): none is an error. */
  warmOnly?: boolean;
}

export function createProcessPlatform(options: ProcessAgentOptions): Platform {
  let transport: AgentTransport | undefined;
  // The session ends with this process (its agent exits): no other can take its PID while the program runs.
  const start = startTime(options.pid);
  const target = start === undefined ? undefined : { pid: options.pid, start };
  return {
    description: `process ${options.pid}`,
    hasTargetProcess: true,
    async start(progress) {
      checkTarget(options.pid);
      // Started by bin/doppel or the entry from the command line, if that is the agent this configuration asks for.
      const shell = options.warmOnly ? undefined : adoptShellAgent(options.pid, options.logLevel);
      const early = options.warmOnly ? undefined : adoptEarlyAgent(options.pid, options.logLevel);
      const warm = (options.ttl ?? 0) > 0 ? warmPlace(options.pid) : undefined;
      const session = early?.session ?? newSession();
      // With an agent of its own the session takes no warm one, but what killed ones left goes all the same.
      if ((early || shell) && warm) sweepWarmSockets(warm.dir);
      const reused = !early && !shell && warm && (await reachWarmAgent(warm.dir, options.pid, warm.targetStart, { session, trace: tracing() }));
      if (!reused && options.warmOnly) throw new DoppelError('E_NO_WARM_AGENT', `no warm agent of process ${options.pid} to take`, { category: 'agent' });
      if (reused) {
        trace('reusing a warm agent');
        transport = await progress.step(`reusing the warm agent of process ${options.pid}`, async () => reusedAgent(options, reused, session, warm, progress.warn));
      } else {
        transport = await progress.step(
          `starting the agent in process ${options.pid}'s network namespace`,
          async () => (shell ? shellAgent(options, shell, session, warm) : startProcessAgent(options, session, warm, early)),
        );
      }
      return [transport];
    },
    follow: () => ({ stop() {} }),
    remoteMounts: () => targetMounts(options.pid),
    // As the agent reads them, from the same /proc, with the same modules.
    async targetEnvironment(withHostname) {
      const { vars, hostname } = await targetEnvironment(options.pid, { hostname: withHostname });
      return { vars, hostnameFile: hostname };
    },
    local: target,
    stop: async () => transport?.stop(),
    killNow: () => transport?.killNow(),
  };
}

interface WarmPlace {
  dir: string;
  targetStart: string;
}

function warmPlace(pid: number): WarmPlace | undefined {
  const dir = warmDirectory();
  const targetStart = startTime(pid);
  return dir && targetStart ? { dir, targetStart } : undefined;
}

/** What a process agent's transport needs to know of the agent, however it was reached. */
interface AgentProcess {
  pid: number;
  /** Whether it may still be running: what killNow may signal. */
  running(): boolean;
  stream: Duplex;
  /** Settles when the agent has exited (spawned) or its socket closed (reused), with what was seen. */
  exited: Promise<string>;
  tail: LogTail;
  removeChains(): void;
}

/** A process agent's transport: stopping it parks it (agent.ttl) after a clean session, or ends it. */
function processTransport(options: ProcessAgentOptions, agent: AgentProcess, warm: WarmPlace | undefined, detach: () => void): AgentTransport {
  const { pid } = options;
  let parked = false;
  let stopping: Promise<void> | undefined;
  const killNow = () => {
    if (parked || !agent.running()) return;
    try {
      process.kill(-agent.pid, 'SIGKILL');
    } catch {
      // already gone
    }
    // A dying CLI hears of no exit event: the chains go now, the agent being unable to add any after SIGKILL.
    agent.removeChains();
  };
  return {
    stream: agent.stream,
    handoverPid: agent.pid,
    description: `process ${pid}`,
    exited: agent.exited,
    logTail: async () => agent.tail.text(),
    killNow,
    park:
      warm && options.ttl
        ? async (ask) => {
            await ask({ socket: warmSocket(warm.dir, pid, warm.targetStart, agent.pid), ttlMs: options.ttl! * 1000 });
            parked = true;
          }
        : undefined,
    stop() {
      stopping ??= (async () => {
        agent.stream.end();
        // Parked, it outlives us: it gave back its rules and serves the next session, or exits at its ttl.
        if (parked) return detach();
        const gone = await Promise.race([agent.exited.then(() => true), delay(5000).then(() => false)]);
        if (!gone) {
          killNow();
          await agent.exited;
        }
      })();
      return stopping;
    },
  };
}

/** Spawned by us (or by the entry): it sweeps what dead sessions left in the target's namespace (src/agent/main.ts). */
function startProcessAgent(options: ProcessAgentOptions, session: string, warm: WarmPlace | undefined, early: EarlyAgent | undefined): AgentTransport {
  const { pid } = options;
  const child = early?.child ?? spawnAgent(pid, options.logLevel, session);
  const tail = createLogTail(40);
  child.stderr?.on('data', tracing() ? agentTraceSplitter(tail) : (chunk: Buffer) => tail.push(chunk));
  // An agent removes its own chains on its way out (its exit code 0 says it got there: two nsenter + iptables-save runs
  // spared on every session's end); one that was killed or failed may not have, so we do, before anyone hears it is gone.
  const removeChains = once(() => {
    for (const failure of removeSessionChains(pid, session)) tail.push(Buffer.from(`doppel: removing the agent's iptables rules: ${failure}\n`));
  });
  const exited = new Promise<string>((resolve) => {
    child.once('error', (error) => resolve(`could not be started: ${error.message}`));
    child.once('exit', (code, signal) => {
      if (code !== 0) removeChains();
      resolve(signal ? `was killed by ${signal}` : `exited with code ${code}`);
    });
  });
  const stream = child.stdio[3] as Duplex;
  // The agent's end may close before we finish writing; that surfaces through `exited`.
  stream.on('error', () => {});
  const detach = () => {
    // Its log pipe closes with us; the agent ignores that.
    child.stderr?.destroy();
    child.unref();
  };
  const running = () => child.pid !== undefined && child.exitCode === null && child.signalCode === null;
  return processTransport(options, { pid: child.pid ?? 0, running, stream, exited, tail, removeChains }, warm, detach);
}

/** How often the CLI looks for the socket of an agent bin/doppel started, when it comes before the agent listens. */
const SHELL_AGENT_POLL_MS = 2;

/**
 * Started by bin/doppel (shell-agent.ts), it sweeps as a spawned agent does, but is a child the event loop does not
 * know. Returned at once: the session's handshake waits for `connected` (the agent may still be starting), not the
 * program's start. Its end is its socket's close, or its own before it listened; its zombie then tells how it ended.
 */
function shellAgent(options: ProcessAgentOptions, agent: ShellAgent, session: string, warm: WarmPlace | undefined): AgentTransport {
  const socket = new Socket();
  socket.on('error', () => {});
  const notes = createLogTail(10);
  const tail: LogTail = { push: notes.push, text: () => `${readShellAgentLog(agent)}${notes.text()}` };
  const removeChains = once(() => {
    for (const failure of removeSessionChains(options.pid, session)) notes.push(`doppel: removing the agent's iptables rules: ${failure}\n`);
  });
  // Held timers, not `delay`'s: until it has settled, this waiting may be all that keeps the CLI running (a program
  // that could not be started), and it must not end the CLI before the error is told.
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  let gone: (how: string) => void = () => {};
  const exited = new Promise<string>((resolve) => (gone = resolve));
  const ended = once(async () => {
    let end: { status: number | undefined } | undefined;
    // It exits a few milliseconds after its socket closes, and a short session's end waits for that: looked for often
    // at first.
    for (let waited = 0, step = 1; (end = childExit(agent.pid)) === undefined && waited < 3000; waited += step, step = waited < 30 ? 1 : 10) await pause(step);
    const status = end?.status;
    // As a spawned agent's: one that ended other than with code 0 may have left its chains. One still running parked.
    if (status === undefined ? end !== undefined : status !== 0) removeChains();
    if (!shellAgentRunning(agent.pid)) removeEndedAgentFiles(agent);
    gone(status === undefined ? 'closed its connection' : status & 0x7f ? `was killed by ${signalName(status & 0x7f)}` : `exited with code ${status >> 8}`);
  });
  const connected = (async () => {
    while (!existsSync(agent.socketPath) && shellAgentRunning(agent.pid)) await pause(SHELL_AGENT_POLL_MS);
    if (shellAgentRunning(agent.pid) && (await handOver(agent.socketPath, { session, trace: tracing() }, socket))) {
      socket.once('close', () => void ended());
      return;
    }
    endUnadopted(agent);
    void ended();
    // The handshake says how it ended, with its log.
    throw new Error(`the agent (pid ${agent.pid}) did not take the session`);
  })();
  connected.catch(() => undefined);
  const transport = processTransport(options, { pid: agent.pid, running: () => shellAgentRunning(agent.pid), stream: socket, exited, tail, removeChains }, warm, () => socket.unref());
  return { ...transport, connected };
}

/** A warm agent that took this session: it is not our child, so its end is its socket's, and its log went with its first CLI. */
function reusedAgent(options: ProcessAgentOptions, reused: { socket: Socket; agentPid: number }, session: string, warm: WarmPlace, warn: (text: string) => void): AgentTransport {
  const { pid } = options;
  const { socket, agentPid } = reused;
  socket.on('error', () => {});
  const tail = createLogTail(1);
  tail.push(`doppel: the agent (pid ${agentPid}) was reused warm; its log went to the session that started it (--agent-ttl 0 starts a fresh one)\n`);
  const removeChains = once(() => {
    for (const failure of removeSessionChains(pid, session)) tail.push(`doppel: removing the agent's iptables rules: ${failure}\n`);
  });
  const exited = new Promise<string>((resolve) => {
    socket.once('close', async () => {
      // An agent that ends a session removes its chains and exits (or parks); one that was killed leaves them to us.
      for (let waited = 0; isAlive(agentPid) && waited < 3000; waited += 50) await delay(50);
      if (!isAlive(agentPid)) removeChains();
      resolve(isAlive(agentPid) ? 'closed its connection' : 'ended');
    });
  });
  const transport = processTransport(options, { pid: agentPid, running: () => isAlive(agentPid), stream: socket, exited, tail, removeChains }, warm, () => socket.unref());
  // It swept what dead sessions left when it started, which may be long ago: we do at the session's end, when its nsenter
  // and iptables processes hold up nothing.
  let sweeping: Promise<void> | undefined;
  const sweep = () =>
    (sweeping ??= (async () => {
      for (const failure of await sweepDeadSessionChains(pid)) warn(`could not remove a dead session's iptables rules in process ${pid}'s network namespace: ${failure}`);
      trace('dead sessions\' rules swept');
    })());
  return { ...transport, stop: () => transport.stop().finally(sweep) };
}

/** The agent's trace marks become the CLI's trace lines; everything else it says goes to its log tail. */
function agentTraceSplitter(tail: LogTail): (chunk: Buffer) => void {
  let partial = '';
  return (chunk) => {
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      const mark = parseAgentTrace(line);
      if (mark) trace(mark.what, mark.at);
      else tail.push(`${line}\n`);
    }
  };
}

/** As a child process's exit event names it. */
const signalName = (signal: number): string => Object.entries(constants.signals).find(([, number]) => number === signal)?.[0] ?? `signal ${signal}`;

function once(run: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    run();
  };
}

function checkTarget(pid: number): void {
  if (process.getuid?.() !== 0) {
    throw new DoppelError('E_PERMISSION_ROOT', `targeting process/${pid} needs root, to enter its network namespace and read its files`, {
      category: 'permission',
      hint: 'run doppel with sudo, or as root',
    });
  }
  for (const entry of [`/proc/${pid}/ns/net`, `/proc/${pid}/root`]) {
    try {
      // Synchronous: two system calls on /proc, where each trip through libuv's thread pool waits on the event loop.
      if (entry.endsWith('/net')) readlinkSync(entry);
      else accessSync(entry, fsConstants.R_OK);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM') {
        throw new DoppelError('E_TARGET_ACCESS', `not permitted to inspect process ${pid} (its /proc entries are not readable: ${entry}: ${code})`, {
          category: 'permission',
          hint: 'the process exists but the kernel refuses access (another user namespace, a missing CAP_SYS_PTRACE, or a hardened supervisor); target a process you can inspect, e.g. one started with `sleep 600 &`',
        });
      }
      throw new DoppelError('E_TARGET_NOT_FOUND', `process ${pid} does not exist (or has already exited)`, {
        category: 'target',
        hint: 'check the PID with `ps -p PID` and pass a running process as --target process/PID',
      });
    }
  }
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());
