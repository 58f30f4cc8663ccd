// The link to a Kubernetes agent: first through the port-forward, which reaches any cluster, then, once the agent has
// answered, moved to a TCP connection to the agent's pod where this machine reaches it (a node of its own, a pod
// network it routes to). A round trip through the API server, the kubelet and the runtime costs about a millisecond;
// straight to the pod, a small fraction of that. The move happens under the protocol (Connection.moveTo): requests,
// answers and channels in flight carry on.
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Connection } from '../../protocol/connection.ts';
import { trace } from '../../trace.ts';
import { admitted } from './agent-link.ts';
import type { ForwardedStream } from './port-forward.ts';

/** A pod address that does not answer a connect within this is not reachable from here. */
const CONNECT_MS = 500;
const ADMIT_MS = 2000;

export interface AgentLink {
  /** The stream the protocol starts on: the port-forward's. */
  readonly stream: Duplex;
  /** Settles with what ended the link: the port-forward's end, or the direct connection's once the link moved. */
  readonly closed: Promise<string>;
  /** Once the agent has answered: moves the link where it can (`direct`), else leaves it on the port-forward. */
  afterHandshake(connection: Connection): void;
  destroy(): void;
}

export function agentLink(forward: ForwardedStream, pod: string, direct: boolean): AgentLink {
  let current: Duplex = forward.stream;
  let end: (why: string) => void = () => {};
  const closed = new Promise<string>((resolve) => (end = resolve));
  // The port-forward's end counts until the move starts: the agent ends it once it has moved.
  void forward.closed.then((why) => current === forward.stream && end(why));
  return {
    stream: forward.stream,
    closed,
    afterHandshake(connection) {
      if (!direct || !connection.supports('link.direct')) return;
      void moveDirect(connection, pod, (socket) => {
        current = socket;
        socket.once('close', (hadError) => end(hadError ? 'the direct link to the agent broke' : 'the agent closed the direct link'));
      }).then(
        () => forward.stream.destroy(),
        (error: Error) => trace(`kubernetes: the link to ${pod} did not move from the port-forward: ${error.message}`),
      );
    },
    destroy() {
      forward.stream.destroy();
      current.destroy();
    },
  };
}

async function moveDirect(connection: Connection, pod: string, moving: (socket: Socket) => void): Promise<void> {
  const started = performance.now();
  const { addresses, port, key } = await connection.request('link.direct', {});
  const failures: string[] = [];
  for (const address of addresses) {
    let socket: Socket | undefined;
    try {
      socket = await connectWithin(address, port);
      // Whatever answered the connect may never answer the key: a listener that is not the agent.
      const silent = setTimeout((s: Socket) => s.destroy(new Error(`no answer to the key within ${ADMIT_MS} ms`)), ADMIT_MS, socket);
      await admitted(socket, key).finally(() => clearTimeout(silent));
    } catch (error) {
      socket?.destroy();
      failures.push(`${address}: ${(error as Error).message}`);
      continue;
    }
    moving(socket);
    await connection.moveTo(socket);
    trace(`kubernetes: the link to ${pod} moved to a direct connection to ${address}:${port} in ${(performance.now() - started).toFixed(1)} ms`);
    return;
  }
  throw new Error(`its pod is not reachable from here (${failures.join('; ') || 'no address'})`);
}

function connectWithin(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${CONNECT_MS} ms`));
    }, CONNECT_MS);
    // Errors after the connect reach whoever reads the socket then (the admission, the connection) by its close.
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
  });
}
