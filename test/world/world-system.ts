// The system calls of the test world: ip commands, and finding and removing worlds (ours or a dead run's).
import { execFileSync, spawnSync } from 'node:child_process';
import { alive } from '../support/process-alive.ts';

export function run(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function runQuiet(command: string, args: string[]): boolean {
  return spawnSync(command, args, { stdio: 'ignore' }).status === 0;
}

export function sh(script: string): string {
  return spawnSync('sh', ['-c', script], { encoding: 'utf8' }).stdout ?? '';
}

export function ip(...args: string[]): void {
  const result = spawnSync('ip', args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`test world: ip ${args.join(' ')}: ${result.stderr.trim()}`);
}

/** Worlds present on this machine, from their namespace names `dpw-<index>-<owner pid>-pod|svc`. */
export function netnsNames(): { index: number; name: string; owner: number }[] {
  const seen = new Map<string, { index: number; name: string; owner: number }>();
  for (const line of sh('ip netns list').split('\n')) {
    const match = /^(dpw-(\d+)-(\d+))-(pod|svc)\b/.exec(line);
    if (match) seen.set(match[1]!, { index: Number(match[2]), name: match[1]!, owner: Number(match[3]) });
  }
  return [...seen.values()];
}

/** The services' IPv6 range of world `index` (ULA, inside the namespaces only; the host has an unreachable route). */
export function servicesRange6(index: number): { prefix: string; range: string } {
  const prefix = `fd00:198:18:${(64 + index).toString(16)}::`;
  return { prefix, range: `${prefix}/64` };
}

/** Kills every process inside the world's namespaces, then removes namespaces, links and the route. */
export async function cleanupWorld(index: number, name: string): Promise<void> {
  for (const netns of [`${name}-pod`, `${name}-svc`]) {
    const pids = sh(`ip netns pids ${netns} 2>/dev/null`).split('\n').filter((line) => /^\d+$/.test(line));
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
    for (let i = 0; i < 100 && pids.some((pid) => alive(Number(pid))); i++) await new Promise((r) => setTimeout(r, 20));
    runQuiet('ip', ['netns', 'del', netns]);
  }
  runQuiet('ip', ['link', 'del', `dpw${index}h`]);
  runQuiet('ip', ['route', 'del', 'unreachable', `198.18.${64 + index}.0/24`]);
  runQuiet('ip', ['-6', 'route', 'del', 'unreachable', servicesRange6(index).range]);
}
