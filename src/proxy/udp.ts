// Outgoing UDP from the layer: a loopback relay socket per remote destination, and an agent socket per program socket.
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import type { Duplex } from 'node:stream';
import { DatagramDecoder, encodeDatagram } from '../protocol/datagrams.ts';
import type { AgentClient } from './agent-client.ts';
import { errorAnswer } from './answer.ts';
import type { Answer, LayerHandler, SockAddr } from './layer-handler.ts';
import { boundUdpPorts } from './listening-sockets.ts';
import type { Route } from './route.ts';

/** Datagrams waiting for the agent beyond this are dropped, as a full socket buffer drops them. */
const MAX_QUEUED = 1024 * 1024;
/** Besides every layer disconnect, flows of closed program sockets are ended this often... */
const SWEEP_MS = 10_000;
/** ...and at most once a second while there are this many: c-ares opens a socket per query. */
const MANY_FLOWS = 64;
const BUSY_SWEEP_MS = 1_000;

export interface UdpRequests extends Pick<LayerHandler, 'udpRoute'> {
  /** Ends the flows of program sockets that no longer exist. */
  sweep(): Promise<void>;
  close(): void;
}

interface Flow {
  stream: Duplex;
  /** The program socket's port, to find it in /proc/net/udp. */
  port: number;
  serial: number;
}

const key = (address: string, port: number) => `${address}|${port}`;

export function createUdpRequests(agent: AgentClient, route: Route, notice: (text: string) => void): UdpRequests {
  /** By destination: the answer every layer gets for it, kept for the session (errors are not kept). */
  const routes = new Map<string, Promise<Answer<{ via: SockAddr }>>>();
  /** By destination: the relay whose datagrams are that destination's. */
  const relays = new Map<string, Socket>();
  /** By the program socket's address, as the relays see it. */
  const flows = new Map<string, Flow>();
  let serial = 0;
  let sweeper: NodeJS.Timeout | undefined;
  let lastSweep = 0;
  const warned = new Set<string>();
  const warnOnce = (text: string) => {
    if (warned.has(text)) return;
    warned.add(text);
    notice(text);
  };

  // The target-side socket of one program socket: replies from any destination it sent to come back through that destination's relay.
  const flowFor = (program: RemoteInfo): Duplex => {
    const id = key(program.address, program.port);
    const known = flows.get(id);
    if (known) return known.stream;
    const { stream, opened } = agent.openUdp();
    flows.set(id, { stream, port: program.port, serial: ++serial });
    sweeper ??= setInterval(() => void sweep(), SWEEP_MS).unref();
    if (flows.size > MANY_FLOWS && Date.now() - lastSweep > BUSY_SWEEP_MS) void sweep();
    opened.catch((error: Error) => warnOnce(`outgoing UDP through the target failed: ${error.message}`));
    const decoder = new DatagramDecoder();
    stream.on('data', (chunk: Buffer) => {
      try {
        for (const reply of decoder.push(chunk)) relays.get(key(reply.address, reply.port))?.send(reply.data, program.port, program.address);
      } catch (error) {
        stream.destroy(error as Error);
      }
    });
    stream.once('end', () => stream.end());
    stream.once('close', () => {
      if (flows.get(id)?.stream === stream) flows.delete(id);
    });
    return stream;
  };

  const openRelay = async (remote: SockAddr): Promise<SockAddr> => {
    // On loopback only, like the TCP relay's listeners: nothing off this machine can send through it.
    const socket = createSocket('udp4');
    socket.on('message', (data, program) => {
      const stream = flowFor(program);
      if (stream.writableLength <= MAX_QUEUED) stream.write(encodeDatagram({ address: remote.address, port: remote.port, data }));
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, '127.0.0.1', () => {
        socket.off('error', reject);
        resolve();
      });
    });
    socket.on('error', () => undefined);
    relays.set(key(remote.address, remote.port), socket);
    return { family: 4, address: '127.0.0.1', port: socket.address().port };
  };

  const decide = async (remote: SockAddr): Promise<Answer<{ via: SockAddr }>> => {
    if ((await route({ address: remote.address, port: remote.port, protocol: 'udp' })) === 'local') return { kind: 'local' };
    await agent.connected;
    if (!agent.connection.supports('udp.open')) {
      warnOnce(`the agent (${agent.connection.peer.software}) speaks protocol ${agent.connection.peer.version}: outgoing UDP through the target needs protocol 5, so the program's UDP to the target's network fails (use the agent of the same doppel version as the CLI, or --no-udp-outgoing)`);
      return { kind: 'error', code: 'ENETUNREACH' };
    }
    try {
      return { kind: 'remote', value: { via: await openRelay(remote) } };
    } catch (error) {
      return errorAnswer(error);
    }
  };

  const sweep = async () => {
    if (flows.size === 0) return;
    lastSweep = Date.now();
    // Flows made while the tables are read may belong to sockets bound after the read.
    const before = serial;
    const bound = await boundUdpPorts();
    for (const [id, flow] of flows) {
      if (flow.serial > before || bound.has(flow.port)) continue;
      flows.delete(id);
      flow.stream.end();
    }
  };

  return {
    udpRoute(remote) {
      const id = key(remote.address, remote.port);
      let answer = routes.get(id);
      if (answer === undefined) {
        answer = decide(remote);
        routes.set(id, answer);
        void answer.then((settled) => {
          if (settled.kind === 'error') routes.delete(id);
        });
      }
      return answer;
    },
    sweep,
    close() {
      clearInterval(sweeper);
      for (const flow of flows.values()) flow.stream.destroy();
      flows.clear();
      for (const socket of relays.values()) socket.close();
      relays.clear();
    },
  };
}
