// Which way the program's traffic to an address goes: to the target's resolver on port 53 it is DNS and follows
// feature.network.dns; anything else follows feature.network.outgoing (its tcp/udp switch and filter).
import { SocketAddress } from 'node:net';
import type { Destination, OutgoingPolicy } from '../config/network-policy.ts';
import type { AgentClient } from './agent-client.ts';

type Way = 'remote' | 'local';

export interface ResolverDecider {
  /** DNS queries the program sends to the target's resolver itself (c-ares, dig), not through getaddrinfo. */
  queries(): Way;
}

export type Route = (target: Destination) => Promise<Way>;

/** The target may change its resolv.conf; reading it once in a while is plenty for traffic that asks once per address. */
const RESOLVERS_FRESH_MS = 10_000;

export function createRoute(agent: Pick<AgentClient, 'fetch'>, outgoing: Pick<OutgoingPolicy, 'decide'>, dns: ResolverDecider): Route {
  let read: { at: number; servers: Promise<Set<string>> } | undefined;
  const resolvers = () => {
    if (read === undefined || Date.now() - read.at > RESOLVERS_FRESH_MS) {
      const servers = agent.fetch('/etc/resolv.conf').then(({ data }) => nameservers(Buffer.from(data).toString('utf8')), () => new Set<string>());
      read = { at: Date.now(), servers };
    }
    return read.servers;
  };
  return async (target) => {
    if (target.port === 53 && (await resolvers()).has(canonical(target.address))) return dns.queries();
    return outgoing.decide(target);
  };
}

/** The addresses of resolv.conf's `nameserver` lines (glibc reads the first three). */
export function nameservers(text: string): Set<string> {
  const listed = [...text.matchAll(/^[ \t]*nameserver[ \t]+([^\s#;]+)/gm)].map((match) => canonical(match[1]!));
  return new Set(listed.slice(0, 3));
}

function canonical(address: string): string {
  if (!address.includes(':')) return address;
  try {
    return new SocketAddress({ address, family: 'ipv6' }).address;
  } catch {
    return address;
  }
}
