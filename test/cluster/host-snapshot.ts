// What the host looks like from outside the cluster: compared before `up` and after `down`.
import { readFileSync } from 'node:fs';
import { nfacctNames } from './lib/leftovers.ts';
import { output } from './lib/system.ts';

export interface HostSnapshot {
  links: string[];
  netns: string[];
  routes: string[];
  mounts: string[];
  rules: string[];
  nfacct: string[];
}

/** iptables-save without counters and comments that vary from run to run. */
function rules(): string[] {
  return ['iptables-save', 'ip6tables-save'].flatMap((tool) =>
    output(tool, [])
      .split('\n')
      .filter((line) => line && !line.startsWith('#'))
      .map((line) => `${tool}: ${line.replace(/\[\d+:\d+\]/, '')}`),
  );
}

export function hostSnapshot(): HostSnapshot {
  return {
    links: output('ip', ['-o', 'link', 'show']).split('\n').map((l) => l.split(':')[1]?.trim() ?? '').filter(Boolean).sort(),
    netns: output('ip', ['netns', 'list']).split('\n').filter(Boolean).sort(),
    routes: output('ip', ['route', 'show', 'table', 'all']).split('\n').filter(Boolean).sort(),
    mounts: readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter(Boolean).sort(),
    rules: rules(),
    nfacct: nfacctNames().sort(),
  };
}
