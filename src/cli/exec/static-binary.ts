// Tells whether a program is a statically linked ELF executable, which LD_PRELOAD (and so the layer) cannot reach.
import { accessSync, constants, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
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

/** A regular file we may execute: what execvp's search takes. */
export function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

export async function isStaticElf(file: string): Promise<boolean> {
  const handle = await open(file, 'r').catch(() => undefined);
  if (!handle) return false;
  try {
    const header = Buffer.alloc(64);
    await handle.read(header, 0, 64, 0);
    // Only 64-bit little-endian ELF executables are judged; anything else (scripts too) is left alone.
    if (header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) return false;
    const phoff = Number(header.readBigUInt64LE(32));
    const phentsize = header.readUInt16LE(54);
    const phnum = header.readUInt16LE(56);
    const table = Buffer.alloc(phentsize * phnum);
    await handle.read(table, 0, table.length, phoff);
    for (let i = 0; i < phnum; i++) {
      if (table.readUInt32LE(i * phentsize) === PT_INTERP) return false;
    }
    return true;
  } finally {
    await handle.close();
  }
}
