// The layer's lookups answered by the agent itself (`dns.serveLayer`: the process platform's agent, or a launcher's whose
// target's pod runs on its client's machine): the program's getaddrinfo then crosses one Node.js process, not two. The
// proxy's own layer server and DNS requests serve it, on this link's lookups.
import { lstatSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { createDnsPolicy } from '../config/network-policy.ts';
import type { Connection } from '../protocol/connection.ts';
import { RemoteError } from '../protocol/errors.ts';
import type { Operations } from '../protocol/messages.ts';
import { createDnsRequests } from '../proxy/dns.ts';
import { startLayerServer } from '../proxy/layer-server.ts';
import type { Log } from './log.ts';

type Lookup = (args: Operations['dns.lookup']['args']) => Promise<Operations['dns.lookup']['result']>;

/**
 * `onClientMachine`: the agent runs beside its client (the process platform) and binds the client's path as it is. A
 * launcher's agent binds it in the client's root, and only in the directory the client made for its session.
 */
export function createLayerDns(lookup: Lookup, log: Log, onClientMachine: boolean) {
  // The policy of a session without DNS filters (the only kind that asks): every name but localhost's is the target's.
  const requests = createDnsRequests({ lookup: (name, family) => lookup({ name, family }) }, createDnsPolicy({ enabled: true, filter: undefined }));
  return async ({ socket, client }: Operations['dns.serveLayer']['args'], connection: Connection): Promise<Record<string, never>> => {
    if (!socket.startsWith('/')) throw new RemoteError('EINVAL', `dns.serveLayer: "${socket}" is not an absolute path`);
    const path = client === undefined && onClientMachine ? socket : inClientRoot(socket, client);
    const server = await startLayerServer({ socketPath: path, handler: requests, onError: (error) => log.warn(`layer lookup: ${error.message}`) });
    log.debug(`answering the layer's lookups on ${path}`);
    // Its socket file goes with the link: a parked agent serves the next session on a socket of that session's.
    void connection.closed.then(() => server.close());
    return {};
  };
}

/** `socket` as this agent reaches it in process `client`'s root: in a directory `doppel-<client>-*` of the client's own. */
function inClientRoot(socket: string, client: number | undefined): string {
  if (client === undefined || !Number.isSafeInteger(client) || client <= 0) throw new RemoteError('ENOSYS', 'dns.serveLayer serves a client on the agent\'s machine, which names its process');
  const dir = dirname(socket);
  const root = `/proc/${client}/root`;
  let owner: number | undefined;
  try {
    const made = lstatSync(`${root}${dir}`);
    if (made.isDirectory() && basename(dir).startsWith(`doppel-${client}-`)) owner = made.uid;
    if (owner !== statSync(`/proc/${client}`).uid) owner = undefined;
  } catch {
    owner = undefined;
  }
  if (owner === undefined) throw new RemoteError('EACCES', `dns.serveLayer: ${dir} is not a session directory of process ${client} on this machine`);
  return `${root}${socket}`;
}
