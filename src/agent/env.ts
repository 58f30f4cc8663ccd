// The target's environment, read from /proc/PID/environ.
import { readFile } from 'node:fs/promises';

export async function readEnvironment(pid: number): Promise<Record<string, string>> {
  const raw = await readFile(`/proc/${pid}/environ`);
  const vars: Record<string, string> = {};
  for (const entry of raw.toString('utf8').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0) vars[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return vars;
}
