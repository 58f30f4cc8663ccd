// Runs `bin/doppel demo` as a user would, inside a network namespace of the test's own, and finds what a run left behind.
// The namespace keeps the sample's plain name lookup off the network (the host's resolver may be another machine), and
// lets the test see every route and link the demo made, since it makes them in the namespace it runs in.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { alive } from '../support/process-alive.ts';

const doppelBin = fileURLToPath(new URL('../../bin/doppel', import.meta.url));

export interface Netns {
  pid: number;
  /** Runs a command in the namespace and returns its output. */
  run(command: string[]): string;
  close(): Promise<void>;
}

/** A network namespace with only `lo`, held by a `sleep` that dies with the test. */
export async function createNetns(): Promise<Netns> {
  const holder = spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'unshare', '--net', '--', 'sleep', 'infinity'], { stdio: 'ignore' });
  const pid = holder.pid!;
  const own = readlinkNet('self');
  for (let i = 0; i < 200 && readlinkNet(String(pid)) === own; i++) await delay(10);
  const run = (command: string[]) => execFileSync('nsenter', [`--net=/proc/${pid}/ns/net`, '--', ...command], { encoding: 'utf8' });
  run(['ip', 'link', 'set', 'lo', 'up']);
  return {
    pid,
    run,
    close: async () => {
      holder.kill('SIGKILL');
      if (holder.exitCode === null && holder.signalCode === null) await new Promise((resolve) => holder.once('exit', resolve));
    },
  };
}

export interface DemoRun {
  child: ChildProcess;
  /** Marks every process of this run that keeps the caller's environment (doppel exec, the agent, the sample). */
  marker: string;
  stdout(): string;
  stderr(): string;
  finished: Promise<{ status: number | null; signal: NodeJS.Signals | null }>;
}

/** `group`: the demo leads a process group of its own, as a shell's foreground job does, so Ctrl-C can be sent to all of it. */
export function startDemo(netns: Netns, options: { uid?: number; group?: boolean; path?: string } = {}): DemoRun {
  const marker = randomBytes(6).toString('hex');
  const asUser = options.uid === undefined ? [] : ['setpriv', `--reuid=${options.uid}`, `--regid=${options.uid}`, '--clear-groups', '--'];
  // nsenter and bin/doppel exec, so the child's PID is the demo's own: the PID its route carries.
  const child = spawn('nsenter', [`--net=/proc/${netns.pid}/ns/net`, '--', ...asUser, doppelBin, 'demo'], {
    env: { ...process.env, ...(options.path === undefined ? {} : { PATH: options.path }), DEMO_TEST_RUN: marker },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: options.group === true,
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const finished = new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal });
    }),
  );
  return { child, marker, stdout: () => out, stderr: () => err, finished };
}

export async function waitUntil(what: string, ready: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(20);
  }
}

/** What the demo printed about its pod: the PIDs, and the values only the pod has. */
export function podFacts(stdout: string): { podPid: number; servicePid: number; podName: string; answerId: string } {
  const podPid = /The pod is process (\d+)/.exec(stdout)?.[1];
  const servicePid = /cluster-only service .*\(process (\d+)\)/.exec(stdout)?.[1];
  const podName = /POD_NAME=(\S+)/.exec(stdout)?.[1];
  const answerId = /served by (orders-[0-9a-f]+)/.exec(stdout)?.[1];
  return { podPid: Number(podPid), servicePid: Number(servicePid), podName: podName ?? '', answerId: answerId ?? '' };
}

/** The side-by-side table: for each row, the plain cell and the doppel cell (columns are two or more spaces apart). */
export function table(stdout: string): Record<string, { plain: string; doppel: string }> {
  const rows: Record<string, { plain: string; doppel: string }> = {};
  for (const line of stdout.split('\n')) {
    const [label, plain, doppel] = line.trim().split(/\s{2,}/);
    if (['variable', 'file', 'name', 'service'].includes(label ?? '') && plain !== undefined && doppel !== undefined) rows[label!] = { plain, doppel };
  }
  return rows;
}

export interface Leftovers {
  processes: string[];
  mounts: string[];
  routes: string[];
  links: string[];
  tempEntries: string[];
}

/**
 * What one demo run (PID `demoPid`) left: processes carrying its marker or the pod's name, its pod and service,
 * mounts of its tmpfs in any mount namespace, its route and any link in the namespace it ran in, and socket
 * directories of dead doppel processes that appeared since `tempBefore`.
 */
export function leftovers(netns: Netns, run: { demoPid: number; marker: string; podPid: number; servicePid: number; podName: string }, tempBefore: Set<string>): Leftovers {
  const processes: string[] = [];
  const mounts: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const environ = readOr(`/proc/${entry}/environ`);
    const cmdline = readOr(`/proc/${entry}/cmdline`).replaceAll('\0', ' ').trim();
    if (environ.includes(`DEMO_TEST_RUN=${run.marker}\0`) || environ.includes(`POD_NAME=${run.podName}\0`) || [run.podPid, run.servicePid].includes(Number(entry))) {
      if (cmdline !== '') processes.push(`${entry}: ${cmdline}`);
    }
    if (readOr(`/proc/${entry}/mountinfo`).includes(`doppel-demo-${run.demoPid} `)) mounts.push(`mount namespace of process ${entry}`);
  }
  const routes = netns.run(['ip', 'route', 'show', 'type', 'unreachable']).split('\n').filter((line) => new RegExp(`metric ${run.demoPid}\\b`).test(line));
  const links = netns.run(['ip', '-o', 'link', 'show']).split('\n').filter((line) => line.trim() !== '' && !/^\d+: lo:/.test(line));
  const tempEntries = readdirSync(tmpdir()).filter((entry) => {
    const owner = /^doppel-(\d+)-/.exec(entry)?.[1];
    return !tempBefore.has(entry) && owner !== undefined && !alive(Number(owner));
  });
  return { processes, mounts, routes, links, tempEntries };
}

export function tempEntries(): Set<string> {
  return new Set(readdirSync(tmpdir()));
}

const nothing = (found: Leftovers) => Object.values(found).every((list: string[]) => list.length === 0);

/** Polls until `settled` (by default: nothing left) or the time is up, since processes take a moment to go after their parent. */
export async function leftoversAfter(args: Parameters<typeof leftovers>, settled = nothing): Promise<Leftovers> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const found = leftovers(...args);
    if (settled(found) || Date.now() > deadline) return found;
    await delay(50);
  }
}

export const none: Leftovers = { processes: [], mounts: [], routes: [], links: [], tempEntries: [] };

function readOr(path: string): string {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return '';
  }
}

function readlinkNet(pid: string): string {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return '';
  }
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
