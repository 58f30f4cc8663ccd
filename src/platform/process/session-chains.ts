// The process agent's iptables chains seen from the CLI: named for this CLI's pid and a counter, removed through
// nsenter when the agent could not remove them itself (SIGKILL), and swept at a start when the CLI that made them is dead.
import process from 'node:process';
import { chainName, removeChainsSync } from '../../agent/iptables.ts';
import { isAlive } from '../../proxy/proxy.ts';

let started = 0;

/** `<CLI pid>-<n>`: the agent names its chains DOPPEL-<session>, so a later start can tell whose they are. */
export function newSession(): string {
  return `${process.pid}-${started++}`;
}

const enter = (targetPid: number) => ['nsenter', `--net=/proc/${targetPid}/ns/net`, '--'];

/** Removes the session's chains in the target's network namespace, in both backends; returns what failed. */
export function removeSessionChains(targetPid: number, session: string): string[] {
  const chain = chainName(session);
  return removeChainsSync(enter(targetPid), (name) => name === chain);
}

/** Removes chains of sessions whose CLI is no longer running; returns what failed. */
export function sweepDeadSessionChains(targetPid: number): string[] {
  return removeChainsSync(enter(targetPid), (name) => {
    const owner = /^DOPPEL-(\d+)-\d+$/.exec(name)?.[1];
    return owner !== undefined && !isAlive(Number(owner));
  });
}
