// The program's server sockets: which binds take the target's traffic, a subscription for as long as its socket
// listens, and the real caller behind each connection the proxy hands to one.
import { isIP } from 'node:net';
import { isLoopback } from '../config/network-policy.ts';
import { errorAnswer } from './answer.ts';
import type { IncomingDecider, IncomingRequests } from './incoming.ts';
import type { LayerHandler, ListeningSocket, SockAddr } from './layer-handler.ts';
import { listeningInodes } from './listening-sockets.ts';

export interface ListenerRequests extends Pick<LayerHandler, 'bind' | 'listen' | 'peerOf' | 'unlisten'> {
  /** Ends the subscriptions whose socket no longer listens (a process exited without closing it). */
  sweep(): Promise<void>;
}

interface Subscription {
  inode: bigint;
  local: SockAddr;
}

const SOCK_STREAM = 1;
/**
 * Event-loop turns PEER_OF waits for the proxy's own connection to be recorded: the program can accept it, and ask,
 * before the proxy has run that connection's 'connect' handler.
 */
const PEER_OF_TURNS = 5;

export function createListenerRequests(
  incoming: Pick<IncomingRequests, 'listen' | 'unlisten' | 'peerOf'>,
  policy: Pick<IncomingDecider, 'decide'>,
): ListenerRequests {
  const subscriptions = new Map<number, Subscription>();

  const end = async (remotePort: number) => {
    subscriptions.delete(remotePort);
    await incoming.unlisten(remotePort);
  };

  const sweepOnce = async () => {
    if (subscriptions.size === 0) return;
    const live = await listeningInodes();
    for (const [remotePort, { inode }] of subscriptions) {
      // The agent drops every rule when the session ends, so a failed unsubscribe is only late, not lost.
      if (!live.has(inode)) await end(remotePort).catch(() => undefined);
    }
  };
  let sweeping: Promise<void> | undefined;
  let again = false;

  return {
    async bind(socktype, requested) {
      const decision = socktype === SOCK_STREAM ? policy.decide(requested.port, requested.address) : undefined;
      if (!decision) return { kind: 'local' };
      // mirrord's listen_ports name the local port exactly: no fallback from those.
      return { kind: 'remote', value: { port: decision.localPort ?? requested.port, fallback: decision.localPort === undefined } };
    },

    async listen(requested, local, socket) {
      const decision = policy.decide(requested.port, requested.address);
      if (!decision) return { kind: 'local' };
      const held = subscriptions.get(decision.remotePort);
      if (held?.inode === socket.inode) return { kind: 'remote', value: undefined };
      if (held) {
        if ((await listeningInodes()).has(held.inode)) return { kind: 'error', code: 'EADDRINUSE' };
        await end(decision.remotePort).catch(() => undefined);
      }
      subscriptions.set(decision.remotePort, { inode: socket.inode, local });
      try {
        await incoming.listen(decision.remotePort, connectable(local, socket));
        return { kind: 'remote', value: undefined };
      } catch (error) {
        subscriptions.delete(decision.remotePort);
        return errorAnswer(error);
      }
    },

    async peerOf(peer, listenerPort) {
      if (!isLoopback(peer.address) || ![...subscriptions.values()].some(({ local }) => local.port === listenerPort)) return { kind: 'local' };
      for (let turn = 0; turn <= PEER_OF_TURNS; turn++) {
        const found = incoming.peerOf(peer.port);
        if (found) return { kind: 'remote', value: { peer: withFamily(found.peer), local: withFamily(found.local) } };
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      return { kind: 'local' };
    },

    async unlisten(_port, inode) {
      const remotePort = [...subscriptions].find(([, subscription]) => subscription.inode === inode)?.[0];
      // Another descriptor (a dup, a forked child's copy) may still hold the socket.
      if (remotePort === undefined || (await listeningInodes()).has(inode)) return { kind: 'remote', value: undefined };
      try {
        await end(remotePort);
        return { kind: 'remote', value: undefined };
      } catch (error) {
        return errorAnswer(error);
      }
    },

    sweep() {
      // One sweep at a time, and one more after it when a process ended while it read the tables.
      if (sweeping) {
        again = true;
        return sweeping;
      }
      sweeping = (async () => {
        do {
          again = false;
          await sweepOnce();
        } while (again);
      })().finally(() => (sweeping = undefined));
      return sweeping;
    },
  };
}

/** Where the proxy can connect to a listener: loopback for a wildcard address, IPv4 unless the socket is IPv6-only. */
function connectable(local: SockAddr, socket: ListeningSocket): SockAddr {
  const wildcard = local.family === 4 ? local.address === '0.0.0.0' : /^[0:]+$/.test(local.address);
  if (!wildcard) return local;
  return local.family === 6 && socket.v6only ? { family: 6, address: '::1', port: local.port } : { family: 4, address: '127.0.0.1', port: local.port };
}

function withFamily(endpoint: { address: string; port: number }): SockAddr {
  return { family: isIP(endpoint.address) === 6 ? 6 : 4, address: endpoint.address, port: endpoint.port };
}
