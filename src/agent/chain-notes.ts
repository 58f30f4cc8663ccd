// Notes of the process platform's session chains (DOPPEL-<CLI pid>-<n>, iptables.ts): its agent notes a chain here
// before it makes it and forgets it once removed, so the sweep for chains of dead sessions lists the namespace's rules
// (a shell and two iptables-save, milliseconds in which the agent serves no call) only where a note names a CLI that
// is gone. Named by the network namespace's inode; the chains go with the namespace, and so does /run at a reboot.
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isAlive } from '../process-alive.ts';

export const NOTES_DIR = '/run/doppel/chains';

/** The network namespace of a process (ours: `self`), as notes name it; undefined when the process is gone. */
export function netnsOf(pid: number | 'self'): string | undefined {
  try {
    return String(statSync(`/proc/${pid}/ns/net`).ino);
  } catch {
    return undefined;
  }
}

const noteFile = (netns: string, chain: string) => join(NOTES_DIR, `${netns}-${chain}`);

/** Before the chain is made: a chain no note names would outlive a killed session, unswept. */
export function noteChain(netns: string, chain: string): void {
  mkdirSync(NOTES_DIR, { recursive: true, mode: 0o700 });
  writeFileSync(noteFile(netns, chain), '');
}

/** Once the chain is gone. */
export function forgetChain(netns: string, chain: string): void {
  rmSync(noteFile(netns, chain), { force: true });
}

/** Whether the chain may exist: one that was never noted was never made. */
export const chainNoted = (netns: string, chain: string): boolean => existsSync(noteFile(netns, chain));

/** A chain of a process platform's session (DOPPEL-<CLI pid>-<n>) whose CLI no longer runs in our PID namespace. */
export function deadSessionChain(chain: string): boolean {
  const owner = /^DOPPEL-(\d+)-\d+$/.exec(chain)?.[1];
  return owner !== undefined && !isAlive(Number(owner));
}

/**
 * Runs `sweep` (which removes the chains of dead sessions in the namespace, and returns what failed) only when a note
 * of that namespace names a CLI that is dead; those notes go once it removed everything.
 */
export async function sweepNoted(netns: string | undefined, sweep: () => Promise<string[]>): Promise<string[]> {
  // A namespace that is gone took its chains along.
  if (netns === undefined) return [];
  let notes: string[] | undefined;
  try {
    notes = readdirSync(NOTES_DIR);
  } catch (error) {
    // Never made: no chain was ever noted. Unreadable: the sweep looks at the rules themselves.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
  }
  const prefix = `${netns}-`;
  const dead = (notes ?? []).filter((note) => note.startsWith(prefix) && deadSessionChain(note.slice(prefix.length)));
  if (notes && dead.length === 0) return [];
  const failures = await sweep();
  if (failures.length === 0) for (const note of dead) rmSync(join(NOTES_DIR, note), { force: true });
  return failures;
}
