// A developer machine for the Kubernetes tests: a network namespace that reaches the test cluster's API server and
// nothing else of the cluster, as a laptop reaches a real one. This host is the cluster's node and reaches Service and
// pod addresses directly, so only from here does an answer prove it came through the pod. Its own /etc/hosts and
// resolv.conf (through `ip netns exec`'s /etc/netns/NAME) say which names resolve on the machine; its loopback is its own.
// Each command runs in a PID namespace of its own, as a laptop sees none of the node's processes: the CLI cannot take
// the node's target process for one of its machine's (src/platform/local-target.ts).
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { network } from '../../cluster/lib/settings.ts';

const name = 'doppel-dev-machine';
const hostSide = 'dpkdevh';
const machineSide = 'dpkdevm';
/** Inside the cluster's reserved 198.19.0.0/16, outside its node, Service and pod ranges. */
const link = { host: '198.19.32.1', machine: '198.19.32.2', prefix: 30 };
const etcDir = `/etc/netns/${name}`;

export interface DeveloperMachine {
  /** Put in front of a command (it execs), e.g. as runDoppel's `wrap`. */
  wrap: string[];
  /** A command on the machine, to its end; stdout and stderr together. */
  run(command: string[]): { status: number | null; stdout: string };
  /** A long-running process on the machine (a local server); killed by `remove`. */
  spawn(command: string[]): ChildProcess;
  remove(): void;
}

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });

function removeMachine(madeNetnsDir: boolean): void {
  // Deleting the namespace destroys the veth pair with it.
  if (existsSync(`/run/netns/${name}`)) ip('netns', 'del', name);
  rmSync(etcDir, { recursive: true, force: true });
  if (madeNetnsDir) rmSync('/etc/netns', { recursive: true, force: true });
}

/** `hosts`: lines for its /etc/hosts after localhost. Its resolver is a loopback port where nothing answers. */
export function createDeveloperMachine(hosts = ''): DeveloperMachine {
  // One at a time (the Kubernetes suites run one by one); whatever a killed run left goes first.
  removeMachine(false);
  const madeNetnsDir = !existsSync('/etc/netns');
  const children: ChildProcess[] = [];
  try {
    mkdirSync(etcDir, { recursive: true });
    writeFileSync(`${etcDir}/hosts`, `127.0.0.1 localhost\n${hosts}`);
    writeFileSync(`${etcDir}/resolv.conf`, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
    ip('netns', 'add', name);
    ip('link', 'add', hostSide, 'type', 'veth', 'peer', 'name', machineSide, 'netns', name);
    ip('addr', 'add', `${link.host}/${link.prefix}`, 'dev', hostSide);
    ip('link', 'set', hostSide, 'up');
    ip('-n', name, 'addr', 'add', `${link.machine}/${link.prefix}`, 'dev', machineSide);
    ip('-n', name, 'link', 'set', machineSide, 'up');
    ip('-n', name, 'link', 'set', 'lo', 'up');
    ip('-n', name, 'route', 'add', `${network.nodeIP}/32`, 'via', link.host);
  } catch (error) {
    removeMachine(madeNetnsDir);
    throw error;
  }
  const wrap = ['ip', 'netns', 'exec', name, 'unshare', '--pid', '--fork', '--kill-child', '--mount-proc'];
  return {
    wrap,
    run(command) {
      const done = spawnSync(wrap[0]!, [...wrap.slice(1), ...command], { encoding: 'utf8', timeout: 60_000 });
      return { status: done.status, stdout: `${done.stdout}${done.stderr}` };
    },
    spawn(command) {
      const child = spawn(wrap[0]!, [...wrap.slice(1), ...command], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(child);
      return child;
    },
    remove() {
      for (const child of children) child.kill('SIGKILL');
      removeMachine(madeNetnsDir);
    },
  };
}
