// The proxy's side of the agent connection: handshake, then one typed method per agent operation.
import type { Duplex } from 'node:stream';
import { readFileSync } from 'node:fs';
import { Connection, DEFAULT_REQUEST_TIMEOUT_MS, type ConnectionOptions, type RequestHandler } from '../protocol/connection.ts';
import { RemoteError } from '../protocol/errors.ts';
import { ENV_HOSTNAME_SINCE, FEATURE_CONNECT_FD, LAYER_DNS_CLIENT_SINCE, type Operations, type SocketAddress } from '../protocol/messages.ts';
import { fetchFile, openForWrite, writeFile, type FetchedFile } from './fetch-file.ts';
import type { DirEntry, RemoteStat } from './layer-handler.ts';
import type { LocalTarget } from '../platform/local-target.ts';

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

export interface AgentClient {
  /**
   * Settles once `connection` and `handoverPid` say what the agent is: at once for a client, later for a session's agent
   * asked while its agents start (its requests wait for them by themselves).
   */
  readonly connected: Promise<void>;
  readonly connection: Connection;
  /** The target's environment and, with `withHostname`, its /etc/hostname's content (undefined when it has none). */
  env(withHostname: boolean): Promise<{ vars: Record<string, string>; hostnameFile?: string | undefined }>;
  stat(path: string, follow: boolean): Promise<RemoteStat>;
  /** The stat and the whole content of a file, for the layer's memfd. */
  fetch(path: string): Promise<FetchedFile>;
  /**
   * A regular file's stat and the path that reaches it from this machine, for the program to open itself (undefined for
   * any other kind of file). The session's where its platform reaches the target's files (a local process), not the link's.
   */
  hostFile?(path: string): Promise<{ stat: RemoteStat; hostPath: string } | undefined>;
  readdir(path: string): Promise<DirEntry[]>;
  readlink(path: string): Promise<string>;
  access(path: string, mode: number): Promise<void>;
  realpath(path: string): Promise<string>;
  /** Opens (maybe creates or truncates) a file on the target for writing: its stat, and its content unless new or truncated. */
  openForWrite(path: string, flags: number, mode: number): Promise<FetchedFile>;
  /** Writes `data` into the target's file at `offset`, truncating it there, or at its end (`append`). */
  writeBack(path: string, data: Uint8Array, offset: number, append: boolean): Promise<void>;
  mkdir(path: string, mode: number): Promise<void>;
  rmdir(path: string): Promise<void>;
  unlink(path: string): Promise<void>;
  rename(from: string, to: string, noReplace: boolean): Promise<void>;
  chmod(path: string, mode: number, follow: boolean): Promise<void>;
  lookup(name: string, family: 0 | 4 | 6): Promise<Operations['dns.lookup']['result']>;
  connectTcp(host: string, port: number): Promise<{ stream: Duplex; localAddress: string; localPort: number }>;
  /** The agent's process when it hands its connected sockets over (`tcp.connectFd`, process platform), else undefined. */
  handoverPid(): number | undefined;
  /**
   * The target's process on this machine (a local process target, or a pod on this very node), while it runs: a
   * program's layer opens the target's files in its root and makes its outgoing sockets in its network namespace
   * itself, with no agent in the way; undefined where the agent does all that. The session's, not the link's.
   */
  localTarget?(): LocalTarget | undefined;
  /** Connects and hands the socket over: its descriptor in the agent's process, and the token that releases it. */
  connectTcpFd(host: string, port: number): Promise<Operations['tcp.connectFd']['result']>;
  /** The program took the socket of `token`, or could not: the agent closes its copy. Nothing waits for the answer. */
  releaseFd(token: number): void;
  /**
   * Has the agent answer the layer's lookups itself on the Unix socket `socket` for as long as this link lasts (version 9,
   * an agent on this machine; version 11, a launcher's agent whose target the session reaches itself); false where it
   * does not.
   */
  serveLayerDns(socket: string): Promise<boolean>;
  /** A stream to the target's Unix socket at `path` (or abstract name); version 5. */
  connectUnix(path: string, abstract: boolean): Promise<Duplex>;
  /**
   * A UDP socket in the target's network namespace: datagrams (framed by `datagrams.ts`) may be written at once, and
   * `opened` settles with the agent's answer. Ending the stream closes the socket.
   */
  openUdp(): { stream: Duplex; opened: Promise<void> };
  /** Connections to the target's port come to us (steal) or are copied to us (mirror), through `serveIncoming`'s handler. */
  subscribeIncoming(args: Operations['incoming.subscribe']['args']): Promise<Operations['incoming.subscribe']['result']>;
  unsubscribeIncoming(port: number): Promise<void>;
  /** Leaves the agent warm for the next session (see `agent.park`). */
  park(args: Operations['agent.park']['args']): Promise<void>;
  /**
   * Who takes the connections the agent hands over, and hears of a port another session took over; until one is set,
   * or after `undefined`, connections are refused. Set after the handshake: the proxy that takes them starts once the
   * session has its agents.
   */
  serveIncoming(handler: IncomingHandler | undefined): void;
  /**
   * Brings the link's round trip to compiled code at both ends while the session is idle (see Connection's `prime`);
   * says whether it stayed idle.
   */
  prime(): Promise<boolean>;
  close(): void;
}

export interface IncomingHandler {
  /** A connection that arrived at a subscribed port: the caller's bytes come on `stream`. A rejection resets it. */
  accepted(accepted: { port: number; peer: SocketAddress; local: SocketAddress; stream: Duplex }): Promise<void>;
  /** Another session's steal (`by`) took the port over. */
  revoked(revoked: Operations['incoming.revoked']['args']): void;
}

/** Round trips enough for V8 to compile a round trip's functions at both ends; each takes about 1 ms on an idle link. */
const PRIME_PINGS = 40;

export interface AgentClientOptions {
  handshakeTimeoutMs: number;
  /** `agent.communication_timeout` in ms: the deadline of every request, and of silence within a file transfer. */
  communicationTimeoutMs?: number;
  /** `--trace`: told of each request as it goes out (see Connection's `onCall`). */
  onCall?: ConnectionOptions['onCall'];
}

export async function connectAgent(stream: Duplex, options: AgentClientOptions): Promise<AgentClient> {
  const communicationTimeoutMs = options.communicationTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  let incoming: IncomingHandler | undefined;
  const connection = await Connection.open(stream, {
    role: 'client',
    software: `doppel ${version}`,
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    requestTimeoutMs: communicationTimeoutMs,
    onRequest: serveAgentRequests(() => incoming),
    onCall: options.onCall,
  });
  return {
    connected: Promise.resolve(),
    connection,
    async env(withHostname) {
      if (!withHostname) return { vars: (await connection.request('env', {})).vars };
      if (connection.peer.version >= ENV_HOSTNAME_SINCE) {
        const { vars, hostname } = await connection.request('env', { hostname: true });
        return { vars, hostnameFile: hostname };
      }
      // An older agent: the file as the program would read it, alongside.
      const [{ vars }, hostnameFile] = await Promise.all([
        connection.request('env', {}),
        fetchFile(connection, '/etc/hostname', communicationTimeoutMs).then(({ data }) => Buffer.from(data).toString('utf8'), () => undefined),
      ]);
      return { vars, hostnameFile };
    },
    stat: (path, follow) => connection.request('fs.stat', { path, follow }),
    fetch: (path) => fetchFile(connection, path, communicationTimeoutMs),
    readdir: async (path) => (await connection.request('fs.readdir', { path })).entries,
    readlink: async (path) => (await connection.request('fs.readlink', { path })).target,
    access: async (path, mode) => {
      await connection.request('fs.access', { path, mode });
    },
    realpath: async (path) => (await connection.request('fs.realpath', { path })).path,
    openForWrite: (path, flags, mode) => openForWrite(connection, path, flags, mode, communicationTimeoutMs),
    writeBack: (path, data, offset, append) => writeFile(connection, path, data, offset, append),
    async mkdir(path, mode) {
      await connection.request('fs.mkdir', { path, mode });
    },
    async rmdir(path) {
      await connection.request('fs.rmdir', { path });
    },
    async unlink(path) {
      await connection.request('fs.unlink', { path });
    },
    async rename(from, to, noReplace) {
      await connection.request('fs.rename', { from, to, noReplace });
    },
    async chmod(path, mode, follow) {
      await connection.request('fs.chmod', { path, mode, follow });
    },
    lookup: (name, family) => connection.request('dns.lookup', { name, family }),
    async connectTcp(host, port) {
      const channel = connection.openChannel();
      try {
        const { localAddress, localPort } = await connection.request('tcp.connect', { host, port, channel: channel.id });
        return { stream: channel, localAddress, localPort };
      } catch (error) {
        // A reset, so that an agent still connecting when our deadline passed gives up too.
        channel.destroy();
        throw error;
      }
    },
    handoverPid: () => (connection.supports('tcp.connectFd') && connection.peer.features.includes(FEATURE_CONNECT_FD) ? connection.peer.pid : undefined),
    connectTcpFd: (host, port) => connection.request('tcp.connectFd', { host, port }),
    releaseFd(token) {
      // An agent that is gone closed its copies with it.
      connection.request('tcp.releaseFd', { token }).catch(() => undefined);
    },
    async serveLayerDns(socket) {
      if (connection.peer.features.includes(FEATURE_CONNECT_FD)) {
        if (!connection.supports('dns.serveLayer')) return false;
        await connection.request('dns.serveLayer', { socket });
        return true;
      }
      // A launcher's agent, on this machine only where the session reaches its target itself: it binds in our root.
      if (connection.peer.version < LAYER_DNS_CLIENT_SINCE) return false;
      await connection.request('dns.serveLayer', { socket, client: process.pid });
      return true;
    },
    openUdp() {
      const channel = connection.openChannel();
      // Data written after this request reaches the agent after it, once the agent has attached the channel.
      const opened = connection.request('udp.open', { channel: channel.id }).then(
        () => undefined,
        (error: unknown) => {
          channel.destroy();
          throw error;
        },
      );
      return { stream: channel, opened };
    },
    async connectUnix(path, abstract) {
      const channel = connection.openChannel();
      try {
        await connection.request('unix.connect', { path, abstract, channel: channel.id });
        return channel;
      } catch (error) {
        channel.destroy();
        throw error;
      }
    },
    subscribeIncoming: (args) => connection.request('incoming.subscribe', args),
    async unsubscribeIncoming(port) {
      await connection.request('incoming.unsubscribe', { port });
    },
    serveIncoming(handler) {
      incoming = handler;
    },
    async park(args) {
      await connection.request('agent.park', args);
    },
    prime: () => connection.prime(PRIME_PINGS),
    close: () => connection.close(),
  };
}

/** The requests an agent sends us: `incoming.accepted` and `incoming.revoked`. */
function serveAgentRequests(handler: () => IncomingHandler | undefined): RequestHandler {
  return async (op, args, connection) => {
    if (op === 'incoming.revoked') {
      handler()?.revoked(args as Operations['incoming.revoked']['args']);
      return {};
    }
    if (op !== 'incoming.accepted') throw new RemoteError('ENOSYS', `${op} is served by the agent, not the client`);
    const { port, channel: id, peer, local } = args as Operations['incoming.accepted']['args'];
    // Attached before anything is awaited: the caller's bytes follow this request at once.
    const channel = connection.attachChannel(id);
    const serve = handler();
    try {
      if (!serve) throw new RemoteError('ECONNREFUSED', `nothing takes connections to port ${port}`);
      await serve.accepted({ port, peer, local, stream: channel });
      return {};
    } catch (error) {
      channel.destroy();
      throw error;
    }
  };
}
