// Spawning a process target's agent: nsenter into the target's network namespace, then Node.js on the agent. When the
// command line itself names a process target, the CLI's entry spawns it before the CLI loads its modules and reads its
// configuration, so that the agent's own start, the longest step of a fresh session, runs alongside the CLI's; the
// platform adopts it if the configuration asks for that very agent, and ends it otherwise.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import module from 'node:module';
import { extname } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { AGENT_NODE_FLAGS } from '../../agent/node-flags.ts';
import { EXEC_VALUE_OPTIONS } from '../../cli/exec/program-word.ts';
import { isExecutable, whichSync } from '../../cli/exec/static-binary.ts';
import { DoppelError } from '../../errors.ts';
import { trace, tracing } from '../../trace.ts';
import { warmPath } from './warm-path.ts';

const agentMain = fileURLToPath(new URL(`../../agent/main${extname(fileURLToPath(import.meta.url))}`, import.meta.url));

let started = 0;

/** `<CLI pid>-<n>`: the agent names its chains DOPPEL-<session>, so a later start can tell whose they are. */
export function newSession(): string {
  return `${process.pid}-${started++}`;
}

/**
 * Only the network namespace is entered: the agent keeps the host's mount namespace and reaches the target's files
 * through /proc/PID/root. A new session keeps the terminal's Ctrl-C away from it; it still ends when the socketpair
 * on fd 3 closes. Its log, and anything nsenter or Node.js says, comes on stderr; it writes nothing to stdout.
 */
export function spawnAgent(pid: number, logLevel: string, session: string): ChildProcess {
  const nsenter = findNsenter();
  const traced = tracing() ? ['--trace'] : [];
  // The CLI's compile cache serves the agent's modules too (the same files).
  const cache = module.getCompileCacheDir?.();
  trace('spawning the agent');
  return spawn(
    nsenter,
    [`--net=/proc/${pid}/ns/net`, '--', process.execPath, ...AGENT_NODE_FLAGS, agentMain, '--pid', String(pid), '--fd', '3', '--log-level', logLevel, '--session', session, ...traced],
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe'], detached: true, env: cache ? { ...process.env, NODE_COMPILE_CACHE: cache } : process.env },
  );
}

export interface EarlyAgent {
  child: ChildProcess;
  session: string;
}

let early: (EarlyAgent & { pid: number; logLevel: string }) | undefined;

/**
 * From the entry, before anything else loads: `exec` with `--target process/PID` among its options starts that
 * target's agent now, unless a warm agent of that process may be there to reuse. Its log level is the flag's, else
 * DOPPEL_AGENT_LOG_LEVEL's, else the default: a configuration file that says otherwise costs a second start.
 */
export function startEarlyAgent(argv: readonly string[], env: NodeJS.ProcessEnv): void {
  if (argv[0] !== 'exec' || process.getuid?.() !== 0) return;
  const options = new Map<string, string>();
  // Up to `--` or the program's word (the first that is no option nor an option's value): what follows is the program's own.
  for (let i = 1; i < argv.length && argv[i] !== '--' && argv[i]!.startsWith('-'); i++) {
    const [name = '', inline] = argv[i]!.split(/=(.*)/s);
    if (name === '-h' || name === '--help') return;
    const value = inline ?? (EXEC_VALUE_OPTIONS.includes(name) ? argv[++i] : undefined);
    if (['-t', '--target', '--agent-log-level', '--agent-ttl'].includes(name)) options.set(name, value ?? '');
  }
  const pid = Number(/^process\/(\d+)$/.exec(options.get('--target') ?? options.get('-t') ?? '')?.[1]);
  if (!(pid > 0) || !existsSync(`/proc/${pid}/ns/net`)) return;
  if (options.get('--agent-ttl') !== '0' && mayHaveWarmAgent(pid)) return;
  const logLevel = options.get('--agent-log-level') ?? (env.DOPPEL_AGENT_LOG_LEVEL || 'info');
  const session = newSession();
  let child: ChildProcess;
  try {
    child = spawnAgent(pid, logLevel, session);
  } catch {
    // No nsenter: the regular start says so.
    return;
  }
  // What went wrong surfaces where the platform adopts it, or as the regular start's own failure.
  child.once('error', () => undefined);
  early = { pid, logLevel, session, child };
  process.once('exit', endEarlyAgent);
}

/** The agent the entry started, if it is this target's with this log level and still running; any other is ended. */
export function adoptEarlyAgent(pid: number, logLevel: string): EarlyAgent | undefined {
  const agent = early;
  if (!agent) return undefined;
  if (agent.pid !== pid || agent.logLevel !== logLevel || agent.child.pid === undefined || agent.child.exitCode !== null || agent.child.signalCode !== null) {
    endEarlyAgent();
    return undefined;
  }
  early = undefined;
  process.off('exit', endEarlyAgent);
  return agent;
}

function endEarlyAgent(): void {
  const pid = early?.child.pid;
  early = undefined;
  process.off('exit', endEarlyAgent);
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** A warm agent's socket names its target's PID first (see warm-agents.ts); any of this PID's may still be alive. */
function mayHaveWarmAgent(pid: number): boolean {
  try {
    return readdirSync(warmPath()).some((entry) => entry.startsWith(`${pid}-`));
  } catch {
    return false;
  }
}

/** Looked up in PATH here rather than by a shell: a process start less before the agent's. */
function findNsenter(): string {
  const path = whichSync('nsenter', process.env.PATH, isExecutable);
  if (path === undefined) {
    throw new DoppelError('E_MISSING_TOOL', 'nsenter was not found on PATH; doppel needs it to start the agent in the target\'s network namespace', {
      category: 'usage',
      hint: 'install util-linux (Debian: apt-get install util-linux)',
    });
  }
  return path;
}
