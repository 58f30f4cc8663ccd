// Tells whether a program is a statically linked ELF executable, which LD_PRELOAD (and so the layer) cannot reach.
import { accessSync, closeSync, constants, openSync, readSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

const PT_INTERP = 3;

/** Finds the file a command name runs, the way execvp does. */
export function whichSync(command: string, path: string | undefined, exists: (file: string) => boolean): string | undefined {
  if (command.includes('/')) return command;
  for (const dir of (path ?? '').split(delimiter)) {
    const file = join(dir || '.', command);
    if (exists(file)) return file;
  }
  return undefined;
}

/** A regular file we may execute: what execvp's search takes. A missing one is told without an exception (a search
 * along PATH meets several, and each thrown error cost a warm session's start 50-100 us). */
export function isExecutable(file: string): boolean {
  try {
    if (statSync(file, { throwIfNoEntry: false })?.isFile() !== true) return false;
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Synchronous: a few hundred bytes read, where the first use of fs/promises alone cost a start 1-2 ms. */
export function isStaticElf(file: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return false;
  }
  try {
    const header = Buffer.alloc(64);
    readSync(fd, header, 0, 64, 0);
    // Only 64-bit little-endian ELF executables are judged; anything else (scripts too) is left alone.
    if (header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) return false;
    const phoff = Number(header.readBigUInt64LE(32));
    const phentsize = header.readUInt16LE(54);
    const phnum = header.readUInt16LE(56);
    const table = Buffer.alloc(phentsize * phnum);
    readSync(fd, table, 0, table.length, phoff);
    for (let i = 0; i < phnum; i++) {
      if (table.readUInt32LE(i * phentsize) === PT_INTERP) return false;
    }
    return true;
  } catch {
    return false;
  } finally {
    closeSync(fd);
  }
}
