// What this test run's doppel sessions may leave behind: agent processes and proxy socket directories. Tests assert there is none.
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { warmPath } from '../../src/platform/process/warm-path.ts';
import { startedDoppels } from './run-doppel.ts';

export const agentProcesses = (pid: number): string[] => processes(`agent/main\\.(js|ts) --pid ${pid}( |$)`);

/** Warm session hosts of target `pid` (src/warm/session-host.ts). */
export const hostProcesses = (pid: number): string[] => processes(`warm/session-host\\.(js|ts) --pid ${pid}( |$)`);

/** Every agent and warm session host on this machine, of any target. */
export const everyAgentAndHost = (): string[] => processes('(agent/main|warm/session-host)\\.(js|ts) --');

function processes(pattern: string): string[] {
  let out = '';
  try {
    out = execFileSync('pgrep', ['-af', pattern], { encoding: 'utf8' });
  } catch {
    return [];
  }
  return out.split('\n').filter((line) => line.trim() !== '');
}

/**
 * Socket directories of the doppel CLIs this test process started (named `doppel-<CLI pid>-...`), not other runs', and
 * the socket and log of the agents bin/doppel started for them (`doppel-warm/early-<CLI pid>[-.]*`).
 */
export function proxyDirs(pids: readonly number[] = startedDoppels()): string[] {
  const ours = new Set(pids.map(String));
  const early = (() => {
    try {
      return readdirSync(warmPath()).filter((entry) => ours.has(/^early-(\d+)[-.]/.exec(entry)?.[1] ?? '')).map((entry) => `doppel-warm/${entry}`);
    } catch {
      return [];
    }
  })();
  return [...readdirSync(tmpdir()).filter((entry) => ours.has(/^doppel-(\d+)-/.exec(entry)?.[1] ?? '')), ...early];
}

/** Waits up to `ms` for the agents and warm session hosts of `pid` and our sessions' directories to be gone; returns what is still there. */
export async function leftoversAfter(pid: number, ms = 5000): Promise<{ agents: string[]; dirs: string[] }> {
  const deadline = Date.now() + ms;
  for (;;) {
    const agents = [...agentProcesses(pid), ...hostProcesses(pid)];
    const dirs = proxyDirs();
    if ((agents.length === 0 && dirs.length === 0) || Date.now() > deadline) return { agents, dirs };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
