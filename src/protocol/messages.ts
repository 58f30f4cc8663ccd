// The agent protocol's control messages and request operations. Append-only: each operation names the version that introduced it.
import { Decoder, Encoder } from '@msgpack/msgpack';
import { ProtocolError } from './errors.ts';

/** Bumped when an operation or field is added; a peer must speak at least MIN_PEER_VERSION. */
export const PROTOCOL_VERSION = 11;
/**
 * Version 1 peers are still served: the keepalive is the `ping` request every version answers, and a client
 * facing a version 1 agent fetches files with `fs.read` pieces instead of `fs.fetch`. Agents ship apart from the
 * CLI (`agent.image` may name any image), so refusing them would buy nothing but a failed session.
 */
export const MIN_PEER_VERSION = 1;
/** The first version whose `env` answers `hostname` (an older agent's answer lacks it whether or not the file exists). */
export const ENV_HOSTNAME_SINCE = 7;
/** The first version whose `dns.serveLayer` takes `client` (a launcher's agent on its client's machine). */
export const LAYER_DNS_CLIENT_SINCE = 11;
export const PROTOCOL_NAME = 'doppel-agent';

export interface Stat {
  dev: number;
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  blksize: number;
  blocks: number;
  atimeSec: number;
  atimeNsec: number;
  mtimeSec: number;
  mtimeNsec: number;
  ctimeSec: number;
  ctimeNsec: number;
}

export interface DirEntry {
  name: string;
  ino: number;
  type: number;
}

/** Every request: its arguments, its result, and the protocol version that introduced it. */
export interface Operations {
  /** Also the keepalive both ends send: any answer, even an error from a version 1 client, proves the peer reads and writes. */
  ping: { args: Record<string, never>; result: { now: number } };
  /**
   * The target process's environment; since version 7, with `hostname`, also the content of its /etc/hostname (absent
   * when it has none), so that a session's start asks one question before its program runs.
   */
  env: { args: { hostname?: boolean }; result: { vars: Record<string, string>; hostname?: string } };
  'fs.stat': { args: { path: string; follow: boolean }; result: Stat };
  /** A piece of a file inside one control frame; version 1 agents only have this, newer clients use `fs.fetch`. */
  'fs.read': { args: { path: string; offset: number; length: number }; result: { stat: Stat; data: Uint8Array; eof: boolean } };
  'fs.readdir': { args: { path: string }; result: { entries: DirEntry[] } };
  'fs.readlink': { args: { path: string }; result: { target: string } };
  'fs.access': { args: { path: string; mode: number }; result: Record<string, never> };
  'fs.realpath': { args: { path: string }; result: { path: string } };
  'dns.lookup': { args: { name: string; family: 0 | 4 | 6 }; result: { addresses: { address: string; family: 4 | 6 }[]; canonicalName: string } };
  'tcp.connect': { args: { host: string; port: number; channel: number }; result: { localAddress: string; localPort: number } };
  /** The file's stat; its whole content follows as data on `channel` (opened by the client), which then ends. */
  'fs.fetch': { args: { path: string; channel: number }; result: { stat: Stat } };
  /**
   * The client is leaving cleanly and the agent may stay warm: it gives back this session's incoming traffic (its
   * rules go), listens on the Unix socket `socket`, and when the client has gone serves the next client that
   * connects there within `ttlMs` (after a one-line preface, see `warm-preface.ts`); it exits when none comes in
   * time, when the target goes, or when told to.
   */
  'agent.park': { args: { socket: string; ttlMs: number }; result: Record<string, never> };
  /**
   * For a client that reaches the agent through a relay (Kubernetes' port-forward): the agent listens on `port` on
   * every address of its network namespace (`addresses`, its pod's) for a few seconds, for one TCP connection that
   * opens with the line `key`, answers it `ok`, and takes it as the other end of the client's `move` (connection.ts).
   */
  'link.direct': { args: Record<string, never>; result: { addresses: string[]; port: number; key: string } };
  /**
   * TCP connections to `port` in the target's network namespace go to the agent from now on. steal: each one is
   * handed to the client; mirror: the target's server still answers, and the client gets a copy of what the caller
   * sent. `flush` (steal only) drops the namespace's tracked connections to the port, so kept-alive ones reconnect.
   * With `filter`, only the HTTP/1 requests that match it are the client's (stolen or copied), request by request;
   * the rest reach the target's server. A steal keeps Kubernetes probes (`User-Agent: kube-probe/...`) with the
   * target unless `stealProbes`. Both fields are optional so that a subscription without them is unchanged.
   * Several sessions may subscribe one port (version 4): `owner` names this one in the others' conflict lines, and a
   * steal that collides with another session's (either of them unfiltered) follows `onConcurrentSteal`: `abort` fails
   * with EBUSY, `continue` subscribes without the port's traffic (`stolenBy` names who has it), `override` takes it
   * (the other session is told by `incoming.revoked`).
   */
  'incoming.subscribe': {
    args: { port: number; mode: IncomingMode; flush: boolean; filter?: HttpFilter; stealProbes?: boolean; owner?: string; onConcurrentSteal?: ConcurrentSteal };
    result: { stolenBy?: string };
  };
  'incoming.unsubscribe': { args: { port: number }; result: Record<string, never> };
  /**
   * The agent's request to the client: a caller connected to a subscribed port. Its bytes follow on `channel`
   * (opened by the agent); what the client sends back reaches the caller (steal) or is dropped (mirror).
   */
  'incoming.accepted': { args: { port: number; channel: number; peer: SocketAddress; local: SocketAddress }; result: Record<string, never> };
  /**
   * The agent's request to the client: the subscribed port no longer brings it traffic, and `why` says so in a clause
   * ("bob@laptop (...) took it over with on_concurrent_steal: override").
   */
  'incoming.revoked': { args: { port: number; why: string }; result: Record<string, never> };
  /**
   * open(2) on the target with the program's `flags` (access mode, O_CREAT, O_EXCL, O_TRUNC, O_APPEND) and `mode`,
   * checked against the target process's user and groups; the file's stat, then its content (none when truncated or
   * created) as data on `channel`, which then ends. The file is not kept open: its content comes back by `fs.write`.
   */
  'fs.open': { args: { path: string; flags: number; mode: number; channel: number }; result: { stat: Stat } };
  /**
   * The bytes that arrive on `channel` (opened by the client) written into the existing file at `path`: at `offset`
   * and then truncated there (replace), or at its end (append).
   */
  'fs.write': { args: { path: string; channel: number; offset: number; append: boolean }; result: Record<string, never> };
  'fs.mkdir': { args: { path: string; mode: number }; result: Record<string, never> };
  'fs.rmdir': { args: { path: string }; result: Record<string, never> };
  'fs.unlink': { args: { path: string }; result: Record<string, never> };
  /** `noReplace`: renameat2's RENAME_NOREPLACE, EEXIST when `to` exists. */
  'fs.rename': { args: { from: string; to: string; noReplace: boolean }; result: Record<string, never> };
  'fs.chmod': { args: { path: string; mode: number; follow: boolean }; result: Record<string, never> };
  /**
   * Version 5: a UDP socket of the program, as the target's network namespace sees it. Datagrams travel both ways on
   * `channel` (opened by the client) in the framing of `datagrams.ts`, each with its remote address: the agent sends
   * the client's from a socket of its own and returns what comes back to it. Ending the channel closes the socket.
   */
  'udp.open': { args: { channel: number }; result: Record<string, never> };
  /**
   * Version 5: a stream to the target's Unix socket (unix_streams): `path` in its mount namespace, or with `abstract`
   * a name in its network namespace's abstract space. The bytes travel on `channel` (opened by the client).
   */
  'unix.connect': { args: { path: string; abstract: boolean; channel: number }; result: Record<string, never> };
  /**
   * Version 7: the file's stat, and with it its whole content when it is a regular file of at most `upTo` bytes; a
   * bigger or special file (a FIFO, a device) comes without `data`, for `fs.fetch` to stream. The call a program makes
   * most, in one frame each way: no channel, no credit or end frames.
   */
  'fs.get': { args: { path: string; upTo: number }; result: { stat: Stat; data?: Uint8Array } };
  /**
   * Version 8, served only by an agent whose hello lists the feature `tcp.connectFd` (the process platform's: the
   * program runs on the same machine): connects from the target's network namespace as `tcp.connect` does, reads
   * nothing, and answers with the socket's descriptor number in the agent's process `pid`, for the program's layer to
   * take (pidfd_getfd). The agent keeps its copy until `tcp.releaseFd` with `token`, or a few seconds at most. No
   * addresses: the program's getsockname and getpeername are then the kernel's.
   */
  'tcp.connectFd': { args: { host: string; port: number }; result: { fd: number; pid: number; token: number } };
  /** Version 8: the program took the socket of `token` (or could not): the agent closes its copy. */
  'tcp.releaseFd': { args: { token: number }; result: Record<string, never> };
  /**
   * Version 9, served by an agent whose hello lists `tcp.connectFd` (the program runs on the same machine): until this
   * link closes, the agent listens on the Unix socket `socket` and answers the programs' layers' lookups there itself,
   * in the layer's own wire format (layer/include/doppel-wire.h, DP_OP_GETADDRINFO alone), as `dns.lookup` resolves:
   * one Node.js hop fewer than through the proxy. For a session whose DNS and outgoing policies have no filter.
   * Version 11: also served by a launcher's agent whose target the client reaches itself (its pod runs on the client's
   * machine, in the agent's PID namespace: see the hello's `target`); `client` is the client's process, and `socket` a
   * path in its root, in the client's own `doppel-<client>-*` directory.
   */
  'dns.serveLayer': { args: { socket: string; client?: number }; result: Record<string, never> };
}

/** The hello feature of an agent that serves `tcp.connectFd`. */
export const FEATURE_CONNECT_FD = 'tcp.connectFd';

export type IncomingMode = 'steal' | 'mirror';

/** mirrord's `on_concurrent_steal`. */
export type ConcurrentSteal = 'abort' | 'continue' | 'override';

/**
 * One test of a request (mirrord's http_filter): a regex over each header as `Name: value`, a regex over the path
 * (tried alone and with its query), or a method name. All are case-insensitive; regexes are JavaScript's.
 */
export type HttpRule = { header: string } | { path: string } | { method: string };

/** The requests a filtered subscription takes: those that pass all, or any, of the rules. */
export interface HttpFilter {
  match: 'all' | 'any';
  rules: HttpRule[];
}

export interface SocketAddress {
  address: string;
  port: number;
}

export type Operation = keyof Operations;

export const operationSince: Record<Operation, number> = {
  ping: 1,
  env: 1,
  'fs.stat': 1,
  'fs.read': 1,
  'fs.readdir': 1,
  'fs.readlink': 1,
  'fs.access': 1,
  'fs.realpath': 1,
  'dns.lookup': 1,
  'tcp.connect': 1,
  'fs.fetch': 2,
  'incoming.subscribe': 3,
  'incoming.unsubscribe': 3,
  'incoming.accepted': 3,
  'incoming.revoked': 4,
  'fs.open': 5,
  'fs.write': 5,
  'fs.mkdir': 5,
  'fs.rmdir': 5,
  'fs.unlink': 5,
  'fs.rename': 5,
  'fs.chmod': 5,
  'udp.open': 5,
  'unix.connect': 5,
  'agent.park': 6,
  'fs.get': 7,
  'tcp.connectFd': 8,
  'tcp.releaseFd': 8,
  'dns.serveLayer': 9,
  'link.direct': 10,
};

export function isOperation(op: string): op is Operation {
  return Object.hasOwn(operationSince, op);
}

/**
 * A process as one machine's view names it: its PID and start time (clock ticks since boot), in the PID namespace
 * `pidNamespace` (its inode) of the kernel booted as `boot`. A process with the same boot and PID namespace sees the
 * same process at that PID, for as long as it has that start time.
 */
export interface ProcessPlace {
  pid: number;
  start: string;
  boot: string;
  pidNamespace: number;
}

export function isProcessPlace(value: unknown): value is ProcessPlace {
  const place = value as Partial<ProcessPlace> | undefined;
  return typeof place === 'object' && place !== null && Number.isSafeInteger(place.pid) && typeof place.start === 'string' && typeof place.boot === 'string' && Number.isSafeInteger(place.pidNamespace);
}

export type ControlMessage =
  // `pid`: the sender's process, sent by an agent that serves `tcp.connectFd`; `target`: the target's process as a
  // launcher's agent sees it (older peers ignore both).
  | { t: 'hello'; protocol: string; version: number; features: string[]; software: string; pid?: number; target?: unknown }
  | { t: 'req'; id: number; op: string; args: unknown }
  // `us`: how long the answering side took, in µs; only an agent started with --trace sends it, and peers ignore it.
  | { t: 'res'; id: number; ok: unknown; us?: number }
  | { t: 'res'; id: number; err: { code: string; message: string }; us?: number }
  // The last frame on the old stream of a move, from the client (`move`) and then from the agent (`moved`).
  | { t: 'move' }
  | { t: 'moved' };

// One of each, reused: `encode` and `decode` make a new one per message (a 2 KiB buffer, its views, and the
// decoder's state), which is most of what a small request allocates on both ends.
const encoder = new Encoder();
const decoder = new Decoder();

export function encodeControl(message: ControlMessage): Uint8Array {
  return encoder.encode(message);
}

export function decodeControl(body: Uint8Array): ControlMessage {
  let value: unknown;
  try {
    value = decoder.decode(body);
  } catch (error) {
    throw new ProtocolError('E_PROTOCOL_MESSAGE', `agent stream: undecodable control message (${(error as Error).message})`);
  }
  if (!isControl(value)) throw new ProtocolError('E_PROTOCOL_MESSAGE', 'agent stream: control message of unknown shape');
  return value;
}

function isControl(value: unknown): value is ControlMessage {
  if (typeof value !== 'object' || value === null) return false;
  const m = value as Record<string, unknown>;
  switch (m.t) {
    case 'hello':
      return typeof m.protocol === 'string' && typeof m.version === 'number' && Array.isArray(m.features) && typeof m.software === 'string';
    case 'req':
      return Number.isSafeInteger(m.id) && typeof m.op === 'string' && 'args' in m;
    case 'res': {
      if (!Number.isSafeInteger(m.id)) return false;
      if ('ok' in m) return true;
      const err = m.err as Record<string, unknown> | undefined;
      return typeof err === 'object' && err !== null && typeof err.code === 'string' && typeof err.message === 'string';
    }
    case 'move':
    case 'moved':
      return true;
    default:
      return false;
  }
}
