// The layer's lookups answered by the agent itself (`dns.serveLayer`, process platform): the program's getaddrinfo then
// crosses one Node.js process, not two. The proxy's own layer server and DNS requests serve it, on this link's lookups.
import { createDnsPolicy } from '../config/network-policy.ts';
import type { Connection } from '../protocol/connection.ts';
import { RemoteError } from '../protocol/errors.ts';
import type { Operations } from '../protocol/messages.ts';
import { createDnsRequests } from '../proxy/dns.ts';
import { startLayerServer } from '../proxy/layer-server.ts';
import type { Log } from './log.ts';

type Lookup = (args: Operations['dns.lookup']['args']) => Promise<Operations['dns.lookup']['result']>;

export function createLayerDns(lookup: Lookup, log: Log) {
  // The policy of a session without DNS filters (the only kind that asks): every name but localhost's is the target's.
  const requests = createDnsRequests({ lookup: (name, family) => lookup({ name, family }) }, createDnsPolicy({ enabled: true, filter: undefined }));
  return async ({ socket }: Operations['dns.serveLayer']['args'], connection: Connection): Promise<Record<string, never>> => {
    if (!socket.startsWith('/')) throw new RemoteError('EINVAL', `dns.serveLayer: "${socket}" is not an absolute path`);
    const server = await startLayerServer({ socketPath: socket, handler: requests, onError: (error) => log.warn(`layer lookup: ${error.message}`) });
    log.debug(`answering the layer's lookups on ${socket}`);
    // Its socket file goes with the link: a parked agent serves the next session on a socket of that session's.
    void connection.closed.then(() => server.close());
    return {};
  };
}
