// The process agent's iptables chains seen from the CLI: named for this CLI's pid and a counter, removed through
// nsenter when the agent could not remove them itself (SIGKILL), and swept at a start when the CLI that made them is dead.
import { chainName, listDoppelChains, removeChainsSync } from '../../agent/iptables.ts';
import { isAlive } from '../../proxy/proxy.ts';

const enter = (targetPid: number) => ['nsenter', `--net=/proc/${targetPid}/ns/net`, '--'];

/** Removes the session's chains in the target's network namespace, in both backends; returns what failed. */
export function removeSessionChains(targetPid: number, session: string): string[] {
  const chain = chainName(session);
  return removeChainsSync(enter(targetPid), (name) => name === chain);
}

/**
 * Removes chains of sessions whose CLI is no longer running; returns what failed. The listing, all that a sweep
 * usually does, runs without blocking; the removal, when there is something to remove, is synchronous.
 */
export async function sweepDeadSessionChains(targetPid: number): Promise<string[]> {
  const dead = (name: string) => {
    const owner = /^DOPPEL-(\d+)-\d+$/.exec(name)?.[1];
    return owner !== undefined && !isAlive(Number(owner));
  };
  if (!(await listDoppelChains(enter(targetPid))).some(dead)) return [];
  return removeChainsSync(enter(targetPid), dead);
}
