// The layer's lookups answered by the agent itself (`dns.serveLayer`: the process platform's agent, or a launcher's whose
// target's pod runs on its client's machine): the program's getaddrinfo then crosses one Node.js process, not two. The
// proxy's own layer server and DNS requests serve it, on this link's lookups.
import { lstatSync, rmSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import process from 'node:process';
import { createDnsPolicy } from '../config/network-policy.ts';
import type { Connection } from '../protocol/connection.ts';
import { RemoteError } from '../protocol/errors.ts';
import type { Operations } from '../protocol/messages.ts';
import { createDnsRequests } from '../proxy/dns.ts';
import { startLayerServer, type LayerServer } from '../proxy/layer-server.ts';
import { createDns } from './dns.ts';
import type { Log } from './log.ts';

type Lookup = (args: Operations['dns.lookup']['args']) => Promise<Operations['dns.lookup']['result']>;

/**
 * `onClientMachine`: the agent runs beside its client (the process platform) and binds the client's path as it is. A
 * launcher's agent binds it in the client's root, and only in the directory the client made for its session.
 */
export function createLayerDns(lookup: Lookup, log: Log, onClientMachine: boolean) {
  return async ({ socket, client }: Operations['dns.serveLayer']['args'], connection: Connection): Promise<Record<string, never>> => {
    if (!socket.startsWith('/')) throw new RemoteError('EINVAL', `dns.serveLayer: "${socket}" is not an absolute path`);
    const path = client === undefined && onClientMachine ? socket : inClientRoot(socket, client);
    const server = await serveLookups(path, lookup, log);
    // Its socket file goes with the link: a parked agent serves the next session on a socket of that session's.
    void connection.closed.then(() => server.close());
    return {};
  };
}

/**
 * The agent bin/doppel starts beside the CLI answers lookups from its start, before any client: a program started from
 * a launch plan (layer/src/plan.c, which links its session's AGENT_DNS_SOCKET here) runs before its CLI has loaded, and
 * its first lookup need not wait for it. Bound before the agent listens for its CLI, so that the CLI, once linked,
 * knows whether it is served (src/proxy/proxy.ts). Closed by the caller when its first session ends.
 */
export async function serveEarlyLookups(path: string, pid: number, log: Log): Promise<EarlyLookups | undefined> {
  // From the start: a planned program's first lookup comes as the socket appears, and a pause is counted from there.
  // In ms of process.uptime(): the `performance` global would load perf_hooks before the hello.
  const now = () => process.uptime() * 1000;
  let last = now();
  const lookup = createDns(`/proc/${pid}/root`);
  try {
    const server = await serveLookups(
      path,
      (args) => {
        last = now();
        return lookup(args);
      },
      log,
    );
    process.once('exit', () => rmSync(path, { force: true }));
    const quiet = (ms: number) =>
      new Promise<void>((resolve) => {
        const check = () => {
          const since = now() - last;
          if (since >= ms) resolve();
          else setTimeout(check, ms - since).unref();
        };
        // On a timer's turn even when quiet already: after what the caller flushes with setImmediate.
        setTimeout(check, 0).unref();
      });
    return { ...server, quiet };
  } catch (error) {
    log.warn(`cannot answer lookups on ${path}: ${(error as Error).message}`);
    return undefined;
  }
}

export interface EarlyLookups extends LayerServer {
  /** Settles once no lookup has come for `ms`, at a timer's turn. */
  quiet(ms: number): Promise<void>;
}

/** The policy of a session without DNS filters (the only kind that asks): every name but localhost's is the target's. */
async function serveLookups(path: string, lookup: Lookup, log: Log): Promise<LayerServer> {
  const requests = createDnsRequests({ lookup: (name, family) => lookup({ name, family }) }, createDnsPolicy({ enabled: true, filter: undefined }));
  const server = await startLayerServer({ socketPath: path, handler: requests, onError: (error) => log.warn(`layer lookup: ${error.message}`) });
  log.debug(`answering the layer's lookups on ${path}`);
  return server;
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
