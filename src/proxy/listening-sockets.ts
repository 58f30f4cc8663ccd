// Which TCP sockets of this network namespace (the program's) are listening, by inode, from /proc/net/tcp and tcp6.
import { readFile } from 'node:fs/promises';

const LISTEN_STATE = '0A';

export async function listeningInodes(): Promise<Set<bigint>> {
  const inodes = new Set<bigint>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    // A kernel without IPv6 has no tcp6 table.
    const text = await readFile(table, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[3] === LISTEN_STATE && fields[9] !== undefined) inodes.add(BigInt(fields[9]));
    }
  }
  return inodes;
}
