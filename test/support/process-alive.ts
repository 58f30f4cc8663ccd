// Whether a process exists: the product's own check (signal 0 reaches it, or it exists as someone else's).
export { isAlive as alive } from '../../src/process-alive.ts';

/**
 * SIGKILL to each, as a crash would. One already gone is no error: killing a PID namespace's first
 * process takes the rest of the namespace with it, so a listed pid may be gone by its turn.
 */
export function killAll(pids: Iterable<number>): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
  }
}
