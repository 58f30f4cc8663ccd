// Builds the demo pod from unnamed namespaces that the demo's own children hold, so they vanish with those children.
// `setpriv --pdeathsig KILL` ends each child when the demo dies, however it dies; the veth pair goes with its namespaces.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { extname } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { DoppelError } from '../errors.ts';
import { createLogTail } from '../platform/log-tail.ts';
import { addUnreachableRoute, removeUnreachableRoute } from './host-route.ts';
import type { PodAppSetup } from './pod-app.ts';
import type { PodSpec } from './pod-spec.ts';

export interface Pod {
  /** The pod's app: what `doppel exec --target process/PID` names. */
  readonly pid: number;
  /** The cluster-only service, in a network namespace of its own. */
  readonly servicePid: number;
  destroy(): Promise<void>;
}

const READY_TIMEOUT_MS = 10_000;

/** A program of this folder, as built (`.js`) or as source (`.ts`), whichever this module is. */
export function demoScript(name: string): string {
  return fileURLToPath(new URL(`./${name}${extname(fileURLToPath(import.meta.url))}`, import.meta.url));
}

export async function buildPod(spec: PodSpec, owner: number, signal: AbortSignal): Promise<Pod> {
  const children: ChildProcess[] = [];
  // The last resort when the demo exits without destroy() (a crash): no awaiting is possible there.
  const killNow = () => {
    for (const child of children) child.kill('SIGKILL');
    removeUnreachableRoute(owner);
  };
  process.once('exit', killNow);
  let destroying: Promise<void> | undefined;
  const destroy = () => {
    destroying ??= (async () => {
      for (const child of children) child.kill('SIGKILL');
      await Promise.all(children.map(exited));
      removeUnreachableRoute(owner);
      process.off('exit', killNow);
    })();
    return destroying;
  };

  try {
    addUnreachableRoute(owner);
    const service = startChild(children, 'the orders service', ['unshare', '--net', '--', process.execPath, demoScript('orders-service'), String(spec.service.port), spec.service.answer], { PATH: spec.env.PATH ?? '' });
    const app = startChild(children, 'the pod\'s app', ['unshare', '--net', '--mount', '--propagation', 'private', '--', process.execPath, demoScript('pod-app')], spec.env);
    const setup: PodAppSetup = { mountPoint: spec.mountPoint, mountSource: spec.mountSource, file: spec.file, resolver: spec.resolver };
    app.child.stdin!.write(`${JSON.stringify(setup)}\n`);
    await Promise.all([service.ready('listening', signal), app.ready('ready', signal)]);
    const pid = app.child.pid!;
    const servicePid = service.child.pid!;
    link(spec, pid, servicePid);
    return { pid, servicePid, destroy };
  } catch (error) {
    await destroy();
    throw error;
  }
}

/** The pod's eth0 and the service's eth0 are the two ends of one veth pair: the only way into the service. */
function link(spec: PodSpec, pid: number, servicePid: number): void {
  const inPod = (...args: string[]) => ipIn(pid, args);
  const inService = (...args: string[]) => ipIn(servicePid, args);
  inPod('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(servicePid));
  inPod('addr', 'add', `${spec.podAddress}/${spec.prefix}`, 'dev', 'eth0');
  inPod('link', 'set', 'eth0', 'up');
  inPod('link', 'set', 'lo', 'up');
  inService('addr', 'add', `${spec.service.address}/${spec.prefix}`, 'dev', 'eth0');
  inService('addr', 'add', `${spec.nameserver}/${spec.prefix}`, 'dev', 'eth0');
  inService('link', 'set', 'eth0', 'up');
  inService('link', 'set', 'lo', 'up');
}

function ipIn(pid: number, args: string[]): void {
  const result = spawnSync('nsenter', [`--net=/proc/${pid}/ns/net`, '--', 'ip', ...args], { encoding: 'utf8' });
  if (result.status !== 0) {
    throw new DoppelError('E_DEMO_SETUP', `could not link the pod to its service: ip ${args.join(' ')}: ${(result.stderr || result.error?.message || '').trim()}`, {
      category: 'usage',
      hint: 'the demo needs iproute2 with veth support and root',
    });
  }
}

interface Started {
  child: ChildProcess;
  /** Resolves when the child prints `line`; fails if it exits, takes too long, or the demo is interrupted. */
  ready(line: string, signal: AbortSignal): Promise<void>;
}

function startChild(children: ChildProcess[], what: string, command: string[], env: Record<string, string>): Started {
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', ...command], { stdio: ['pipe', 'pipe', 'pipe'], env });
  children.push(child);
  const said = createLogTail(10);
  child.stderr!.on('data', (chunk: Buffer) => said.push(chunk));
  child.on('error', () => {});
  child.stdin!.on('error', () => {});
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  return {
    child,
    ready: (line, signal) =>
      new Promise<void>((resolve, reject) => {
        const fail = (how: string) => {
          cleanup();
          reject(new DoppelError('E_DEMO_SETUP', `${what} ${how}${said.text() ? `: ${said.text().split('\n').at(-1)}` : ''}`, { category: 'usage', hint: 'the demo needs root, util-linux (unshare, setpriv, mount) and iproute2' }));
        };
        const onData = () => {
          if (out.split('\n').includes(line)) {
            cleanup();
            resolve();
          }
        };
        const onExit = (code: number | null, how: NodeJS.Signals | null) => fail(how ? `was killed by ${how}` : `exited with code ${code}`);
        const onAbort = () => {
          cleanup();
          reject(signal.reason);
        };
        const timer = setTimeout(() => fail(`did not start within ${READY_TIMEOUT_MS / 1000}s`), READY_TIMEOUT_MS);
        const cleanup = () => {
          clearTimeout(timer);
          child.stdout!.off('data', onData);
          child.off('exit', onExit);
          signal.removeEventListener('abort', onAbort);
        };
        child.stdout!.on('data', onData);
        child.once('exit', onExit);
        signal.addEventListener('abort', onAbort, { once: true });
        if (signal.aborted) onAbort();
        else onData();
      }),
  };
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}
