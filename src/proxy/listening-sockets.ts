// The program's sockets as this network namespace's kernel lists them (/proc/net/tcp, udp and their IPv6 tables).
import fs from 'node:fs';

const LISTEN_STATE = '0A';

/** The rows of /proc/net/<protocol> and <protocol>6, split into fields. */
async function rows(protocol: 'tcp' | 'udp'): Promise<string[][]> {
  const out: string[][] = [];
  for (const table of [`/proc/net/${protocol}`, `/proc/net/${protocol}6`]) {
    // A kernel without IPv6 has no tcp6 table.
    const text = await fs.promises.readFile(table, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) if (line.trim() !== '') out.push(line.trim().split(/\s+/));
  }
  return out;
}

/** Listening TCP sockets, by inode. */
export async function listeningInodes(): Promise<Set<bigint>> {
  const inodes = new Set<bigint>();
  for (const fields of await rows('tcp')) if (fields[3] === LISTEN_STATE && fields[9] !== undefined) inodes.add(BigInt(fields[9]));
  return inodes;
}

/** The local ports of all UDP sockets. */
export async function boundUdpPorts(): Promise<Set<number>> {
  const ports = new Set<number>();
  for (const fields of await rows('udp')) {
    const port = fields[1]?.split(':')[1];
    if (port !== undefined) ports.add(parseInt(port, 16));
  }
  return ports;
}
