// Small synchronous wrappers for the host commands the cluster scripts use.
import { execFileSync, spawnSync } from 'node:child_process';

/** Runs a command and returns its stdout; throws with its stderr on failure. */
export function cmd(command: string, args: string[], input?: string): string {
  const result = spawnSync(command, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
  if (result.error) throw new Error(`${command}: ${result.error.message}`);
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')}: ${(result.stderr || result.stdout).trim() || `exit ${result.status}`}`);
  }
  return result.stdout;
}

/** Runs a command whose failure is expected and harmless (removing something already gone). */
export function tryCmd(command: string, args: string[]): boolean {
  return spawnSync(command, args, { stdio: 'ignore' }).status === 0;
}

export function output(command: string, args: string[]): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return '';
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
