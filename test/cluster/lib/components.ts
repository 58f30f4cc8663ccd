// Starts each cluster component as a detached process with its own log, and waits for it to be ready.
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, writeFileSync, closeSync } from 'node:fs';
import path from 'node:path';
import { alive } from '../../support/process-alive.ts';
import { logDir, stateDir } from './settings.ts';
import { StepError } from './steps.ts';
import { sleep } from './system.ts';

export const pidDir = path.join(stateDir, 'pids');

export interface Component {
  name: string;
  pid: number;
  log: string;
}

/** Starts `command` in its own session so it outlives this script; `down` finds it again by pid file. */
export function start(name: string, command: string, args: string[], env: Record<string, string> = {}): Component {
  mkdirSync(logDir, { recursive: true });
  mkdirSync(pidDir, { recursive: true });
  const log = path.join(logDir, `${name}.log`);
  const fd = openSync(log, 'a');
  const child = spawn(command, args, {
    detached: true,
    stdio: ['ignore', fd, fd],
    env: { ...process.env, ...env },
  });
  closeSync(fd);
  if (child.pid === undefined) throw new StepError(`${name} did not start`, log);
  child.unref();
  writeFileSync(path.join(pidDir, `${name}.pid`), `${child.pid}\n`);
  return { name, pid: child.pid, log };
}

/** Polls `ready` until it is true; fails early, with the log, if the component exits. */
export async function waitReady(component: Component, what: string, ready: () => Promise<boolean> | boolean, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!alive(component.pid)) throw new StepError(`${component.name} exited before ${what}`, component.log);
    if (await ready()) return;
    await sleep(250);
  }
  throw new StepError(`${component.name}: no ${what} after ${timeoutMs / 1000}s`, component.log);
}
