// The process agent's iptables chains seen from the CLI: named for this CLI's pid and a counter, removed through
// nsenter when the agent could not remove them itself (SIGKILL), and swept after a session that reused a warm agent
// (a fresh agent sweeps them itself once its session is quiet: src/agent/main.ts).
import { chainNoted, forgetChain, netnsOf, sweepNoted } from '../../agent/chain-notes.ts';
import { chainName, removeChainsSync, sweepDeadCliSessions } from '../../agent/iptables.ts';

const enter = (targetPid: number) => ['nsenter', `--net=/proc/${targetPid}/ns/net`, '--'];

/** Removes the session's chains in the target's network namespace, in both backends; returns what failed. */
export function removeSessionChains(targetPid: number, session: string): string[] {
  const chain = chainName(session);
  const netns = netnsOf(targetPid);
  // The agent notes its chain before it makes it: no note, no chain (and no namespace, none either).
  if (netns === undefined || !chainNoted(netns, chain)) return [];
  const failures = removeChainsSync(enter(targetPid), (name) => name === chain);
  if (failures.length === 0) forgetChain(netns, chain);
  return failures;
}

/**
 * Removes, from outside the target's network namespace, the chains of sessions whose CLI is dead (where a note names
 * one, chain-notes.ts); returns what failed.
 */
export const sweepDeadSessionChains = (targetPid: number): Promise<string[]> => sweepNoted(netnsOf(targetPid), () => sweepDeadCliSessions(enter(targetPid)));
