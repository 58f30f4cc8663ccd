// What goes into an image layer, as a list of entries: hashed for the build cache, then written into a directory for tar.
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** Paths are absolute inside the image. Parent directories are implied, mode 0755. */
export type Entry =
  | { kind: 'file'; path: string; source: string; mode: number }
  | { kind: 'text'; path: string; content: string; mode: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'dir'; path: string; mode: number };

/** Later entries for the same path replace earlier ones; sorted, so the order of discovery does not matter. */
export function unique(entries: Entry[]): Entry[] {
  const byPath = new Map<string, Entry>();
  for (const entry of entries) byPath.set(entry.path, entry);
  return [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Changes whenever any byte, mode or link of the layer would change; the source paths do not count. */
export function entriesHash(entries: Entry[]): string {
  const hash = createHash('sha256');
  for (const entry of entries) {
    const { kind, path: at } = entry;
    const what =
      kind === 'file' ? [entry.mode, createHash('sha256').update(readFileSync(entry.source)).digest('hex')]
      : kind === 'text' ? [entry.mode, entry.content]
      : kind === 'symlink' ? [entry.target]
      : [entry.mode];
    hash.update(JSON.stringify([kind, at, ...what])).update('\n');
  }
  return hash.digest('hex');
}

/** Creates the missing directories down to `dir`, each 0755 whatever the umask. */
function makeParents(root: string, dir: string): void {
  if (dir === '/' || existsSync(path.join(root, dir))) return;
  makeParents(root, path.dirname(dir));
  mkdirSync(path.join(root, dir));
  chmodSync(path.join(root, dir), 0o755);
}

/** Writes the entries under `root` with exact modes. */
export function writeEntries(root: string, entries: Entry[]): void {
  for (const entry of entries) {
    const at = path.join(root, entry.path);
    makeParents(root, path.dirname(entry.path));
    if (entry.kind === 'symlink') {
      symlinkSync(entry.target, at);
      continue;
    }
    if (entry.kind === 'dir') mkdirSync(at, { recursive: true });
    else if (entry.kind === 'file') copyFileSync(entry.source, at);
    else writeFileSync(at, entry.content);
    chmodSync(at, entry.mode);
  }
}
