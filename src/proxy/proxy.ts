// The internal proxy: serves every layer connection of one session from a private Unix socket, backed by one agent.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentClient } from './agent-client.ts';
import { createDnsRequests, type DnsDecider } from './dns.ts';
import { createFileRequests, type FsDecider } from './files.ts';
import type { LayerHandler } from './layer-handler.ts';
import { startLayerServer } from './layer-server.ts';
import { createOutgoingRequests, type OutgoingDecider } from './outgoing.ts';

export interface ProxyOptions {
  agent: AgentClient;
  fs: FsDecider;
  dns: DnsDecider;
  outgoing: OutgoingDecider;
}

export interface Proxy {
  /** The socket the layer connects to; handed to the program as DOPPEL_LAYER_SOCKET. */
  readonly socketPath: string;
  close(): Promise<void>;
}

export async function startProxy(options: ProxyOptions): Promise<Proxy> {
  // A fresh 0700 directory keeps other local users off the socket.
  const dir = await mkdtemp(join(tmpdir(), 'doppel-'));
  const socketPath = join(dir, 'layer.sock');
  const outgoing = createOutgoingRequests(options.agent, options.outgoing);
  const handler: LayerHandler = {
    ...createFileRequests(options.agent, options.fs),
    ...createDnsRequests(options.agent, options.dns),
    connect: outgoing.connect,
  };
  try {
    const server = await startLayerServer({ socketPath, handler });
    let closing: Promise<void> | undefined;
    return {
      socketPath,
      close() {
        closing ??= (async () => {
          outgoing.close();
          await server.close();
          await rm(dir, { recursive: true, force: true });
        })();
        return closing;
      },
    };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}
