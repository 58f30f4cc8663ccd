// Checks, before anything is built or started, that this machine has what the cluster needs.
import { existsSync } from 'node:fs';
import process from 'node:process';
import { output } from './system.ts';

const minimumGo = { major: 1, minor: 25 };

/** Each need, and the Debian package that brings it. */
const needs: { path: string; from: string }[] = [
  { path: 'gcc', from: 'gcc and libc6-dev' },
  { path: '/usr/bin/containerd', from: 'containerd' },
  { path: 'ctr', from: 'containerd' },
  { path: 'runc', from: 'runc' },
  { path: '/usr/lib/cni/bridge', from: 'containernetworking-plugins' },
  { path: 'openssl', from: 'openssl' },
  { path: 'iptables', from: 'iptables' },
  { path: 'conntrack', from: 'conntrack' },
  { path: 'nfacct', from: 'nfacct' },
  { path: '/bin/busybox', from: 'busybox-static' },
  { path: 'tar', from: 'tar' },
];

function found(need: string): boolean {
  if (need.startsWith('/')) return existsSync(need);
  return output('sh', ['-c', `command -v ${need}`]).trim() !== '';
}

/** Returns one line per missing need; empty when all is there. */
export function missingPrerequisites(): string[] {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('not root: the cluster needs root (namespaces, mounts, iptables)');
  for (const need of needs) {
    if (!found(need.path)) problems.push(`${need.path} not found: install ${need.from}`);
  }
  if (!output('gcc', ['-print-file-name=libc.a']).includes('/')) problems.push('no static libc for the pause image: install libc6-dev');
  const go = /go(\d+)\.(\d+)/.exec(output('go', ['env', 'GOVERSION']));
  if (!go || Number(go[1]) < minimumGo.major || (Number(go[1]) === minimumGo.major && Number(go[2]) < minimumGo.minor)) {
    problems.push(`Go ${minimumGo.major}.${minimumGo.minor} or newer not found on PATH (CoreDNS needs it; Debian's golang-go is older): install a Go toolchain`);
  }
  return problems;
}
