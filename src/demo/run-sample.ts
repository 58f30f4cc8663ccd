// Runs the sample program twice: plainly on this machine, and under `doppel exec --target process/PID` against the pod.
import { spawn } from 'node:child_process';
import { dirname, extname } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { DoppelError } from '../errors.ts';
import { createLogTail } from '../platform/log-tail.ts';
import { demoScript } from './pod.ts';
import type { PodSpec } from './pod-spec.ts';
import type { SampleReport } from './sample-program.ts';

const SAMPLE_TIMEOUT_MS = 30_000;

export const sampleProgram = demoScript('sample-program');
const cliEntry = fileURLToPath(new URL(`../cli/entry${extname(fileURLToPath(import.meta.url))}`, import.meta.url));

export function sampleArguments(spec: PodSpec): string[] {
  return [spec.variable, spec.file.path, spec.service.url];
}

export function runPlain(spec: PodSpec, signal: AbortSignal): Promise<SampleReport> {
  return runSample('on this machine', ['KILL', process.execPath, sampleProgram, ...sampleArguments(spec)], signal);
}

export function runUnderDoppel(spec: PodSpec, pid: number, signal: AbortSignal): Promise<SampleReport> {
  // SIGTERM, not SIGKILL, if the demo dies: doppel exec then stops its program and agent and removes its socket directory.
  const exec = [process.execPath, cliEntry, 'exec', '--target', `process/${pid}`, '--quiet', '--', process.execPath, sampleProgram, ...sampleArguments(spec)];
  return runSample('under doppel exec', ['TERM', ...exec], signal);
}

/** The demo's own settings must not bend: the user's DOPPEL_* and MIRRORD_* variables are left out. */
function neutralEnvironment(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(DOPPEL|MIRRORD)_/.test(name)));
}

function runSample(where: string, [deathSignal, ...command]: string[], signal: AbortSignal): Promise<SampleReport> {
  // The sample's own folder as working directory: no project config file of the user's is found there.
  const child = spawn('setpriv', ['--pdeathsig', deathSignal!, '--', ...command], { cwd: dirname(sampleProgram), env: neutralEnvironment(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const said = createLogTail(10);
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr!.on('data', (chunk: Buffer) => said.push(chunk));
  let timedOut = false;
  const stop = () => child.kill('SIGTERM');
  const timer = setTimeout(() => {
    timedOut = true;
    stop();
  }, SAMPLE_TIMEOUT_MS);
  signal.addEventListener('abort', stop, { once: true });
  return new Promise((resolve, reject) => {
    child.once('error', (error) => reject(failed(where, error.message, '')));
    // 'close', not 'exit': stdout is complete only then, and a stopped child has gone by then.
    child.once('close', (code, how) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', stop);
      if (signal.aborted) return reject(signal.reason);
      try {
        if (code === 0) return resolve(JSON.parse(out) as SampleReport);
      } catch {
        // falls through to the failure below, with what it printed
      }
      const ended = timedOut ? `did not finish within ${SAMPLE_TIMEOUT_MS / 1000}s` : how ? `was stopped by ${how}` : `exited with code ${code}`;
      reject(failed(where, ended, said.text() || out));
    });
  });
}

function failed(where: string, how: string, said: string): DoppelError {
  const last = said.split('\n').filter((line) => line.trim() !== '').at(-1);
  return demoFailed(`the sample program ${where} ${how}${last ? `: ${last}` : ''}`);
}

export function demoFailed(message: string): DoppelError {
  return new DoppelError('E_DEMO_FAILED', message, {
    category: 'internal',
    hint: 'the demo only runs parts of doppel that should work on any Linux machine: please report this, with the output above',
  });
}
