// What the layer may ask of the proxy, one method per layer request; the session implements it, the layer server calls it.

// A stat result and a directory entry are what the agent sends; the layer gets them unchanged.
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
 * How a request was answered: done locally by the layer (optionally on another path),
 * failed with an errno name (`ENOENT`, or `EAI_NONAME` etc. for getaddrinfo), or done remotely.
 */
export type Answer<T> =
  | { kind: 'local'; path?: string }
  | { kind: 'error'; code: string }
  | { kind: 'remote'; value: T };

export interface LayerHandler {
  open(path: string, flags: number, mode: number): Promise<Answer<{ stat: RemoteStat; data: Uint8Array }>>;
  stat(path: string, follow: boolean): Promise<Answer<RemoteStat>>;
  access(path: string, mode: number): Promise<Answer<void>>;
  readlink(path: string): Promise<Answer<string>>;
  listdir(path: string): Promise<Answer<DirEntry[]>>;
  realpath(path: string): Promise<Answer<string>>;
  getaddrinfo(name: string, hints: AddrInfoHints): Promise<Answer<{ addresses: SockAddr[]; canonicalName: string }>>;
  /** Relays a connection: `via` is the loopback listener the layer connects to instead, `local` what getsockname reports. */
  connect(socktype: number, remote: SockAddr): Promise<Answer<{ via: SockAddr; local: SockAddr }>>;
}
