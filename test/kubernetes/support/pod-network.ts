// What doppel left in a pod's network namespace on this node (the test cluster's pods run here): its iptables chains
// and their packet counters, and the agent processes and launchers that work on that pod.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { bareContainerId, findContainerProcess } from '../../../src/agent/find-container-process.ts';
import { kubectl } from './cluster.ts';

export interface PodProcess {
  pod: string;
  containerId: string;
  /** The container's main process, on this node. */
  pid: number;
}

/** The first container's process of every pod that `selector` picks in `namespace`. */
export async function podProcesses(namespace: string, selector: string): Promise<PodProcess[]> {
  const out = await kubectl(['get', 'pods', '-n', namespace, '-l', selector, '-o', 'jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].containerID}{"\\n"}{end}']);
  const pods: PodProcess[] = [];
  for (const line of out.split('\n').filter((entry) => entry !== '')) {
    const [pod, id] = line.split(' ') as [string, string];
    const pid = await findContainerProcess(id);
    if (pid === undefined) throw new Error(`no process of pod ${pod}'s container ${id} on this node`);
    pods.push({ pod, containerId: bareContainerId(id), pid });
  }
  return pods;
}

/** The nat rules of both iptables backends in the pod's namespace that mention a DOPPEL chain, with packet counters. */
export function doppelRules(pid: number): string[] {
  return ['iptables-legacy-save', 'iptables-nft-save'].flatMap((save) =>
    execFileSync('nsenter', [`--net=/proc/${pid}/ns/net`, '--', save, '-c', '-t', 'nat'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .split('\n')
      .filter((line) => line.includes('DOPPEL-')),
  );
}

/** Packets the REDIRECT rules of the pod's DOPPEL chains sent to an agent. */
export function redirectedPackets(pid: number): number {
  return doppelRules(pid)
    .filter((line) => line.includes('-j REDIRECT'))
    .reduce((sum, line) => sum + Number(/^\[(\d+):/.exec(line)?.[1] ?? 0), 0);
}

function commandLines(): { pid: number; argv: string[] }[] {
  const found: { pid: number; argv: string[] }[] = [];
  for (const entry of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      found.push({ pid: Number(entry), argv: readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0') });
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

/** The agents serving the pod (`--pid` its process), and the launchers set against its container. */
export function agentProcesses(pod: PodProcess): { agents: number[]; launchers: number[] } {
  const lines = commandLines();
  const agents = lines.filter(({ argv }) => argv.some((arg) => arg.endsWith('/agent/main.js')) && argv[argv.indexOf('--pid') + 1] === String(pod.pid));
  const launchers = lines.filter(({ argv }) => argv.some((arg) => arg.endsWith('/agent/launcher.js')) && argv[argv.indexOf('--container-id') + 1]?.endsWith(pod.containerId));
  return { agents: agents.map(({ pid }) => pid), launchers: launchers.map(({ pid }) => pid) };
}
