// Launch plans: a fresh `doppel exec` on a process target writes down what it decided for its program (the file, its
// whole environment and the layer's rules file), named by the request (directory, environment and arguments up to the
// program's word: layer/src/plan.c); the next start of that program, whatever its arguments, then starts from it in
// bin/doppel's trampoline, before this CLI's Node.js has loaded. The trampoline checks what the decision was made from
// (the configuration's files, the target's process, environment and mounts, the program's place on PATH, this build);
// the CLI, started beside the program as its parent, decides again, and stops the program if its decision differs.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { setPriority } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { debuglog } from 'node:util';
import { startTime } from '../../agent/process-identity.ts';
import { writeCacheFile } from '../../config/disk-cache.ts';
import { defaultConfigFiles } from '../../config/load.ts';
import { running } from '../../process-alive.ts';
import { shellAgentPid } from '../../platform/process/shell-agent.ts';
import { removeFile } from '../../remove-file.ts';
import { programWordAt } from './program-word.ts';
import { adoptProgram, type RunningProgram } from './run-program.ts';
import { FAST_PATH_FILE } from '../../proxy/layer-wire.ts';
import { decodePlan, encodePlan, PLAN_DIR_MARK, PLAN_FILE_ENV, PLANNED_ENV, type Plan, type PlanCheck } from '../../warm/launch-wire.ts';

/** `NODE_DEBUG=doppel-plan` says when a plan is written, and when a program started from one. */
const debug = debuglog('doppel-plan');

/** Plans kept: one per distinct program, flags, directory and environment. */
const MAX_PLANS = 64;

/** A program the trampoline started from a plan: this CLI owns its session. */
export interface PlannedStart {
  /** The proxy's socket, listening: the trampoline bound it where the program looks for it. */
  listenFd: number;
  /** The session's directory (`doppel-<our pid>-...`), with the rules file the trampoline wrote. */
  dir: string;
  planFile: string;
  plan: Plan | undefined;
  /** The rules file as the program's layer read it. */
  fastPath: Buffer | undefined;
  /** Adopted at the CLI's first line: its signals relayed, its end watched. */
  program: RunningProgram;
}

let planFile: string | undefined;
let planned: PlannedStart | undefined;
/** The priority the trampoline lowered ours from while the program starts (layer/src/plan.c yield_cpu). */
let priority: number | undefined;

/** From the entry, before anything reads the environment: the trampoline's word, which no program inherits. */
export function takeLaunchPlan(env: NodeJS.ProcessEnv): void {
  const file = env[PLAN_FILE_ENV];
  const start = /^(\d+) (\d+) (-?\d+) (\/\S+) (\/.+)$/.exec(env[PLANNED_ENV] ?? '');
  delete env[PLAN_FILE_ENV];
  delete env[PLANNED_ENV];
  if (file?.startsWith('/')) planFile = file;
  if (!start) return;
  const dir = start[4]!;
  priority = Number(start[3]);
  const pid = Number(start[1]);
  const program = adoptProgram(pid);
  planned = { listenFd: Number(start[2]), dir, planFile: start[5]!, plan: attempt(() => decodePlan(readFileSync(start[5]!))), fastPath: attempt(() => readFileSync(join(dir, FAST_PATH_FILE))), program };
  debug('program %d started from the plan %s', pid, planned.planFile);
  // The session waits for the program's end; a CLI that fails before (a target gone, a lost agent, a bug) takes the
  // program with it, as the session it started in never came to be.
  process.once('exit', () => {
    if (running(pid)) process.kill(pid, 'SIGKILL');
  });
}

export const plannedStart = (): PlannedStart | undefined => planned;

/** Once the session is ours: every thread of ours (Node.js's own were made at the lower one) back at its priority. */
export function takePriorityBack(): void {
  if (priority === undefined) return;
  for (const thread of readdirSync('/proc/self/task')) {
    try {
      setPriority(Number(thread), priority);
    } catch {
      // A thread that has ended.
    }
  }
  priority = undefined;
}

/** What this start's decision was made from, for the trampoline to check. */
export interface PlanInputs {
  cwd: string;
  /** -f's file, or undefined for the default places. */
  configFile: string | undefined;
  /** The file the configuration came from. */
  source: string | undefined;
  envFile: string | undefined;
  command: string;
  path: string | undefined;
  executable: string;
  targetPid: number;
  /** Whether the program's environment took the target's. */
  targetEnv: boolean;
  layer: string;
}

/** The decision, as the next start of the program gets it: written when the trampoline named the file for it. */
export function writePlan(inputs: PlanInputs, decision: { argv: string[]; env: Record<string, string>; dir: string; fastPath: Buffer; handoverPid: number | undefined }): void {
  // Only a session served by the agent bin/doppel started: the next one's trampoline names that agent in the rules.
  if (planFile === undefined || decision.handoverPid === undefined || decision.handoverPid !== shellAgentPid()) return;
  // The trampoline gives the program the arguments it was given after the program's word, as ours were.
  if (decision.argv.join('\0') !== requestArguments()?.join('\0')) return;
  const env = Object.entries(decision.env).map(([name, value]) => `${name}=${value}`);
  if (env.some((entry) => entry.includes(PLAN_DIR_MARK))) return;
  const checks = planChecks(inputs);
  if (!checks) return;
  const plan: Plan = { checks, file: inputs.executable, argv: decision.argv.slice(0, 1), env: env.map((entry) => entry.replaceAll(decision.dir, PLAN_DIR_MARK)), fastPath: decision.fastPath };
  try {
    writeCacheFile(planFile, encodePlan(plan), MAX_PLANS);
    debug('plan written: %s', planFile);
  } catch {
    // Best effort: the next start decides anew.
  }
}

/** The first way this start's decision differs from the plan its program started from, or undefined. */
export function planDifference(start: PlannedStart, decision: { file: string | undefined; argv: string[]; env: Record<string, string>; fastPath: Buffer }): string | undefined {
  const { plan } = start;
  if (!plan || !start.fastPath) return 'its plan is gone';
  const started = [...plan.argv, ...(requestArguments()?.slice(1) ?? [])];
  if (plan.file !== decision.file || started.join('\0') !== decision.argv.join('\0')) return 'the program is another file';
  const planned = new Map(plan.env.map((entry) => entry.replaceAll(PLAN_DIR_MARK, start.dir)).map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]));
  const names = new Set([...planned.keys(), ...Object.keys(decision.env)]);
  for (const name of names) if (planned.get(name) !== decision.env[name]) return `its variable ${name} differs`;
  if (!start.fastPath.equals(decision.fastPath)) return 'the layer\'s rules differ';
  return undefined;
}

/** The program's word and arguments as the trampoline saw them (layer/src/plan.c's program_word). */
function requestArguments(): string[] | undefined {
  const at = programWordAt(process.argv, process.argv.indexOf('exec') + 1);
  return at < 0 ? undefined : process.argv.slice(at);
}

/** Removes the plan that led to a start this CLI stopped. */
export function dropPlan(start: PlannedStart): void {
  removeFile(start.planFile);
}

function planChecks(inputs: PlanInputs): PlanCheck[] | undefined {
  const checks: PlanCheck[] = [];
  const content = (file: string) => checks.push({ kind: 'content', subject: file, expected: readFileSync(file) });
  const absent = (file: string) => checks.push({ kind: 'absent', subject: file, expected: Buffer.alloc(0) });
  const identity = (file: string) => checks.push({ kind: 'identity', subject: file, expected: fileIdentity(file) });
  try {
    // This build: its bundles and its layer.
    identity(fileURLToPath(new URL('../../bundles.json', import.meta.url)));
    identity(inputs.layer);
    // The configuration: -f's file, or the first of the default places that holds one, the ones before it empty.
    if (inputs.configFile !== undefined) content(resolve(inputs.cwd, inputs.configFile));
    else for (const file of defaultConfigFiles.map((name) => join(inputs.cwd, name))) file === inputs.source ? content(file) : absent(file);
    if (inputs.envFile !== undefined) content(resolve(inputs.cwd, inputs.envFile));
    // The program's place on PATH (static-binary.ts, whichSync): no directory before its own holds one of that name.
    if (!inputs.command.includes('/')) {
      for (const dir of (inputs.path ?? '').split(delimiter)) {
        const file = resolve(inputs.cwd, dir || '.', inputs.command);
        if (file === inputs.executable) break;
        absent(file);
      }
    }
    // The target: the same process, and the environment it was started with.
    const start = startTime(inputs.targetPid);
    if (start === undefined) return undefined;
    checks.push({ kind: 'start', subject: String(inputs.targetPid), expected: Buffer.from(start) });
    if (inputs.targetEnv) content(`/proc/${inputs.targetPid}/environ`);
    // Its mounts, which the layer's rules follow (target-mounts.ts): a volume mounted since is a new decision.
    content(`/proc/${inputs.targetPid}/mountinfo`);
  } catch {
    return undefined;
  }
  return checks;
}

/** A file's identity as the trampoline writes it (DP_CHECK_IDENTITY): device, inode, size, modification time. */
export function fileIdentity(file: string): Buffer {
  const { dev, ino, size, mtimeNs } = statSync(file, { bigint: true });
  return Buffer.from(`${dev} ${ino} ${size} ${mtimeNs / 1_000_000_000n} ${mtimeNs % 1_000_000_000n}`);
}

/** What `read` gives, or undefined where it throws (a file gone, a plan broken). */
function attempt<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch {
    return undefined;
  }
}
