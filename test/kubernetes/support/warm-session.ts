// Warm session hosts of Kubernetes targets (src/warm/) seen from a test: their processes and launch sockets, and a
// request that has one give its agent back (parked, as a CLI that comes before a host is up finds it).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { askHost, warmDir } from '../../e2e/warm-host.ts';
import { poll } from './cluster.ts';

/** The PIDs of the hosts started for `--target <target>` (names unique to a test file: the namespace is not in them). */
export function kubeHosts(target: string): number[] {
  try {
    return execFileSync('pgrep', ['-f', `warm/session-host\\.(js|ts) --target ${target}( |$)`], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export const launchSocket = (hostPid: number) => `launch-kube-${hostPid}.sock`;
/** In `dir`: root's warm directory unless the test's user is another (src/platform/process/warm-path.ts). */
export const hasLaunchSocket = (hostPid: number, dir = warmDir) => existsSync(join(dir, launchSocket(hostPid)));

/** The one host of `target`, once it listens. */
export const hostOf = (target: string, dir = warmDir) =>
  poll(`a warm session host of ${target}`, async () => {
    const hosts = kubeHosts(target);
    return hosts.length === 1 && hasLaunchSocket(hosts[0]!, dir) ? hosts[0] : undefined;
  }, 30_000);

/** Waits until the host and its launch socket are gone. */
export const hostGone = (hostPid: number, timeoutMs = 30_000, dir = warmDir) =>
  poll(`host ${hostPid} and its launch socket to go`, async () => (isRunning(hostPid) || hasLaunchSocket(hostPid, dir) ? undefined : true), timeoutMs);

/** Has the host of `target` give its agent back (a request with another configuration), so that it waits parked. */
export async function hostGivesBack(target: string, flags: string[], env: NodeJS.ProcessEnv): Promise<void> {
  const host = await hostOf(target);
  await askHost(launchSocket(host), { pid: process.pid, args: ['exec', '--target', target, ...flags, '--env-exclude', 'NOT_THE_SESSIONS_FILTER', '--', 'true'], env });
  await hostGone(host);
}

export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
