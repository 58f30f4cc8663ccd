// Waits for a condition the system reaches on its own time (a process gone, a file made): polls, then fails by name.
import { setTimeout as delay } from 'node:timers/promises';

/** The first value `probe` gives that is not undefined, polled every 50 ms for at most `ms`. */
export async function until<T>(what: string, probe: () => T | undefined, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(50);
  }
}
