// The proxy's side of the agent connection: handshake, then one typed method per agent operation.
import type { Duplex } from 'node:stream';
import { readFileSync } from 'node:fs';
import { Connection } from '../protocol/connection.ts';
import type { Operations } from '../protocol/messages.ts';
import type { DirEntry, RemoteStat } from './layer-handler.ts';

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

export interface AgentClient {
  readonly connection: Connection;
  env(): Promise<Record<string, string>>;
  stat(path: string, follow: boolean): Promise<RemoteStat>;
  read(path: string, offset: number, length: number): Promise<{ stat: RemoteStat; data: Uint8Array; eof: boolean }>;
  readdir(path: string): Promise<DirEntry[]>;
  readlink(path: string): Promise<string>;
  access(path: string, mode: number): Promise<void>;
  realpath(path: string): Promise<string>;
  lookup(name: string, family: 0 | 4 | 6): Promise<Operations['dns.lookup']['result']>;
  connectTcp(host: string, port: number): Promise<{ stream: Duplex; localAddress: string; localPort: number }>;
  close(): void;
}

export async function connectAgent(stream: Duplex, options: { handshakeTimeoutMs: number }): Promise<AgentClient> {
  const connection = await Connection.open(stream, { role: 'client', software: `doppel ${version}`, handshakeTimeoutMs: options.handshakeTimeoutMs });
  return {
    connection,
    env: async () => (await connection.request('env', {})).vars,
    stat: (path, follow) => connection.request('fs.stat', { path, follow }),
    read: (path, offset, length) => connection.request('fs.read', { path, offset, length }),
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
        connection.forget(channel.id);
        throw error;
      }
    },
    close: () => connection.close(),
  };
}
