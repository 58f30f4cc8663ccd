// Which process a PID names, for good: its start time (with the PID, one process for the life of a boot), and where a
// process of another machine's agent stands, so that a CLI can tell whether it sees the very same process.
import { readFileSync, statSync } from 'node:fs';
import type { ProcessPlace } from '../protocol/messages.ts';

/**
 * The process's start time (clock ticks since boot) and state (`Z` for one that has exited and waits for its parent),
 * and a zombie's exit status as waitpid reports it (the stat file's 52nd field, Linux 3.5).
 */
export function processStat(pid: number | string): { start: string; state: string; exitStatus: number | undefined } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The name before the fields may hold spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const exitStatus = Number(fields[49]);
    return { start: fields[19]!, state: fields[0]!, exitStatus: Number.isInteger(exitStatus) ? exitStatus : undefined };
  } catch {
    return undefined;
  }
}

/** When the kernel started the process (clock ticks since boot): with its PID, names one process for good. */
export function startTime(pid: number | string): string | undefined {
  return processStat(pid)?.start;
}

/** Where `pid` stands as this process sees it; undefined when it cannot tell (no such process, no /proc). */
export function processPlace(pid: number): ProcessPlace | undefined {
  try {
    const start = startTime(pid);
    if (start === undefined) return undefined;
    return { pid, start, boot: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), pidNamespace: statSync('/proc/self/ns/pid').ino };
  } catch {
    return undefined;
  }
}
