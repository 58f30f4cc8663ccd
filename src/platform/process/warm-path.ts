// Where warm agents and warm session hosts keep their sockets. Its own module because the CLI's entry looks there
// before anything else has loaded (agent-spawn.ts).
import { statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';

/**
 * Each user's own 0700 directory: one shared by name would be closed to every user but the one who made it first (root,
 * after a `sudo doppel exec`). The superuser's is `doppel-warm`, another user's `doppel-warm-<euid>`; the superuser is
 * the owner of /, as bin/doppel tells it without starting a process (`[ -O / ]`).
 */
export function warmPath(): string {
  const euid = process.geteuid?.() ?? 0;
  return join(tmpdir(), euid === statSync('/').uid ? 'doppel-warm' : `doppel-warm-${euid}`);
}
