// What the layer may ask of the proxy, one method per layer request; the session implements it, the layer server calls it.

// A stat result and a directory entry are what the agent sends; the layer gets them unchanged.
import type { FastRule } from '../config/fs-fast-rules.ts';
import type { DirEntry, Stat as RemoteStat } from '../protocol/messages.ts';

export type { DirEntry, RemoteStat };

export interface SockAddr {
  family: 4 | 6;
  address: string;
  port: number;
}

export interface AddrInfoHints {
  family: number;
  socktype: number;
  protocol: number;
  flags: number;
}

/**
 * How a request was answered: done locally by the layer (optionally on another path, or a connect to another address),
 * failed with an errno name (`ENOENT`, or `EAI_NONAME` etc. for getaddrinfo), or done remotely.
 */
export type Answer<T> =
  | { kind: 'local'; path?: string; address?: SockAddr }
  | { kind: 'error'; code: string }
  | { kind: 'remote'; value: T };

/** A listening socket of the program as the kernel knows it. */
export interface ListeningSocket {
  /** Its inode, as /proc/net/tcp lists it: the socket outlives any one descriptor (dup, fork). */
  inode: bigint;
  /** An IPv6 socket that takes no IPv4 (IPV6_V6ONLY). */
  v6only: boolean;
}

/** A remote open: a file's whole content (with `handle` when opened for writing, write mode), a directory's local
 *  stand-in (a real directory mirroring its entries), or the path that reaches the file itself from this machine. */
export type Opened = { stat: RemoteStat; data: Uint8Array; handle?: number } | { stat: RemoteStat; directory: string } | { stat: RemoteStat; hostPath: string };

/** What the layer decides without asking: paths the rules call local, and TCP to loopback when that is always local. */
export interface FastPath {
  rules: FastRule[];
  loopbackTcpLocal: boolean;
  /** The agent's process when it hands its sockets over (`tcp.connectFd`): the layer checks once whether it may take them. */
  handoverPid?: number | undefined;
  /** Some writes go to the target: only then can a process hold written files (the layer looks for them only then). */
  remoteWrites: boolean;
  /** A process whose root is the target's (a local process target): the layer opens the files of `remote` rules there. */
  rootPid?: number | undefined;
  /** A process in the target's network when every non-loopback TCP connection goes there: the layer makes them there unasked. */
  networkPid?: number | undefined;
  /** The start time of the process `rootPid` and `networkPid` name (they name the same one when both are set), in clock
   *  ticks since boot (field 22 of /proc/PID/stat). The layer uses those pids only while that very process lives, since
   *  a target's process can exit during a session (a Kubernetes replica) and its PID be reused; then it asks. Absent
   *  (0 on the wire), the layer only watches that the process at the PID lives. */
  targetStart?: bigint | undefined;
  /** With `networkPid`: every UDP datagram to a non-loopback address goes there too (a socket connected to one is made there). */
  udpInNetwork?: boolean;
  /** The agent answers lookups itself on AGENT_DNS_SOCKET, next to the proxy's: the layer asks it first. */
  agentDns?: boolean;
  /** `--trace`: the layer tells of each remote call it settles itself (`layerCall`). */
  traced?: boolean;
}

/** The program's socket at connect, as the layer sees it. */
export interface ConnectingSocket {
  /** The layer can take a socket from the agent (pidfd_getfd works on it), and this one may be replaced (not bound). */
  takesFd: boolean;
  /** The layer can make a socket in another network namespace (setns), and this one may be replaced. */
  makesSocket: boolean;
  /** An IPv6 socket (6) reaches an IPv4 destination at its IPv4-mapped address. */
  family: 4 | 6;
}

/** A connected socket of the agent's for the layer to take: descriptor `fd` of process `pid`, released by `token`. */
export interface HandedOver {
  pid: number;
  fd: number;
  token: number;
}

/** A remote connect: relayed (`via` the loopback listener the layer connects to, `local` what getsockname reports), the
 *  agent's own socket handed over, or a socket the layer makes and connects itself in the network namespace of process
 *  `makeSocketIn` (the target's, on this machine). */
export type Connected = { via: SockAddr; local: SockAddr } | { handover: HandedOver } | { makeSocketIn: number };

/** Who opened a layer connection. */
export interface LayerPeer {
  pid: number;
  ppid: number;
  executable: string;
}

export interface LayerHandler {
  /** A connection's first request: who it is; the answer is what the layer may decide itself. */
  hello(peer: LayerPeer): Promise<Answer<FastPath>>;
  /** `hostFile`: the process may open the target's file by its path on this machine (see DP_HOST_FILE). */
  open(path: string, flags: number, mode: number, hostFile?: boolean): Promise<Answer<Opened>>;
  stat(path: string, follow: boolean): Promise<Answer<RemoteStat>>;
  access(path: string, mode: number): Promise<Answer<void>>;
  readlink(path: string): Promise<Answer<string>>;
  realpath(path: string): Promise<Answer<string>>;
  getaddrinfo(name: string, hints: AddrInfoHints): Promise<Answer<{ addresses: SockAddr[]; canonicalName: string }>>;
  /** A connection to `remote` from the program's `socket`: kept local, relayed, or the agent's socket handed over. */
  connect(socktype: number, remote: SockAddr, socket: ConnectingSocket): Promise<Answer<Connected>>;
  /** One way, nothing is answered: the layer took the socket of hand-over `token`, or could not. */
  handedOver(token: number, taken: boolean): Promise<Answer<void>>;
  /** One way, in a traced session: the layer settled a remote call itself (`call` as named here), taking `ms`. */
  layerCall(call: string, subject: string, ms: number): Promise<Answer<void>>;
  /** A server socket binds `requested` (port > 0): local binds as asked; remote names the local port to bind
   *  instead and whether a port taken locally may fall back to any free one. */
  bind(socktype: number, requested: SockAddr): Promise<Answer<{ port: number; fallback: boolean }>>;
  /** The socket bound for `requested` listens, really on `local`: remote means the target's port now comes here. */
  listen(requested: SockAddr, local: SockAddr, socket: ListeningSocket): Promise<Answer<void>>;
  /** A connection accepted on a subscribed socket, from `peer` as the kernel sees it: the real caller and the address it
   *  called on the target, or local when the proxy did not make it. */
  peerOf(peer: SockAddr, listenerPort: number): Promise<Answer<{ peer: SockAddr; local: SockAddr }>>;
  /** A descriptor of the subscribed socket bound for `port` was closed; other descriptors may still hold the socket. */
  unlisten(port: number, inode: bigint): Promise<Answer<void>>;
  /** The written file `handle` goes back to the target, now `size` bytes: send its content from `from` under `token`. */
  writeback(handle: number, size: number): Promise<Answer<{ from: number; token: number }>>;
  /** A piece of write-back `token` at `offset`; the `last` one is answered once the target has it all (or its errno). */
  writebackData(token: number, offset: number, data: Buffer, last: boolean): Promise<Answer<void>>;
  mkdir(path: string, mode: number): Promise<Answer<void>>;
  rmdir(path: string): Promise<Answer<void>>;
  unlink(path: string): Promise<Answer<void>>;
  /** Local answers with rewritten paths carry them as `from\0to`. */
  rename(from: string, to: string, noReplace: boolean): Promise<Answer<void>>;
  chmod(path: string, mode: number, follow: boolean): Promise<Answer<void>>;
  fchmod(handle: number, mode: number): Promise<Answer<void>>;
  /** Where the program's UDP datagrams to `remote` go: remote names the loopback relay to send them to instead. */
  udpRoute(remote: SockAddr): Promise<Answer<{ via: SockAddr }>>;
  /** connect() of an AF_UNIX stream socket to `path` (an abstract name when `abstract`): remote names the proxy's socket to connect to instead. */
  unixConnect(path: string, abstract: boolean): Promise<Answer<string>>;
}
