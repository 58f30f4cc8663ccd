// The proxy's side of the agent connection: handshake, then one typed method per agent operation.
import type { Duplex } from 'node:stream';
import { readFileSync } from 'node:fs';
import { Connection, DEFAULT_REQUEST_TIMEOUT_MS } from '../protocol/connection.ts';
import type { Operations } from '../protocol/messages.ts';
import { fetchFile, type FetchedFile } from './fetch-file.ts';
import type { DirEntry, RemoteStat } from './layer-handler.ts';

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

export interface AgentClient {
  readonly connection: Connection;
  env(): Promise<Record<string, string>>;
  stat(path: string, follow: boolean): Promise<RemoteStat>;
  /** The stat and the whole content of a file, for the layer's memfd. */
  fetch(path: string): Promise<FetchedFile>;
  readdir(path: string): Promise<DirEntry[]>;
  readlink(path: string): Promise<string>;
  access(path: string, mode: number): Promise<void>;
  realpath(path: string): Promise<string>;
  lookup(name: string, family: 0 | 4 | 6): Promise<Operations['dns.lookup']['result']>;
  connectTcp(host: string, port: number): Promise<{ stream: Duplex; localAddress: string; localPort: number }>;
  close(): void;
}

export interface AgentClientOptions {
  handshakeTimeoutMs: number;
  /** `agent.communication_timeout` in ms: the deadline of every request, and of silence within a file transfer. */
  communicationTimeoutMs?: number;
}

export async function connectAgent(stream: Duplex, options: AgentClientOptions): Promise<AgentClient> {
  const communicationTimeoutMs = options.communicationTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const connection = await Connection.open(stream, {
    role: 'client',
    software: `doppel ${version}`,
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    requestTimeoutMs: communicationTimeoutMs,
  });
  return {
    connection,
    env: async () => (await connection.request('env', {})).vars,
    stat: (path, follow) => connection.request('fs.stat', { path, follow }),
    fetch: (path) => fetchFile(connection, path, communicationTimeoutMs),
    readdir: async (path) => (await connection.request('fs.readdir', { path })).entries,
    readlink: async (path) => (await connection.request('fs.readlink', { path })).target,
    access: async (path, mode) => {
      await connection.request('fs.access', { path, mode });
    },
    realpath: async (path) => (await connection.request('fs.realpath', { path })).path,
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
    close: () => connection.close(),
  };
}
