// The layer <-> proxy wire format, mirroring layer/include/doppel-wire.h: fixed little-endian structs, NUL-terminated strings.
import { isIP, SocketAddress } from 'node:net';
import { constants } from 'node:os';
import type { FastRule } from '../config/fs-fast-rules.ts';
import type { AddrInfoHints, Answer, ConnectingSocket, Connected, FastPath, HandedOver, ListeningSocket, Opened, RemoteStat, SockAddr } from './layer-handler.ts';

export const REQ_HEADER = 16;
export const RESP_HEADER = 16;
export const STAT_SIZE = 128;
export const ADDR_SIZE = 24;
export const GAI_REQ_SIZE = 16;
export const CONNECT_REQ_SIZE = 8 + ADDR_SIZE;
export const CONNECT_RESP_SIZE = 2 * ADDR_SIZE;
export const CONNECT_TAKES_FD = 1;
export const CONNECT_INET6_SOCKET = 2;
export const CONNECT_MAKES_SOCKET = 4;
export const HANDOVER_SIZE = 16;
export const MAKE_SOCKET_SIZE = 8;
export const OPEN_REQ_SIZE = 16;
export const OPEN_NO_HOST_FILE = 1;
export const HANDED_OVER_REQ_SIZE = 16;
export const BIND_REQ_SIZE = 8 + ADDR_SIZE;
export const BIND_RESP_SIZE = 8;
export const LISTEN_REQ_SIZE = 2 * ADDR_SIZE + 16;
export const PEER_OF_REQ_SIZE = ADDR_SIZE + 8;
export const PEER_OF_RESP_SIZE = 2 * ADDR_SIZE;
export const UNLISTEN_REQ_SIZE = 16;
export const OPEN_WRITE_SIZE = 16;
export const WRITEBACK_REQ_SIZE = 16;
export const WRITEBACK_RESP_SIZE = 16;
export const WRITEBACK_DATA_SIZE = 24;
/** The most file content one DP_OP_WRITEBACK_DATA request carries. */
export const WRITEBACK_CHUNK = 60 * 1024;
export const FCHMOD_REQ_SIZE = 16;
export const UDP_ROUTE_REQ_SIZE = ADDR_SIZE;
export const UDP_ROUTE_RESP_SIZE = ADDR_SIZE;
export const HELLO_REQ_SIZE = 8;
export const HELLO_RESP_SIZE = 24;
export const HELLO_LOOPBACK_TCP_LOCAL = 1;
export const HELLO_REMOTE_WRITES = 2;
export const HELLO_AGENT_DNS = 4;
export const HELLO_UDP_IN_NETWORK = 8;
export const HELLO_TRACE = 16;
export const LAYER_CALL_SIZE = 8;
export const RULE_SIZE = 8;
export const RULES_MAX = 256;
export const RULES_MAX_BYTES = 16384;
/** A request larger than this is not from our layer. */
export const MAX_REQUEST = 64 * 1024;
/** DP_MAX_REPLY: the layer takes no longer answer; a file that would make one is answered EFBIG. */
export const MAX_REPLY = 2 ** 30;
/** DP_STANDIN_DIR: remote directories' stand-ins live in this directory next to the socket. */
export const STANDIN_DIR = 'dirs';
/** DP_FAST_PATH_FILE: the hello answer's payload, next to the socket, for processes to read at load. */
export const FAST_PATH_FILE = 'fast-path';
/** DP_AGENT_DNS_SOCKET: where the agent answers the layer's lookups itself (HELLO_AGENT_DNS), next to the socket. */
export const AGENT_DNS_SOCKET = 'dns.sock';

export const Op = { open: 1, stat: 2, access: 3, readlink: 4, realpath: 6, getaddrinfo: 7, connect: 8, bind: 9, listen: 10, peerOf: 11, unlisten: 12,
  udpRoute: 30, unixConnect: 60, writeback: 40, writebackData: 41, mkdir: 42, rmdir: 43, unlink: 44, rename: 45, chmod: 46, fchmod: 47, hello: 13,
  handedOver: 14, layerCall: 15 } as const;
const STATUS_OK = 0;
const STATUS_LOCAL = 1;
const STATUS_WRITABLE = 2;
const STATUS_DIRECTORY = 3;
const STATUS_HANDOVER = 4;
const STATUS_MAKE_SOCKET = 5;
const STATUS_HOST_FILE = 6;
export const WRITEBACK_LAST = 1;
export const RENAME_NOREPLACE = 1;
export const CHMOD_NOFOLLOW = 1;
export const STAT_NOFOLLOW = 1;
export const BIND_FALLBACK = 1;
export const LISTEN_V6ONLY = 1;

const AF_INET = 2;
const AF_INET6 = 10;

/** glibc's getaddrinfo error codes. */
const eai: Record<string, number> = {
  EAI_BADFLAGS: -1, EAI_NONAME: -2, EAI_AGAIN: -3, EAI_FAIL: -4, EAI_NODATA: -5, EAI_FAMILY: -6,
  EAI_SOCKTYPE: -7, EAI_SERVICE: -8, EAI_ADDRFAMILY: -9, EAI_MEMORY: -10, EAI_SYSTEM: -11,
};

export type LayerRequest =
  | { op: 'open'; flags: number; mode: number; hostFile: boolean; path: string }
  | { op: 'stat'; follow: boolean; path: string }
  | { op: 'access'; mode: number; path: string }
  | { op: 'readlink' | 'realpath'; path: string }
  | { op: 'getaddrinfo'; hints: AddrInfoHints; name: string }
  | { op: 'connect'; socktype: number; remote: SockAddr; socket: ConnectingSocket }
  | { op: 'handedOver'; token: number; taken: boolean }
  | { op: 'layerCall'; call: string; subject: string; ms: number }
  | { op: 'bind'; socktype: number; requested: SockAddr }
  | { op: 'listen'; requested: SockAddr; local: SockAddr; socket: ListeningSocket }
  | { op: 'peerOf'; peer: SockAddr; listenerPort: number }
  | { op: 'unlisten'; port: number; inode: bigint }
  | { op: 'writeback'; handle: number; size: number }
  | { op: 'writebackData'; token: number; offset: number; last: boolean; data: Buffer }
  | { op: 'mkdir'; mode: number; path: string }
  | { op: 'rmdir' | 'unlink'; path: string }
  | { op: 'rename'; noReplace: boolean; from: string; to: string }
  | { op: 'chmod'; mode: number; follow: boolean; path: string }
  | { op: 'fchmod'; handle: number; mode: number }
  | { op: 'udpRoute'; remote: SockAddr }
  | { op: 'unixConnect'; path: string; abstract: boolean }
  | { op: 'hello'; pid: number; ppid: number; executable: string };

export class WireError extends Error {}

/** A request the layer sends without waiting: nothing is written back. */
export const isOneWay = (request: LayerRequest): boolean => request.op === 'handedOver' || request.op === 'layerCall';

/** The bytes up to the first NUL, or all of them. */
function cstringOrAll(payload: Buffer): string {
  const end = payload.indexOf(0);
  return payload.toString('utf8', 0, end < 0 ? payload.length : end);
}

/** Handles, offsets and sizes are u64 on the wire and stay far below 2^53. */
const u64 = (buffer: Buffer, offset: number) => Number(buffer.readBigUInt64LE(offset));

export function decodeRequest(op: number, payload: Buffer): LayerRequest {
  const cstring = (offset: number) => {
    const end = payload.indexOf(0, offset);
    if (end < 0) throw new WireError(`op ${op}: string without NUL`);
    return payload.toString('utf8', offset, end);
  };
  const need = (n: number) => {
    if (payload.length < n) throw new WireError(`op ${op}: payload of ${payload.length} bytes, need ${n}`);
  };
  switch (op) {
    case Op.open:
      need(OPEN_REQ_SIZE + 1);
      return { op: 'open', flags: payload.readInt32LE(0), mode: payload.readUInt32LE(4), hostFile: (payload.readUInt32LE(8) & OPEN_NO_HOST_FILE) === 0, path: cstring(OPEN_REQ_SIZE) };
    case Op.stat:
      need(5);
      return { op: 'stat', follow: (payload.readUInt32LE(0) & STAT_NOFOLLOW) === 0, path: cstring(4) };
    case Op.access:
      need(5);
      return { op: 'access', mode: payload.readInt32LE(0), path: cstring(4) };
    case Op.readlink:
      return { op: 'readlink', path: cstring(0) };
    case Op.realpath:
      return { op: 'realpath', path: cstring(0) };
    case Op.getaddrinfo:
      need(GAI_REQ_SIZE + 1);
      return {
        op: 'getaddrinfo',
        hints: { family: payload.readInt32LE(0), socktype: payload.readInt32LE(4), protocol: payload.readInt32LE(8), flags: payload.readInt32LE(12) },
        name: cstring(GAI_REQ_SIZE),
      };
    case Op.connect: {
      need(CONNECT_REQ_SIZE);
      const flags = payload.readUInt32LE(4);
      return {
        op: 'connect',
        socktype: payload.readUInt32LE(0),
        remote: decodeAddr(payload, 8),
        socket: { takesFd: (flags & CONNECT_TAKES_FD) !== 0, makesSocket: (flags & CONNECT_MAKES_SOCKET) !== 0, family: (flags & CONNECT_INET6_SOCKET) !== 0 ? 6 : 4 },
      };
    }
    case Op.handedOver:
      need(HANDED_OVER_REQ_SIZE);
      return { op: 'handedOver', token: u64(payload, 0), taken: payload.readInt32LE(8) === 0 };
    case Op.layerCall: {
      need(LAYER_CALL_SIZE + 2);
      const call = cstring(LAYER_CALL_SIZE);
      return { op: 'layerCall', ms: payload.readUInt32LE(0) / 1e6, call, subject: cstring(LAYER_CALL_SIZE + Buffer.byteLength(call) + 1) };
    }
    case Op.bind:
      need(BIND_REQ_SIZE);
      return { op: 'bind', socktype: payload.readUInt32LE(0), requested: decodeAddr(payload, 8) };
    case Op.listen:
      need(LISTEN_REQ_SIZE);
      return {
        op: 'listen',
        requested: decodeAddr(payload, 0),
        local: decodeAddr(payload, ADDR_SIZE),
        socket: { inode: payload.readBigUInt64LE(2 * ADDR_SIZE), v6only: (payload.readUInt32LE(2 * ADDR_SIZE + 8) & LISTEN_V6ONLY) !== 0 },
      };
    case Op.peerOf:
      need(PEER_OF_REQ_SIZE);
      return { op: 'peerOf', peer: decodeAddr(payload, 0), listenerPort: payload.readUInt32LE(ADDR_SIZE) };
    case Op.unlisten:
      need(UNLISTEN_REQ_SIZE);
      return { op: 'unlisten', port: payload.readUInt32LE(0), inode: payload.readBigUInt64LE(8) };
    case Op.writeback:
      need(WRITEBACK_REQ_SIZE);
      return { op: 'writeback', handle: u64(payload, 0), size: u64(payload, 8) };
    case Op.writebackData:
      need(WRITEBACK_DATA_SIZE);
      if (payload.length > WRITEBACK_DATA_SIZE + WRITEBACK_CHUNK) throw new WireError(`op ${op}: more than ${WRITEBACK_CHUNK} bytes of content`);
      return { op: 'writebackData', token: u64(payload, 0), offset: u64(payload, 8), last: (payload.readUInt32LE(16) & WRITEBACK_LAST) !== 0, data: payload.subarray(WRITEBACK_DATA_SIZE) };
    case Op.mkdir:
      need(5);
      return { op: 'mkdir', mode: payload.readUInt32LE(0), path: cstring(4) };
    case Op.rmdir:
      return { op: 'rmdir', path: cstring(0) };
    case Op.unlink:
      return { op: 'unlink', path: cstring(0) };
    case Op.rename: {
      need(6);
      const from = cstring(4);
      return { op: 'rename', noReplace: (payload.readUInt32LE(0) & RENAME_NOREPLACE) !== 0, from, to: cstring(4 + Buffer.byteLength(from) + 1) };
    }
    case Op.chmod:
      need(9);
      return { op: 'chmod', mode: payload.readUInt32LE(0), follow: (payload.readUInt32LE(4) & CHMOD_NOFOLLOW) === 0, path: cstring(8) };
    case Op.fchmod:
      need(FCHMOD_REQ_SIZE);
      return { op: 'fchmod', handle: u64(payload, 0), mode: payload.readUInt32LE(8) };
    case Op.udpRoute:
      need(UDP_ROUTE_REQ_SIZE);
      return { op: 'udpRoute', remote: decodeAddr(payload, 0) };
    case Op.unixConnect:
      need(1);
      // An abstract name is every byte after its leading NUL; a path ends at its NUL.
      return payload[0] === 0 ? { op: 'unixConnect', path: payload.toString('utf8', 1), abstract: true } : { op: 'unixConnect', path: cstringOrAll(payload), abstract: false };
    case Op.hello:
      need(HELLO_REQ_SIZE + 1);
      return { op: 'hello', pid: payload.readUInt32LE(0), ppid: payload.readUInt32LE(4), executable: cstring(HELLO_REQ_SIZE) };
    default:
      throw new WireError(`unknown op ${op}`);
  }
}

/** Encodes a whole response (header included) for an answer to `request`, echoing the request's sequence number. */
export function encodeAnswer(request: LayerRequest, answer: Answer<unknown>, seq: number): Buffer {
  if (answer.kind === 'local') return frame(STATUS_LOCAL, answer.address ? encodeAddr(answer.address) : answer.path === undefined ? Buffer.alloc(0) : cstr(answer.path), seq);
  if (answer.kind === 'error') return frame(errorStatus(request.op, answer.code), Buffer.alloc(0), seq);
  if (request.op === 'connect' && 'handover' in (answer.value as Connected)) {
    const { pid, fd, token } = (answer.value as { handover: HandedOver }).handover;
    const out = Buffer.alloc(HANDOVER_SIZE);
    out.writeUInt32LE(pid, 0);
    out.writeUInt32LE(fd, 4);
    out.writeBigUInt64LE(BigInt(token), 8);
    return frame(STATUS_HANDOVER, out, seq);
  }
  if (request.op === 'connect' && 'makeSocketIn' in (answer.value as Connected)) {
    const out = Buffer.alloc(MAKE_SOCKET_SIZE);
    out.writeUInt32LE((answer.value as { makeSocketIn: number }).makeSocketIn, 0);
    return frame(STATUS_MAKE_SOCKET, out, seq);
  }
  if (request.op === 'open') {
    const opened = answer.value as Opened;
    if ('directory' in opened) return frame(STATUS_DIRECTORY, Buffer.concat([encodeStat(opened.stat), cstr(opened.directory)]), seq);
    if ('hostPath' in opened) return frame(STATUS_HOST_FILE, Buffer.concat([encodeStat(opened.stat), cstr(opened.hostPath)]), seq);
    if (OPEN_WRITE_SIZE + STAT_SIZE + opened.data.length > MAX_REPLY) return frame(errorStatus(request.op, 'EFBIG'), Buffer.alloc(0), seq);
    if (opened.handle !== undefined) {
      const head = Buffer.alloc(OPEN_WRITE_SIZE);
      head.writeBigUInt64LE(BigInt(opened.handle), 0);
      return frame(STATUS_WRITABLE, Buffer.concat([head, encodeValue(request, opened)]), seq);
    }
  }
  return frame(STATUS_OK, encodeValue(request, answer.value), seq);
}

function encodeValue(request: LayerRequest, value: unknown): Buffer {
  switch (request.op) {
    case 'open': {
      const { stat, data } = value as { stat: RemoteStat; data: Uint8Array };
      return Buffer.concat([encodeStat(stat), data]);
    }
    case 'stat':
      return encodeStat(value as RemoteStat);
    case 'access':
      return Buffer.alloc(0);
    case 'readlink':
      return Buffer.from(value as string, 'utf8');
    case 'realpath':
      return cstr(value as string);
    case 'getaddrinfo': {
      const { addresses, canonicalName } = value as { addresses: SockAddr[]; canonicalName: string };
      const count = Buffer.alloc(4);
      count.writeUInt32LE(addresses.length, 0);
      return Buffer.concat([count, ...addresses.map(encodeAddr), cstr(canonicalName)]);
    }
    case 'connect': {
      const { via, local } = value as { via: SockAddr; local: SockAddr };
      return Buffer.concat([encodeAddr(via), encodeAddr(local)]);
    }
    case 'bind': {
      const { port, fallback } = value as { port: number; fallback: boolean };
      const out = Buffer.alloc(BIND_RESP_SIZE);
      out.writeUInt32LE(port, 0);
      out.writeUInt32LE(fallback ? BIND_FALLBACK : 0, 4);
      return out;
    }
    case 'peerOf': {
      const { peer, local } = value as { peer: SockAddr; local: SockAddr };
      return Buffer.concat([encodeAddr(peer), encodeAddr(local)]);
    }
    case 'writeback': {
      const { from, token } = value as { from: number; token: number };
      const out = Buffer.alloc(WRITEBACK_RESP_SIZE);
      out.writeBigUInt64LE(BigInt(from), 0);
      out.writeBigUInt64LE(BigInt(token), 8);
      return out;
    }
    case 'udpRoute':
      return encodeAddr((value as { via: SockAddr }).via);
    case 'unixConnect':
      return cstr(value as string);
    case 'listen':
    case 'handedOver':
    case 'layerCall':
    case 'unlisten':
    case 'writebackData':
    case 'mkdir':
    case 'rmdir':
    case 'unlink':
    case 'rename':
    case 'chmod':
    case 'fchmod':
      return Buffer.alloc(0);
    case 'hello':
      return encodeFastPath(value as FastPath);
  }
}

/**
 * The hello answer's payload, which is also what DP_FAST_PATH_FILE holds: flags, the hand-over, root and network pids, the start time of
 * the process the latter two name, and the rules table,
 * sent empty past the layer's limits (it then asks about everything). One buffer written through a DataView: this runs
 * once per start, cold, where a Buffer per rule and Buffer's checked writers took 1-2 ms for a hundred rules.
 */
export function encodeFastPath({ rules, loopbackTcpLocal, remoteWrites, handoverPid, rootPid, networkPid, targetStart, udpInNetwork, agentDns, traced }: FastPath): Buffer {
  let tableBytes = 0;
  for (const rule of rules) tableBytes += RULE_SIZE + rule.text.length;
  const fits = rules.length <= RULES_MAX && tableBytes <= RULES_MAX_BYTES;
  const out = Buffer.alloc(HELLO_RESP_SIZE + (fits ? tableBytes : 0));
  const view = new DataView(out.buffer, out.byteOffset, out.length);
  view.setUint32(0, (loopbackTcpLocal ? HELLO_LOOPBACK_TCP_LOCAL : 0) | (remoteWrites ? HELLO_REMOTE_WRITES : 0) | (agentDns ? HELLO_AGENT_DNS : 0) | (udpInNetwork ? HELLO_UDP_IN_NETWORK : 0) | (traced ? HELLO_TRACE : 0), true);
  view.setUint32(4, handoverPid ?? 0, true);
  view.setUint32(8, rootPid ?? 0, true);
  view.setUint32(12, networkPid ?? 0, true);
  view.setBigUint64(16, targetStart ?? 0n, true);
  if (!fits) return out;
  let at = HELLO_RESP_SIZE;
  for (const rule of rules) {
    view.setUint16(at, ruleMatch[rule.match], true);
    view.setUint16(at + 2, ruleVerdict[rule.verdict], true);
    view.setUint32(at + 4, rule.text.length, true);
    // Rule texts are ASCII (lower case, as the layer compares them): one byte per character.
    out.write(rule.text, at + RULE_SIZE, 'latin1');
    at += RULE_SIZE + rule.text.length;
  }
  return out;
}

const ruleMatch = { exact: 1, prefix: 2, suffix: 3, contains: 4 } as const;
const ruleVerdict = { local: 1, ask: 2, remote: 3 } as const;

export function errorStatus(op: LayerRequest['op'], code: string): number {
  if (op === 'getaddrinfo') return eai[code] ?? eai.EAI_FAIL!;
  const errno = (constants.errno as Record<string, number>)[code];
  return -(errno ?? constants.errno.EIO);
}

function frame(status: number, payload: Buffer, seq: number): Buffer {
  const header = Buffer.alloc(RESP_HEADER);
  header.writeUInt32LE(payload.length, 0);
  header.writeInt32LE(status, 4);
  header.writeUInt32LE(seq, 8);
  return Buffer.concat([header, payload]);
}

const cstr = (text: string) => Buffer.concat([Buffer.from(text, 'utf8'), Buffer.alloc(1)]);

export function encodeStat(stat: RemoteStat): Buffer {
  const out = Buffer.alloc(STAT_SIZE);
  const fields = [stat.dev, stat.ino, stat.mode, stat.nlink, stat.uid, stat.gid, stat.rdev, stat.size, stat.blksize, stat.blocks,
    stat.atimeSec, stat.atimeNsec, stat.mtimeSec, stat.mtimeNsec, stat.ctimeSec, stat.ctimeNsec];
  fields.forEach((value, index) => out.writeBigInt64LE(BigInt(Math.trunc(value)), index * 8));
  return out;
}

export function encodeAddr(addr: SockAddr): Buffer {
  const out = Buffer.alloc(ADDR_SIZE);
  out.writeUInt32LE(addr.family === 6 ? AF_INET6 : AF_INET, 0);
  out.writeUInt32LE(addr.port, 4);
  ipBytes(addr.address, addr.family).copy(out, 8);
  return out;
}

export function decodeAddr(buffer: Buffer, offset: number): SockAddr {
  const family = buffer.readUInt32LE(offset);
  const port = buffer.readUInt32LE(offset + 4);
  const raw = buffer.subarray(offset + 8, offset + 24);
  if (family === AF_INET) return { family: 4, port, address: Array.from(raw.subarray(0, 4)).join('.') };
  if (family === AF_INET6) {
    // An IPv4-mapped address is the IPv4 connection it stands for.
    if (raw.subarray(0, 10).every((b) => b === 0) && raw[10] === 0xff && raw[11] === 0xff) {
      return { family: 4, port, address: Array.from(raw.subarray(12, 16)).join('.') };
    }
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(raw.readUInt16BE(i).toString(16));
    // Node's own form (fd00::1), the one its sockets report, so addresses from both compare equal.
    return { family: 6, port, address: new SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address };
  }
  throw new WireError(`address family ${family}`);
}

function ipBytes(address: string, family: 4 | 6): Buffer {
  const out = Buffer.alloc(16);
  if (family === 4) {
    address.split('.').forEach((octet, index) => out.writeUInt8(Number(octet), index));
    return out;
  }
  if (isIP(address) !== 6) throw new WireError(`not an IPv6 address: ${address}`);
  // A trailing dotted quad (::ffff:1.2.3.4) is the last two groups.
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(address);
  const text = quad ? `${address.slice(0, quad.index)}${((Number(quad[1]) << 8) | Number(quad[2])).toString(16)}:${((Number(quad[3]) << 8) | Number(quad[4])).toString(16)}` : address;
  const [head = '', tail] = text.split('::');
  const groups = (part: string | undefined) => (part ? part.split(':') : []);
  const all = tail === undefined ? groups(head) : [...groups(head), ...Array<string>(8 - groups(head).length - groups(tail).length).fill('0'), ...groups(tail)];
  all.forEach((group, index) => out.writeUInt16BE(parseInt(group, 16), index * 2));
  return out;
}
