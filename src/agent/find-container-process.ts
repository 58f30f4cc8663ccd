// Finds the main process of a container on this node from its runtime id, by the cgroup paths in /proc (cgroup v1 and v2).
import { readdir, readFile } from 'node:fs/promises';

/** `containerd://abc…` or a bare id → the bare id. */
export function bareContainerId(id: string): string {
  return id.replace(/^[a-z-]+:\/\//, '');
}

async function cgroupOf(pid: string): Promise<string> {
  return readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => '');
}

async function parentOf(pid: string): Promise<string> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return /^PPid:\s+(\d+)$/m.exec(status)?.[1] ?? '0';
}

/**
 * The container's first process: of all processes whose cgroup path names the id, the one whose parent is not in
 * the container (the runtime's shim is the parent of the container's init). Undefined when no process matches.
 */
export async function findContainerProcess(containerId: string): Promise<number | undefined> {
  const id = bareContainerId(containerId);
  if (!/^[0-9a-f]{12,}$/.test(id)) return undefined;
  const pids = (await readdir('/proc')).filter((entry) => /^\d+$/.test(entry));
  const members = new Set<string>();
  for (const pid of pids) if ((await cgroupOf(pid)).includes(id)) members.add(pid);
  for (const pid of [...members].sort((a, b) => Number(a) - Number(b))) {
    if (!members.has(await parentOf(pid))) return Number(pid);
  }
  return undefined;
}
