// The demo pod's app: run inside fresh network and mount namespaces, it mounts its private files and resolver, then idles.
// It reads its setup as one JSON line on stdin, prints "ready", and exits when stdin ends (the demo is gone).
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import process from 'node:process';
import { createInterface } from 'node:readline';

// The demo imports this as a type only: importing this module would run it.
export interface PodAppSetup {
  mountPoint: string;
  mountSource: string;
  file: { path: string; content: string };
  resolver: { hosts: string; resolvConf: string };
}

function mount(...args: string[]): void {
  const result = spawnSync('mount', args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`mount ${args.join(' ')}: ${(result.stderr || result.error?.message || '').trim()}`);
}

function setUp({ mountPoint, mountSource, file, resolver }: PodAppSetup): void {
  // The namespace is private (unshare's default), so none of these mounts reach the host.
  mount('-t', 'tmpfs', '-o', 'mode=0755,size=1m', mountSource, mountPoint);
  mkdirSync(dirname(file.path), { recursive: true });
  writeFileSync(file.path, file.content);
  const etc = `${mountPoint}/.resolver`;
  mkdirSync(etc);
  writeFileSync(`${etc}/hosts`, resolver.hosts);
  writeFileSync(`${etc}/resolv.conf`, resolver.resolvConf);
  mount('--bind', `${etc}/hosts`, '/etc/hosts');
  mount('--bind', `${etc}/resolv.conf`, '/etc/resolv.conf');
}

const lines = createInterface({ input: process.stdin });
let setupDone = false;
lines.on('line', (line) => {
  if (setupDone) return;
  setupDone = true;
  try {
    setUp(JSON.parse(line) as PodAppSetup);
    process.stdout.write('ready\n');
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exit(1);
  }
});
lines.on('close', () => process.exit(0));
