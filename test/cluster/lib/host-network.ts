// The node's network on the host: an interface of its own for the node IP, routes that keep the cluster's
// ranges on this machine, a guard against pod traffic leaving it, and the sysctls the cluster needs.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { network, stateDir } from './settings.ts';
import { cmd, output, tryCmd } from './system.ts';

const guardChain = 'DOPPEL-CLUSTER-GUARD';

/**
 * Sysctls the cluster's parts change (ours, kubelet's and kube-proxy's). Their values before `up`
 * are saved and put back by `down`.
 */
const touchedSysctls = [
  'net.ipv4.ip_forward',
  'net.bridge.bridge-nf-call-iptables',
  'net.ipv4.conf.all.route_localnet',
  'vm.overcommit_memory',
  'vm.panic_on_oom',
  'kernel.panic',
  'kernel.panic_on_oops',
  'kernel.keys.root_maxkeys',
  'kernel.keys.root_maxbytes',
];
const sysctlSnapshot = path.join(stateDir, 'sysctl-before.json');

function sysctlPath(name: string): string {
  return path.join('/proc/sys', ...name.split('.'));
}

export function saveSysctls(): void {
  if (existsSync(sysctlSnapshot)) return; // a crashed run's snapshot holds the true original values
  const values: Record<string, string> = {};
  for (const name of touchedSysctls) {
    if (existsSync(sysctlPath(name))) values[name] = readFileSync(sysctlPath(name), 'utf8').trim();
  }
  writeFileSync(sysctlSnapshot, JSON.stringify(values, null, 2));
}

export function restoreSysctls(): void {
  if (!existsSync(sysctlSnapshot)) return;
  const values = JSON.parse(readFileSync(sysctlSnapshot, 'utf8')) as Record<string, string>;
  for (const [name, value] of Object.entries(values)) writeFileSync(sysctlPath(name), `${value}\n`);
}

export function setUpNetwork(): void {
  writeFileSync(sysctlPath('net.ipv4.ip_forward'), '1\n');
  if (existsSync(sysctlPath('net.bridge.bridge-nf-call-iptables'))) {
    writeFileSync(sysctlPath('net.bridge.bridge-nf-call-iptables'), '1\n');
  }
  // A bridge with no ports: this kernel has no dummy links, and a portless bridge holds an address
  // just as well and drops whatever is routed into it.
  cmd('ip', ['link', 'add', network.nodeInterface, 'type', 'bridge']);
  cmd('ip', ['addr', 'add', `${network.nodeIP}/32`, 'dev', network.nodeInterface]);
  cmd('ip', ['link', 'set', network.nodeInterface, 'up']);
  // Anything in the reserved range that nothing here serves is unreachable, never sent off the machine.
  cmd('ip', ['route', 'add', 'unreachable', network.reserved]);
  // Service addresses exist only as kube-proxy's NAT rules; a route into the node interface lets the
  // host itself dial them (the packet is rewritten before it would be dropped there).
  cmd('ip', ['route', 'add', network.serviceCIDR, 'dev', network.nodeInterface]);
  // Pods may talk to the cluster's own range and nothing else.
  cmd('iptables', ['-N', guardChain]);
  cmd('iptables', ['-A', guardChain, '-s', network.reserved, '!', '-d', network.reserved, '-j', 'REJECT']);
  cmd('iptables', ['-I', 'FORWARD', '1', '-j', guardChain]);
}

export function tearDownNetwork(): void {
  tryCmd('ip', ['link', 'del', network.nodeInterface]);
  tryCmd('ip', ['link', 'del', network.bridge]);
  tryCmd('ip', ['route', 'del', 'unreachable', network.reserved]);
  tryCmd('ip', ['route', 'del', network.serviceCIDR]);
}

/** Chains made by us, kubelet, kube-proxy or the CNI plugins: `clusterChain` matches a name, `mentionsCluster` a rule. */
const mentionsCluster = /(KUBE-|CNI-|DOPPEL-CLUSTER-)/;
const clusterChain = new RegExp(`^${mentionsCluster.source}`);

/**
 * Removes every rule that jumps into a cluster chain, then the chains themselves, in every table of
 * iptables and ip6tables. Rules anyone else made are left alone.
 */
export function removeClusterRules(): void {
  for (const tool of ['iptables', 'ip6tables']) {
    const saved = output(`${tool}-save`, []);
    let table = '';
    const chains = new Map<string, string[]>();
    for (const line of saved.split('\n')) {
      if (line.startsWith('*')) {
        table = line.slice(1);
        chains.set(table, []);
      } else if (line.startsWith(':')) {
        const chain = line.slice(1).split(' ')[0]!;
        if (clusterChain.test(chain)) chains.get(table)!.push(chain);
      } else if (line.startsWith('-A ')) {
        const [, chain] = line.split(' ');
        if (clusterChain.test(chain!)) continue;
        const target = / -[jg] (\S+)/.exec(line)?.[1];
        if (target && clusterChain.test(target)) {
          const args = splitRule(line.replace(/^-A /, '-D '));
          tryCmd(tool, ['-t', table, ...args]);
        }
      }
    }
    for (const [name, list] of chains) {
      for (const chain of list) tryCmd(tool, ['-t', name, '-F', chain]);
      for (const chain of list) tryCmd(tool, ['-t', name, '-X', chain]);
    }
  }
}

/** Splits an iptables-save rule into arguments, keeping quoted comments whole. */
function splitRule(line: string): string[] {
  return [...line.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) => (m[1] !== undefined ? m[1].replace(/\\"/g, '"') : m[2]!));
}

export function clusterRules(): string[] {
  const lines: string[] = [];
  for (const tool of ['iptables', 'ip6tables']) {
    for (const line of output(`${tool}-save`, []).split('\n')) {
      if (mentionsCluster.test(line)) lines.push(`${tool}: ${line}`);
    }
  }
  return lines;
}
