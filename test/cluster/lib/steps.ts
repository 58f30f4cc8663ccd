// Progress lines with elapsed time, and the last lines of the failing component's log when a step fails.
import { spawn } from 'node:child_process';
import { appendFileSync, closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import process from 'node:process';

const started = performance.now();

export class StepError extends Error {
  readonly logFile: string | undefined;
  constructor(message: string, logFile?: string) {
    super(message);
    this.logFile = logFile;
  }
}

function elapsed(): string {
  return `${((performance.now() - started) / 1000).toFixed(1).padStart(6)}s`;
}

export function say(line: string): void {
  process.stderr.write(`[${elapsed()}] ${line}\n`);
}

function logTail(file: string, lines = 30): string {
  if (!existsSync(file)) return `(no log at ${file})`;
  return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
}

export async function step<T>(name: string, work: () => Promise<T> | T): Promise<T> {
  const begin = performance.now();
  say(`${name} …`);
  try {
    const result = await work();
    say(`${name} done (${((performance.now() - begin) / 1000).toFixed(1)}s)`);
    return result;
  } catch (error) {
    const failure = error instanceof Error ? error.message : String(error);
    say(`${name} FAILED: ${failure}`);
    if (error instanceof StepError && error.logFile) {
      process.stderr.write(`--- last lines of ${error.logFile} ---\n${logTail(error.logFile)}\n---\n`);
    }
    throw error;
  }
}

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Output goes here (appended); a failure names it and shows its tail. */
  log: string;
}

/** Runs a command to completion with its output in a log file; rejects with the log attached. */
export function run(command: string, args: string[], options: RunOptions): Promise<void> {
  appendFileSync(options.log, `$ ${command} ${args.join(' ')}\n`);
  const fd = openSync(options.log, 'a');
  return new Promise<void>((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ['ignore', fd, fd] });
    child.on('error', (error) => reject(new StepError(`${command}: ${error.message}`, options.log)));
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new StepError(`${command} ${args[0] ?? ''} exited with ${signal ?? code}`, options.log));
    });
  }).finally(() => closeSync(fd));
}
