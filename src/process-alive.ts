// Whether a process runs, by its pid in our PID namespace: shared by the CLI and the process platform's agent, which
// runs in the CLI's PID namespace (it enters only the target's network namespace).
import process from 'node:process';

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // It runs, as another user's.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
