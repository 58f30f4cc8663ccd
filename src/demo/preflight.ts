// What the demo needs before it touches anything: root, and the tools any Linux machine has (iproute2, util-linux).
import { spawnSync } from 'node:child_process';
import process from 'node:process';
import { DoppelError } from '../errors.ts';

const tools: [command: string, pkg: string][] = [
  ['ip', 'iproute2'],
  ['unshare', 'util-linux'],
  ['nsenter', 'util-linux'],
  ['setpriv', 'util-linux'],
  ['mount', 'mount (util-linux)'],
];

export function checkDemoCanRun(): void {
  if (process.getuid?.() !== 0) {
    throw new DoppelError('E_DEMO_ROOT', 'the demo needs root: it builds a pod from network and mount namespaces on this machine', {
      category: 'permission',
      hint: 'run it with sudo: sudo ./dev demo (or sudo doppel demo)',
    });
  }
  for (const [command, pkg] of tools) {
    if (spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status !== 0) {
      throw new DoppelError('E_DEMO_SETUP', `the demo needs \`${command}\`, which is not on PATH`, { category: 'usage', hint: `install ${pkg}` });
    }
  }
  // --pdeathsig (util-linux 2.33, 2018) is what ends the pod when the demo is killed outright.
  if (!(spawnSync('setpriv', ['--help'], { encoding: 'utf8' }).stdout ?? '').includes('--pdeathsig')) {
    throw new DoppelError('E_DEMO_SETUP', 'the demo needs a setpriv with --pdeathsig (util-linux 2.33 or later)', { category: 'usage', hint: 'upgrade util-linux' });
  }
}
