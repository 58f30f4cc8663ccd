// Whether a process runs, by its pid in our PID namespace: shared by the CLI and the process platform's agent, which
// runs in the CLI's PID namespace (it enters only the target's network namespace).
import { readFileSync, readlinkSync } from 'node:fs';
import process from 'node:process';
import { processStat } from './agent/process-identity.ts';

/**
 * Whether this process is its PID namespace's first (a container's entry point, `unshare --pid --fork`): as it exits
 * the kernel kills every other process of the namespace, so nothing it would leave running (a session host) outlives
 * it.
 */
export const isPidNamespaceInit = (): boolean => process.pid === 1;

/**
 * Whether /proc shows our PID namespace: every end this CLI waits for (its program's, its agent's) is read there by
 * pid. `unshare --pid --fork` without `--mount-proc` keeps the outer namespace's, where our children's pids name others.
 */
export function procIsOurs(): boolean {
  try {
    return readlinkSync('/proc/self') === String(process.pid);
  } catch {
    return false;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    // It runs, as another user's.
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  return !isZombie(pid);
}

/**
 * One that has exited and waits for its parent to reap it: an agent or CLI whose parent died is reaped by the PID
 * namespace's init, which need not do so soon (a container's first process may never).
 */
function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2] === 'Z';
  } catch {
    return false;
  }
}

/**
 * A child of this process that Node.js did not spawn (bin/doppel started it, then became the CLI): running and not yet
 * a zombie. Once it exits it stays one, as nothing here reaps it.
 */
export function running(pid: number): boolean {
  const state = processStat(pid)?.state;
  return state !== undefined && state !== 'Z' && state !== 'X';
}

/**
 * Such a child's end, from one look at it: undefined while it runs, else its exit status as waitpid reports it
 * (undefined if something else reaped it). One look, not a look for the status and then one for whether it runs: a
 * child that exited between the two was taken for one reaped elsewhere, its status lost.
 */
export function childExit(pid: number): { status: number | undefined } | undefined {
  const stat = processStat(pid);
  if (stat !== undefined && stat.state !== 'Z' && stat.state !== 'X') return undefined;
  return { status: stat?.state === 'Z' ? stat.exitStatus : undefined };
}
