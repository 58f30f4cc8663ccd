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

/** The chains the kernel creates with each table; they outlive every user once the table is loaded. */
const builtinChains = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

/**
 * The rules and chains that `iptables-save` text holds beyond what a loaded table always has, one line each, named by
 * tool and table. A built-in chain counts only when its policy is not ACCEPT; a table with nothing else disappears,
 * so a host where no table was ever loaded compares equal to one where the kernel has since loaded empty tables.
 */
export function significantRules(tool: string, save: string): string[] {
  let table = '';
  const lines: string[] = [];
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) table = line.slice(1);
    else if (line.startsWith(':')) {
      const [chain, policy] = line.slice(1).split(' ');
      if (!builtinChains.has(chain ?? '') || policy !== 'ACCEPT') lines.push(`${tool} ${table}: :${chain} ${policy}`);
    } else if (line.startsWith('-')) lines.push(`${tool} ${table}: ${line}`);
  }
  return lines;
}

function rules(): string[] {
  return ['iptables-save', 'ip6tables-save'].flatMap((tool) => significantRules(tool, output(tool, [])));
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
