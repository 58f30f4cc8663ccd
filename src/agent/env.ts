// What a session reads once about its target, first of all: its environment (/proc/PID/environ) and, on request,
// its /etc/hostname. Served before the other handlers load (see main.ts): the CLI's program waits for it.
import { readFileSync } from 'node:fs';
import type { Operations } from '../protocol/messages.ts';
import { resolveInRoot } from './root-path.ts';

/** Longer than any hostname's line: a file bigger than this is not one. */
const HOSTNAME_FILE_MAX = 256;

export async function targetEnvironment(pid: number, args: Operations['env']['args']): Promise<Operations['env']['result']> {
  const vars = readEnvironment(pid);
  if (args.hostname !== true) return { vars };
  const hostname = await readHostnameFile(`/proc/${pid}/root`);
  return hostname === undefined ? { vars } : { vars, hostname };
}

function readEnvironment(pid: number): Record<string, string> {
  const raw = readFileSync(`/proc/${pid}/environ`);
  const vars: Record<string, string> = {};
  for (const entry of raw.toString('utf8').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0) vars[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return vars;
}

/** The target's /etc/hostname as it reads, or undefined when it has none (or one no hostname could be). */
async function readHostnameFile(root: string): Promise<string | undefined> {
  try {
    const text = readFileSync((await resolveInRoot(root, '/etc/hostname', true)).host, 'utf8');
    return text.length <= HOSTNAME_FILE_MAX ? text : undefined;
  } catch {
    return undefined;
  }
}
