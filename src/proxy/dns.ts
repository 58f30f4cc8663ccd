// getaddrinfo from the layer: names the DNS policy sends remote are resolved by the agent, as the target resolves them.
// Every answer is remembered (ResolvedNames) so that outgoing filters by host name apply to connections to it.
import dns from 'node:dns';
import type { AgentClient } from './agent-client.ts';
import type { LayerHandler, SockAddr } from './layer-handler.ts';
import type { ResolvedNames } from './resolved-names.ts';

export interface DnsDecider {
  decide(name: string): 'remote' | 'local';
}

const AF_INET = 2;
const AF_INET6 = 10;

/** What the agent's errno-style DNS codes mean to getaddrinfo's caller. */
const eaiByCode: Record<string, string> = {
  ENOTFOUND: 'EAI_NONAME',
  ENODATA: 'EAI_NODATA',
  EAI_NONAME: 'EAI_NONAME',
  EAI_NODATA: 'EAI_NODATA',
  ESERVFAIL: 'EAI_AGAIN',
  ETIMEOUT: 'EAI_AGAIN',
  ETIMEDOUT: 'EAI_AGAIN',
  EAI_AGAIN: 'EAI_AGAIN',
  ECONNREFUSED: 'EAI_AGAIN',
  EREFUSED: 'EAI_FAIL',
};

export interface DnsRequestOptions {
  /** Where answers are remembered: only outgoing filters by host name need them. */
  names?: ResolvedNames;
  /**
   * Whether names resolved locally are remembered too (an outgoing filter lists host names): the proxy then resolves
   * them here as well, on the same machine's resolver, before the layer does.
   */
  rememberLocal?: boolean;
}

export function createDnsRequests(agent: Pick<AgentClient, 'lookup'>, policy: DnsDecider, { names, rememberLocal = false }: DnsRequestOptions = {}): Pick<LayerHandler, 'getaddrinfo'> {
  return {
    async getaddrinfo(name, hints) {
      const family = hints.family === AF_INET ? 4 : hints.family === AF_INET6 ? 6 : 0;
      if (policy.decide(name) === 'local') {
        if (rememberLocal && names) {
          const found = await dns.promises.lookup(name, { all: true, family }).catch(() => []);
          names.record(name, found.map(({ address }) => address), 'local');
        }
        return { kind: 'local' };
      }
      if (hints.family !== 0 && hints.family !== AF_INET && hints.family !== AF_INET6) return { kind: 'error', code: 'EAI_FAMILY' };
      try {
        const found = await agent.lookup(name, family);
        const addresses: SockAddr[] = found.addresses.map(({ address, family: f }) => ({ family: f === 6 ? 6 : 4, address, port: 0 }));
        if (addresses.length === 0) return { kind: 'error', code: 'EAI_NONAME' };
        const given = addresses.map(({ address }) => address);
        names?.record(name, given, 'remote');
        if (found.canonicalName && found.canonicalName !== name) names?.record(found.canonicalName, given, 'remote');
        return { kind: 'remote', value: { addresses, canonicalName: found.canonicalName ?? name } };
      } catch (error) {
        const code = (error as { code?: string }).code ?? '';
        return { kind: 'error', code: eaiByCode[code] ?? 'EAI_FAIL' };
      }
    },
  };
}
