// Finds and removes everything a cluster run can leave on the host: processes, mounts, network
// namespaces, cgroups. `down` uses it to clean up and the test suite uses it to prove nothing is left.
import { existsSync, readFileSync, readdirSync, readlinkSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { cacheDir, containerd, stateDir } from './settings.ts';
import { alive, sleep, tryCmd } from './system.ts';

const runDir = path.dirname(containerd.state);
const netnsDir = '/run/netns';
const netnsBefore = path.join(stateDir, 'netns-before.json');

function read(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Processes of the cluster: its binaries, anything started with its paths, and everything in pod cgroups. */
export function clusterProcesses(): { pid: number; command: string }[] {
  const found: { pid: number; command: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = read(`/proc/${entry}/cmdline`).replace(/\0/g, ' ').trim();
    let exe = '';
    try {
      exe = readlinkSync(`/proc/${entry}/exe`);
    } catch {
      // kernel thread or gone
    }
    const ours =
      exe.startsWith(path.join(cacheDir, 'bin')) ||
      cmdline.includes(stateDir) ||
      cmdline.includes(runDir) ||
      /\/kubepods\b/.test(read(`/proc/${entry}/cgroup`));
    if (ours && (cmdline || exe)) found.push({ pid: Number(entry), command: cmdline || exe });
  }
  return found;
}

export async function killClusterProcesses(): Promise<void> {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    const targets = clusterProcesses();
    if (targets.length === 0) return;
    for (const { pid } of targets) {
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
    for (let i = 0; i < 100 && targets.some(({ pid }) => alive(pid)); i++) await sleep(100);
  }
}

function unescapeMount(field: string): string {
  return field.replace(/\\(\d{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Mount points under the cluster's directories and the pod network namespaces it created. */
export function clusterMounts(): string[] {
  const ownNetns = new Set(clusterNetns().map((name) => path.join(netnsDir, name)));
  return read('/proc/self/mountinfo')
    .split('\n')
    .map((line) => unescapeMount(line.split(' ')[4] ?? ''))
    .filter((mount) => mount.startsWith(`${stateDir}/`) || mount.startsWith(`${runDir}/`) || ownNetns.has(mount))
    .sort((a, b) => b.length - a.length);
}

export function unmountAll(): void {
  for (let pass = 0; pass < 5; pass++) {
    const mounts = clusterMounts();
    if (mounts.length === 0) return;
    for (const mount of mounts) tryCmd('umount', ['-l', mount]);
  }
}

function netnsNames(): string[] {
  return existsSync(netnsDir) ? readdirSync(netnsDir).filter((name) => name.startsWith('cni-')) : [];
}

/** Records the pod namespaces that exist before `up`, so `down` removes only the ones the cluster made. */
export function recordNetnsBefore(): void {
  if (!existsSync(netnsBefore)) writeFileSync(netnsBefore, JSON.stringify(netnsNames()));
}

export function clusterNetns(): string[] {
  const before = new Set<string>(existsSync(netnsBefore) ? (JSON.parse(read(netnsBefore)) as string[]) : []);
  return netnsNames().filter((name) => !before.has(name));
}

export function removeNetns(): void {
  for (const name of clusterNetns()) tryCmd('ip', ['netns', 'delete', name]);
}

/** kubelet's pod cgroups (cgroupfs driver): one `kubepods` tree per v1 controller. */
export function clusterCgroups(): string[] {
  const root = '/sys/fs/cgroup';
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .map((controller) => path.join(root, controller, 'kubepods'))
    .filter((dir) => existsSync(dir));
}

export function removeCgroups(): void {
  const remove = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) remove(path.join(dir, entry.name));
    }
    try {
      rmdirSync(dir);
    } catch {
      // still busy; reported by the leftover check
    }
  };
  for (const dir of clusterCgroups()) remove(dir);
}
