// Runs the real doppel CLI (bin/doppel, the built dist/) the way a user does, and collects what it printed.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const doppelBin = fileURLToPath(new URL('../../bin/doppel', import.meta.url));

export interface Finished {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
  /** A command that execs its arguments (so the PID stays the CLI's), put in front of bin/doppel. */
  wrap?: string[];
  /** Leave stdin open: the test writes to the child's stdin and ends it. */
  openStdin?: boolean;
}

const started: number[] = [];

/** The PIDs of every doppel CLI this test process started (bin/doppel execs node, so the PID is the CLI's). */
export const startedDoppels = (): readonly number[] => started;

export function startDoppel(args: string[], options: RunOptions = {}): { child: ChildProcess; finished: Promise<Finished> } {
  const [command, ...rest] = [...(options.wrap ?? []), doppelBin, ...args];
  const child = spawn(command!, rest, { env: options.env ?? process.env, cwd: options.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
  if (child.pid !== undefined) started.push(child.pid);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  if (options.input !== undefined) child.stdin!.end(options.input);
  else if (!options.openStdin) child.stdin!.end();
  // A program that outlives a killed doppel would hold the pipes open; drop them so 'close' still comes.
  const timer = setTimeout(() => {
    child.kill('SIGKILL');
    child.stdout!.destroy();
    child.stderr!.destroy();
  }, options.timeoutMs ?? 60_000);
  const finished = new Promise<Finished>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
  return { child, finished };
}

export function runDoppel(args: string[], options: RunOptions = {}): Promise<Finished> {
  return startDoppel(args, options).finished;
}

/** `doppel exec --target process/PID -q -- COMMAND...` */
export function execIn(pid: number, command: string[], options: RunOptions & { flags?: string[] } = {}): Promise<Finished> {
  return runDoppel(['exec', '--target', `process/${pid}`, '-q', ...(options.flags ?? []), '--', ...command], options);
}

/** The stdout of a run that must have succeeded; a failure shows its status and both streams. */
export function ok(result: Finished): string {
  assert.equal(result.status, 0, `doppel exited ${result.status}${result.signal ? ` (${result.signal})` : ''}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  return result.stdout;
}
