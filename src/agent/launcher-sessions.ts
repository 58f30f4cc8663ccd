// The sessions a launcher gives its agents: chain names that say which launcher made them (its pid and start time),
// their removal when an agent or the launcher ends, and the removal of chains whose launcher no longer runs.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import process from 'node:process';
import { chainName, removeChainsSync, type Enter } from './iptables.ts';
import { startTime } from './process-identity.ts';

/**
 * Where the launcher's pid is counted: `j` in a namespace that sees the target from outside (the Job's hostPID, the
 * node's), `e` in the target's own (an ephemeral container), `t` targetless (its chains live and die with its pod).
 */
type Kind = 'j' | 'e' | 't';

const OWNER = /^DOPPEL-([jet])([0-9a-z]+)-([0-9a-z]+)-[0-9a-z]+$/;

function sameNamespace(kind: 'net' | 'pid', pid: number): boolean {
  try {
    return readlinkSync(`/proc/self/ns/${kind}`) === readlinkSync(`/proc/${pid}/ns/${kind}`);
  } catch {
    return false;
  }
}

/** Whether a process counted as `pid` in its innermost pid namespace started at `start`: seen from any namespace above it. */
function innermostAlive(pid: string, start: string): boolean {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let status: string;
    try {
      status = readFileSync(`/proc/${entry}/status`, 'utf8');
    } catch {
      continue;
    }
    const nsPids = /^NSpid:\s+(.+)$/m.exec(status)?.[1]?.trim().split(/\s+/);
    if (nsPids?.at(-1) === pid && startTime(entry) === start) return true;
  }
  return false;
}

export interface LauncherSessions {
  /** A new session for one agent: `<kind><pid>-<start>-<n>`, base 36, within the 21 characters a chain name allows. */
  next(): string;
  /** Removes the session's chains in the target's namespace (its agent is gone); returns what failed. */
  removeSession(session: string): string[];
  /** Removes the chains of every session of this launcher; returns what failed. */
  removeAll(): string[];
  /** Removes chains whose launcher no longer runs (a dead launcher of an earlier Job); returns what failed. */
  sweepDead(): string[];
}

/** `targetPid` is the target's main process as this launcher sees it (its own pid when targetless). */
export function launcherSessions(targetPid: number): LauncherSessions {
  const kind: Kind = targetPid === process.pid ? 't' : sameNamespace('pid', targetPid) ? 'e' : 'j';
  const enter: Enter = sameNamespace('net', targetPid) ? [] : ['nsenter', `--net=/proc/${targetPid}/ns/net`, '--'];
  const self = `${kind}${process.pid.toString(36)}-${Number(startTime(process.pid) ?? 0).toString(36)}-`;
  let count = 0;

  /** Dead when its launcher can be looked for from here and is not found; chains of other makers stay. */
  const dead = (chain: string): boolean => {
    const owner = OWNER.exec(chain);
    if (owner === null) return false;
    const [, ownerKind, pid36, start36] = owner as unknown as [string, Kind, string, string];
    const pid = String(parseInt(pid36, 36));
    const start = String(parseInt(start36, 36));
    // A Job's launcher sees the node's processes; an ephemeral one sees only the target's, so it judges only those.
    if (ownerKind === 'j') return kind === 'j' && startTime(pid) !== start;
    if (ownerKind === 'e') return kind !== 't' && !innermostAlive(pid, start);
    return false;
  };

  return {
    next: () => `${self}${(count++).toString(36)}`,
    removeSession: (session) => removeChainsSync(enter, (name) => name === chainName(session)),
    removeAll: () => (count === 0 ? [] : removeChainsSync(enter, (name) => name.startsWith(`DOPPEL-${self}`))),
    sweepDead: () => (kind === 't' ? [] : removeChainsSync(enter, dead)),
  };
}
