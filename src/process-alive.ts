// Whether a process runs, by its pid in our PID namespace: shared by the CLI and the process platform's agent, which
// runs in the CLI's PID namespace (it enters only the target's network namespace).
import { readFileSync } from 'node:fs';
import process from 'node:process';

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
