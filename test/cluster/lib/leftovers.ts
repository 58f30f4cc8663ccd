// Finds and removes everything a cluster run can leave on the host: processes, mounts, network
// namespaces, cgroups. `down` uses it to clean up and the test suite uses it to prove nothing is left.
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { alive, killAll } from '../../support/process-alive.ts';
import { cacheDir, containerd, stateDir } from './settings.ts';
import { cmd, output, sleep, tryCmd } from './system.ts';

const runDir = path.dirname(containerd.state);
const netnsDir = '/run/netns';
/** containerd 1.6 puts shim sockets here whatever its state directory; removed by `down` if `up` made it. */
const shimSocketDir = '/run/containerd';
const hostBeforeFile = path.join(stateDir, 'host-before.json');

/** What existed before `up`, so that `down` removes only what the cluster made. */
interface HostBefore {
  netns: string[];
  nfacct: string[];
  shimSocketDir: boolean;
  /** Whether /run/netns was a mount point of its own (`ip netns` makes it one the first time it runs). */
  netnsMount: boolean;
}

function hostBefore(): HostBefore | undefined {
  return existsSync(hostBeforeFile) ? (JSON.parse(read(hostBeforeFile)) as HostBefore) : undefined;
}

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

/**
 * Kills them all at once with SIGKILL: the cluster's state goes with it, so there is nothing to shut
 * down gracefully, and a pod's PID 1 ignores SIGTERM. Repeats until a scan finds none, since kubelet
 * or containerd may start something between the scan and the kill.
 */
export async function killClusterProcesses(): Promise<void> {
  for (let round = 0; round < 20; round++) {
    const targets = clusterProcesses();
    if (targets.length === 0) return;
    killAll(targets.map(({ pid }) => pid));
    for (let i = 0; i < 50 && targets.some(({ pid }) => alive(pid)); i++) await sleep(20);
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

export function recordHostBefore(): void {
  if (existsSync(hostBeforeFile)) return; // a crashed run's record holds the true original
  const before: HostBefore = { netns: netnsNames(), nfacct: nfacctNames(), shimSocketDir: existsSync(shimSocketDir), netnsMount: isMountPoint(netnsDir) };
  writeFileSync(hostBeforeFile, JSON.stringify(before));
}

export function removeShimSocketDir(): void {
  if (hostBefore()?.shimSocketDir === false) rmSync(shimSocketDir, { recursive: true, force: true });
}

export function clusterNetns(): string[] {
  const before = new Set(hostBefore()?.netns ?? []);
  return netnsNames().filter((name) => !before.has(name));
}

/** Packet counters (nfnetlink_acct) that kube-proxy's rules use; they outlive the rules. */
export function nfacctNames(): string[] {
  return [...output('nfacct', ['list']).matchAll(/= (\S+);$/gm)].map((m) => m[1]!);
}

export function clusterNfacct(): string[] {
  const before = new Set(hostBefore()?.nfacct ?? []);
  return nfacctNames().filter((name) => !before.has(name));
}

/** Runs after the rules that use them are gone: the kernel refuses to delete a counter in use. */
export function removeNfacct(): void {
  for (const name of clusterNfacct()) tryCmd('nfacct', ['delete', name]);
}

function isMountPoint(dir: string): boolean {
  return read('/proc/self/mountinfo')
    .split('\n')
    .some((line) => unescapeMount(line.split(' ')[4] ?? '') === dir);
}

/**
 * Makes /run/netns a shared mount point of its own before the runtime mounts pod network namespaces in it, as `ip
 * netns` does the first time it runs. Otherwise the first `ip netns add` after `up` (the test world's) bind-mounts the
 * directory over the runtime's mounts, which then cannot be unmounted by their path (seen in CI: a pod's network
 * namespace outlived `down` and every later run).
 */
export function shareNetnsDir(): void {
  mkdirSync(netnsDir, { recursive: true });
  if (!isMountPoint(netnsDir)) cmd('mount', ['--bind', netnsDir, netnsDir]);
  cmd('mount', ['--make-shared', netnsDir]);
}

/** Undoes shareNetnsDir when /run/netns was no mount point before `up` and no namespace is left in it. */
export function unshareNetnsDir(): void {
  if (hostBefore()?.netnsMount !== false || !isMountPoint(netnsDir) || readdirSync(netnsDir).length > 0) return;
  tryCmd('umount', [netnsDir]);
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
