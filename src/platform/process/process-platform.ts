// The process platform: runs the agent inside a local process's network namespace (Linux, root), over a socketpair.
import { spawn, spawnSync } from 'node:child_process';
import { access, constants, readlink } from 'node:fs/promises';
import { extname } from 'node:path';
import process from 'node:process';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { AGENT_NODE_FLAGS } from '../../agent/node-flags.ts';
import { DoppelError } from '../../errors.ts';
import { parseAgentTrace, trace, tracing } from '../../trace.ts';
import type { AgentTransport } from '../agent-transport.ts';
import { createLogTail, type LogTail } from '../log-tail.ts';
import type { Platform } from '../platform.ts';
import { newSession, removeSessionChains, sweepDeadSessionChains } from './session-chains.ts';
import { targetMounts } from './target-mounts.ts';

export interface ProcessAgentOptions {
  pid: number;
  logLevel: string;
}

const agentMain = fileURLToPath(new URL(`../../agent/main${extname(fileURLToPath(import.meta.url))}`, import.meta.url));

export function createProcessPlatform(options: ProcessAgentOptions): Platform {
  let transport: AgentTransport | undefined;
  return {
    description: `process ${options.pid}`,
    hasTargetProcess: true,
    async start(progress) {
      transport = await progress.step(`starting the agent in process ${options.pid}'s network namespace`, () => startProcessAgent(options, progress.warn));
      return [transport];
    },
    follow: () => ({ stop() {} }),
    remoteMounts: () => targetMounts(options.pid),
    stop: async () => transport?.stop(),
    killNow: () => transport?.killNow(),
  };
}

async function startProcessAgent(options: ProcessAgentOptions, warn: (text: string) => void): Promise<AgentTransport> {
  const { pid } = options;
  await checkTarget(pid);
  const nsenter = findNsenter();
  for (const failure of sweepDeadSessionChains(pid)) warn(`could not remove a dead session's iptables rules in process ${pid}'s network namespace: ${failure}`);
  const session = newSession();
  // Only the network namespace is entered: the agent keeps the host's mount namespace and
  // reaches the target's files through /proc/PID/root. A new session keeps the terminal's
  // Ctrl-C away from it; it still ends when the socketpair on fd 3 closes.
  const traced = tracing() ? ['--trace'] : [];
  trace('spawning the agent');
  const child = spawn(
    nsenter,
    [`--net=/proc/${pid}/ns/net`, '--', process.execPath, ...AGENT_NODE_FLAGS, agentMain, '--pid', String(pid), '--fd', '3', '--log-level', options.logLevel, '--session', session, ...traced],
    { stdio: ['ignore', 'pipe', 'pipe', 'pipe'], detached: true },
  );
  const tail = createLogTail(40);
  child.stdout?.on('data', (chunk: Buffer) => tail.push(chunk));
  child.stderr?.on('data', tracing() ? agentTraceSplitter(tail) : (chunk: Buffer) => tail.push(chunk));
  // An agent removes its own chains on its way out; one that was killed cannot, so we do, before anyone hears it is gone.
  let chainsRemoved = false;
  const removeChains = () => {
    if (chainsRemoved) return;
    chainsRemoved = true;
    for (const failure of removeSessionChains(pid, session)) tail.push(Buffer.from(`doppel: removing the agent's iptables rules: ${failure}\n`));
  };
  const exited = new Promise<string>((resolve) => {
    child.once('error', (error) => resolve(`could not be started: ${error.message}`));
    child.once('exit', (code, signal) => {
      removeChains();
      resolve(signal ? `was killed by ${signal}` : `exited with code ${code}`);
    });
  });
  const stream = child.stdio[3] as Duplex;
  // The agent's end may close before we finish writing; that surfaces through `exited`.
  stream.on('error', () => {});

  let stopping: Promise<void> | undefined;
  const killNow = () => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
      // A dying CLI hears of no exit event: the chains go now, the agent being unable to add any after SIGKILL.
      removeChains();
    }
  };
  return {
    stream,
    description: `process ${pid}`,
    exited,
    logTail: async () => tail.text(),
    killNow,
    stop() {
      stopping ??= (async () => {
        stream.end();
        const gone = await Promise.race([exited.then(() => true), delay(5000).then(() => false)]);
        if (!gone) {
          killNow();
          await exited;
        }
      })();
      return stopping;
    },
  };
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

async function checkTarget(pid: number): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new DoppelError('E_PERMISSION_ROOT', `targeting process/${pid} needs root, to enter its network namespace and read its files`, {
      category: 'permission',
      hint: 'run doppel with sudo, or as root',
    });
  }
  for (const entry of [`/proc/${pid}/ns/net`, `/proc/${pid}/root`]) {
    try {
      await (entry.endsWith('/net') ? readlink(entry) : access(entry, constants.R_OK));
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

function findNsenter(): string {
  const found = spawnSync('sh', ['-c', 'command -v nsenter'], { encoding: 'utf8' });
  const path = found.stdout.trim();
  if (found.status !== 0 || path === '') {
    throw new DoppelError('E_MISSING_TOOL', 'nsenter was not found on PATH; doppel needs it to start the agent in the target\'s network namespace', {
      category: 'usage',
      hint: 'install util-linux (Debian: apt-get install util-linux)',
    });
  }
  return path;
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());
