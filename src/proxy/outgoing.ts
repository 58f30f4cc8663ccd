// Outgoing TCP from the layer: the agent connects from the target's network, and a one-shot loopback listener hands the stream to the program.
import { createServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream';
import type { AgentClient } from './agent-client.ts';
import { errorAnswer } from './answer.ts';
import type { LayerHandler, SockAddr } from './layer-handler.ts';

export interface OutgoingDecider {
  decide(target: { address: string; port: number; protocol: 'tcp' | 'udp' }): 'remote' | 'local';
}

const SOCK_STREAM = 1;
/** How long a relayed connection waits for the layer to connect to its loopback listener. */
const HANDOFF_TIMEOUT_MS = 10_000;

export interface OutgoingRequests extends Pick<LayerHandler, 'connect'> {
  close(): void;
}

export function createOutgoingRequests(agent: AgentClient, policy: OutgoingDecider): OutgoingRequests {
  const open = new Set<{ destroy(): void }>();
  return {
    async connect(socktype, target) {
      if (socktype !== SOCK_STREAM) return { kind: 'local' };
      if (policy.decide({ address: target.address, port: target.port, protocol: 'tcp' }) === 'local') return { kind: 'local' };
      let relayed: Awaited<ReturnType<AgentClient['connectTcp']>>;
      try {
        relayed = await agent.connectTcp(target.address, target.port);
      } catch (error) {
        return errorAnswer(error, 'ECONNREFUSED');
      }
      const via = await handOff(relayed.stream, open);
      const local: SockAddr = { family: relayed.localAddress.includes(':') ? 6 : 4, address: relayed.localAddress, port: relayed.localPort };
      return { kind: 'remote', value: { via, local } };
    },
    close() {
      for (const item of open) item.destroy();
      open.clear();
    },
  };
}

/** Listens once on loopback; the first connection is spliced to the relayed stream. */
async function handOff(stream: Duplex, open: Set<{ destroy(): void }>): Promise<SockAddr> {
  const server = createServer({ noDelay: true });
  const tracked = { destroy: () => { server.close(); stream.destroy(); } };
  open.add(tracked);
  const timer = setTimeout(() => tracked.destroy(), HANDOFF_TIMEOUT_MS);
  server.once('connection', (socket: Socket) => {
    clearTimeout(timer);
    server.close();
    open.delete(tracked);
    const pair = { destroy: () => { socket.destroy(); stream.destroy(); } };
    open.add(pair);
    let ended = 0;
    const done = () => { if (++ended === 2) open.delete(pair); };
    pipeline(socket, stream, () => done());
    pipeline(stream, socket, () => done());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('loopback listener has no port');
  return { family: 4, address: '127.0.0.1', port: address.port };
}
