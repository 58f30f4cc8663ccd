// Keeps on disk what is a pure function of its input and of the code that computes it, so that the next start with the
// same input reads it back: the validated configuration (load.ts), the fs policy's fast rules (fs-fast-rules.ts).
// An entry holds its whole input and serves only that input; a cache that cannot be read or written is a slower start.
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

export interface DiskCache<T> {
  read(): T | undefined;
  write(value: T): void;
}

/**
 * The entry of `kind` for `input`, as computed by the code in `modules` (file URLs): a rebuild of any of them, even to
 * the same content, is another entry. Undefined when the input cannot be keyed (or a module is missing).
 */
export function diskCache<T>(kind: string, input: unknown, modules: URL[], env: NodeJS.ProcessEnv = process.env): DiskCache<T> | undefined {
  let key: string;
  try {
    key = JSON.stringify([modules.map(stamp), input]);
  } catch {
    return undefined;
  }
  const dir = join(cacheHome(env), 'doppel', kind);
  // A short hash names the file (node:crypto alone would cost a tenth of the start a hit saves).
  const file = join(dir, `${fnv1a64(key)}.json`);
  return {
    read() {
      try {
        const entry = JSON.parse(readFileSync(file, 'utf8')) as { key: string; value: T };
        return entry.key === key ? entry.value : undefined;
      } catch {
        return undefined;
      }
    },
    write(value) {
      try {
        writeCacheFile(file, JSON.stringify({ key, value }), MAX_ENTRIES);
      } catch {
        // best effort
      }
    },
  };
}

/** The user's cache directory. A relative XDG_CACHE_HOME is none (the XDG spec): it would put the cache in whatever directory doppel runs in. */
export function cacheHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.XDG_CACHE_HOME?.startsWith('/') ? env.XDG_CACHE_HOME : join(homedir(), '.cache');
}

/** Entries per kind (every working directory and program makes its own fast rules): past it, the kind starts over. */
const MAX_ENTRIES = 200;

/**
 * Writes a cache file whole (a new file, renamed over the old: a reader sees one or the other), in a directory only
 * this user can write. Past `max` files the directory starts over; `stale` names others to remove now (a file's earlier
 * versions). Throws what the file system says.
 */
export function writeCacheFile(file: string, data: string | Uint8Array, max: number, stale: (path: string) => boolean = () => false): void {
  const dir = dirname(file);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const partial = `${file}.${process.pid}`;
  writeFileSync(partial, data, { mode: 0o600 });
  renameSync(partial, file);
  const names = readdirSync(dir);
  for (const name of names) {
    const path = join(dir, name);
    if (path !== file && (names.length > max || stale(path))) rmSync(path, { force: true });
  }
}

/** A module's stamp, taken once per process (a warm session host keys every request's entries): a rebuild while it
 * runs does not change the code it runs. */
function stamp(module: URL): string {
  let known = stamps.get(module.href);
  if (known === undefined) {
    const { mtimeMs, size } = statSync(fileURLToPath(module));
    known = `${module.pathname}:${mtimeMs}:${size}`;
    stamps.set(module.href, known);
  }
  return known;
}

const stamps = new Map<string, string>();

/** Two 32-bit FNV-1a hashes of the string's UTF-16 units (two seeds, one pass: it runs cold), as 16 hex digits. */
export function fnv1a64(text: string): string {
  let a = 0x811c9dc5;
  let b = 0x050c5d1f;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    a = Math.imul(a ^ unit, 0x01000193);
    b = Math.imul(b ^ unit, 0x01000193);
  }
  const hex = (hash: number) => (hash >>> 0).toString(16).padStart(8, '0');
  return hex(a) + hex(b);
}
