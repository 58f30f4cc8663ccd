// One A or AAAA question sent over UDP straight to the target's nameserver: the common case of a lookup, without
// c-ares' cost per query (about a tenth of a millisecond, and a lookup under Kubernetes' ndots:5 asks four names).
// Only a plain answer counts (addresses, no such name, no such records); anything else — truncated, a failure code,
// a malformed or missing answer — is `undefined`, and c-ares asks again as it always did (see createDns).
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { closeSync, openSync, readSync } from 'node:fs';
import { isIP } from 'node:net';
import dnsPacket from 'dns-packet';

export interface Nameserver {
  address: string;
  port: number;
  family: 4 | 6;
}

/** A resolv.conf nameserver as c-ares reads it (`addr`, `addr:port`, `[v6]:port`); undefined for a scoped IPv6 address. */
export function parseNameserver(entry: string): Nameserver | undefined {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  const withPort = /^([^:]+):(\d+)$/.exec(entry);
  const [address, port] = bracketed ? [bracketed[1]!, bracketed[2]] : withPort ? [withPort[1]!, withPort[2]] : [entry, undefined];
  const family = isIP(address);
  if (family === 0 || address.includes('%')) return undefined;
  // As an answer's source reads it: IPv6 in its shortest form.
  const canonical = family === 6 ? new URL(`http://[${address}]`).hostname.slice(1, -1) : address;
  return { address: canonical, port: port === undefined ? 53 : Number(port), family: family as 4 | 6 };
}

interface Pending {
  server: Nameserver;
  name: string;
  type: 'A' | 'AAAA';
  done(answer: string[] | undefined): void;
}

export interface UdpQueries {
  /**
   * The addresses (none for "no such name" or "no such records"), or undefined where c-ares must ask: the answer was
   * not a plain one, or none came in `timeoutMs` (and the nameserver is left to c-ares from then on).
   */
  ask(server: Nameserver, name: string, type: 'A' | 'AAAA', timeoutMs: number): Promise<string[] | undefined>;
}

export function createUdpQueries(): UdpQueries {
  const sockets = new Map<4 | 6, Socket>();
  /** Nameservers that let a query go unanswered: c-ares, which moves on to the next one, asks them from then on. */
  const silent = new Set<string>();
  const pending = new Map<number, Pending>();
  /** Query ids from a random sequence: with one source port for the agent's life, they are what an answer must echo. */
  const ids = new Uint16Array(256);
  let used = ids.length;
  const nextId = (): number => {
    if (used === ids.length) {
      // The kernel's randomness, without node:crypto's load (milliseconds) in the first lookup.
      const urandom = openSync('/dev/urandom', 'r');
      try {
        readSync(urandom, ids);
      } finally {
        closeSync(urandom);
      }
      used = 0;
    }
    return ids[used++]!;
  };

  const received = (message: Buffer, from: RemoteInfo) => {
    if (message.length < 12) return;
    const entry = pending.get(message.readUInt16BE(0));
    if (!entry || from.address !== entry.server.address || from.port !== entry.server.port) return;
    let packet: dnsPacket.Packet;
    try {
      packet = dnsPacket.decode(message);
    } catch {
      return entry.done(undefined);
    }
    const asked = packet.questions?.[0];
    // Not the answer to this question (a late answer to an earlier one reusing the id): keep waiting.
    if (packet.type !== 'response' || asked?.type !== entry.type || asked.name.toLowerCase() !== entry.name.toLowerCase()) return;
    const truncated = ((packet.flags ?? 0) & dnsPacket.TRUNCATED_RESPONSE) !== 0;
    const rcode = (packet as { rcode?: string }).rcode;
    if (truncated || (rcode !== 'NOERROR' && rcode !== 'NXDOMAIN')) return entry.done(undefined);
    entry.done((packet.answers ?? []).flatMap((record) => (record.type === entry.type ? [record.data as string] : [])));
  };

  const socketFor = (family: 4 | 6): Socket => {
    let socket = sockets.get(family);
    if (socket) return socket;
    socket = createSocket(family === 6 ? 'udp6' : 'udp4');
    socket.on('message', received);
    // A failed socket is dropped; its queries end at their timeouts, and the next query makes a new one.
    socket.on('error', () => {
      sockets.delete(family);
      socket.close();
    });
    socket.unref();
    sockets.set(family, socket);
    return socket;
  };

  return {
    async ask(server, name, type, timeoutMs) {
      const key = `${server.address}:${server.port}`;
      if (silent.has(key)) return undefined;
      let id = nextId();
      while (pending.has(id)) id = nextId();
      const query = dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, class: 'IN', name }] });
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          silent.add(key);
          entry.done(undefined);
        }, timeoutMs).unref();
        const entry: Pending = {
          server,
          name,
          type,
          done(answer) {
            clearTimeout(timer);
            if (pending.get(id) === entry) pending.delete(id);
            resolve(answer);
          },
        };
        pending.set(id, entry);
        socketFor(server.family).send(query, server.port, server.address, (error) => error && entry.done(undefined));
      });
    },
  };
}
