// The internal proxy: serves every layer connection of one session from a private Unix socket, backed by one agent.
import fs, { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';
import { DoppelError } from '../errors.ts';
import { isAlive } from '../process-alive.ts';
import type { FastRule } from '../config/fs-fast-rules.ts';
import type { AgentClient } from './agent-client.ts';
import { createDnsRequests, type DnsDecider } from './dns.ts';
import { createFileWriteRequests } from './file-writes.ts';
import { createFileRequests, type FsDecider } from './files.ts';
import { createIncomingRequests, type IncomingDecider, type IncomingSession } from './incoming.ts';
import type { LayerHandler } from './layer-handler.ts';
import { startLayerServer } from './layer-server.ts';
import { AGENT_DNS_SOCKET, encodeFastPath, FAST_PATH_FILE, STANDIN_DIR } from './layer-wire.ts';
import { createListenerRequests } from './listeners.ts';
import { createOutgoingRequests, type OutgoingDecider } from './outgoing.ts';
import { createResolvedNames } from './resolved-names.ts';
import { createUnixStreamRequests, type UnixStreamDecider } from './unix-streams.ts';
import { createRoute, type ResolverDecider } from './route.ts';
import { createStandIns } from './standins.ts';
import { createUdpRequests } from './udp.ts';

/** What a session's configuration and target decide, before any agent. */
export interface ProxyPolicies {
  /** The fs policy, with the rules the layer applies itself (src/config/fs-fast-rules.ts). */
  fs: FsDecider & { readonly fastRules: FastRule[]; readonly remoteWrites: boolean };
  dns: DnsDecider & ResolverDecider & { readonly everyNameRemote: boolean };
  outgoing: OutgoingDecider;
  unixStreams: UnixStreamDecider;
  incoming: IncomingDecider;
}

export interface ProxyOptions extends ProxyPolicies {
  agent: AgentClient;
  /** Who this session is to other sessions on the target, and what the user hears of them. */
  session: IncomingSession;
  /** `--trace`: the handler as the layer server calls it, timed. */
  wrapHandler?: (handler: LayerHandler) => LayerHandler;
}

export interface Proxy {
  /** The socket the layer connects to; handed to the program as DOPPEL_LAYER_SOCKET. */
  readonly socketPath: string;
  /** The layer's rules file (DP_FAST_PATH_FILE) as written. */
  readonly fastPath: Buffer;
  /** The agent whose sockets the layer takes over, if any. */
  readonly handoverPid: number | undefined;
  /**
   * Runs the hot paths once while the program starts (its first calls otherwise wait for V8's cold code at both ends:
   * 2-6 ms each for the first 10-20, measured); never fails, and stops early once the program asks the agent.
   */
  prime(): Promise<void>;
  /** No layer connection is open and no port is held: a program that used it has gone without a trace in it. */
  idle(): boolean;
  close(): Promise<void>;
}

/** A proxy's directory, made while the agent starts; the layer's rules go in it when the proxy starts. */
export interface PreparedProxy {
  readonly dir: string;
  /** Its socket, bound and listening already (a program started from a launch plan: src/cli/exec/launch-plan.ts). */
  readonly listenFd?: number;
  /** Removes the directory of a proxy that will not start. */
  discard(): Promise<void>;
}

export function prepareProxy(planned?: { dir: string; listenFd: number }): PreparedProxy {
  if (planned) return { ...planned, discard: () => fs.promises.rm(planned.dir, { recursive: true, force: true }) };
  // A fresh 0700 directory keeps other local users off the socket; its name carries our PID
  // so that a later session can remove it if this one is killed before it cleans up.
  // Synchronous: a few µs, where a trip through libuv's thread pool waits behind the busy start's event loop.
  let dir: string;
  try {
    dir = mkdtempSync(join(tmpdir(), `doppel-${process.pid}-`));
  } catch (error) {
    throw new DoppelError('E_TMPDIR', `cannot make the session's directory in ${tmpdir()}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {
      category: 'usage',
      hint: 'set TMPDIR to a directory that exists and that you can write to (or unset it for /tmp)',
    });
  }
  return { dir, discard: () => fs.promises.rm(dir, { recursive: true, force: true }) };
}

export async function startProxy(options: ProxyOptions, prepared?: PreparedProxy): Promise<Proxy> {
  const { dir, listenFd } = prepared ?? prepareProxy();
  const socketPath = join(dir, 'layer.sock');
  const names = createResolvedNames();
  const route = createRoute(options.agent, options.outgoing, options.dns);
  const outgoing = createOutgoingRequests(options.agent, options.outgoing, { names, notice: options.session.notice, route });
  const udp = createUdpRequests(options.agent, async (target) => route({ ...target, hostnames: await outgoing.namesOf(target.address) }), options.session.notice);
  const unixStreams = createUnixStreamRequests(options.agent, options.unixStreams, dir);
  const incoming = createIncomingRequests(options.agent, options.incoming, options.session);
  const { sweep, ...listeners } = createListenerRequests(incoming, options.incoming);
  const { openForWrite, ...fileWrites } = createFileWriteRequests(options.agent, options.fs, options.session.notice);
  // Every process of the session gets the same rules: they come from the session's policies alone.
  const local = options.agent.localTarget?.();
  const networkPid = options.outgoing.everyTcpRemote ? local?.pid : undefined;
  const fastPath = {
    rules: options.fs.fastRules,
    loopbackTcpLocal: options.outgoing.loopbackTcpLocal,
    remoteWrites: options.fs.remoteWrites,
    handoverPid: options.agent.handoverPid(),
    rootPid: local?.pid,
    networkPid,
    targetStart: local && BigInt(local.start),
    udpInNetwork: networkPid !== undefined && options.outgoing.everyUdpRemote,
    // An agent on this machine answers the layer's lookups itself where the proxy would only pass them on: no DNS filter
    // to apply, no name for an outgoing filter to remember. Until it listens (or an older agent that never does), the
    // layer asks the proxy; a traced session keeps them on the proxy, which times each hop.
    agentDns: local !== undefined && options.dns.everyNameRemote && !options.outgoing.byHostName && options.wrapHandler === undefined,
    traced: options.wrapHandler !== undefined,
  };
  const handler: LayerHandler = {
    hello: () => Promise.resolve({ kind: 'remote', value: fastPath }),
    // Remote directories' stand-ins live in the same directory, so they go with it.
    ...createFileRequests(options.agent, options.fs, openForWrite, createStandIns(join(dir, STANDIN_DIR))),
    ...fileWrites,
    ...createDnsRequests(options.agent, options.dns, { names, rememberLocal: options.outgoing.filterNames !== undefined }),
    connect: outgoing.connect,
    handedOver: outgoing.handedOver,
    // Told only in a traced session, whose wrapped handler prints it.
    layerCall: () => Promise.resolve({ kind: 'remote', value: undefined }),
    udpRoute: udp.udpRoute,
    unixConnect: unixStreams.unixConnect,
    ...listeners,
  };
  // Read by every process at load, so that one that asks nothing never connects (DP_FAST_PATH_FILE); written once, the
  // agent's pid known, before the program starts.
  const fastPathFile = encodeFastPath(fastPath);
  try {
    writeFileSync(join(dir, FAST_PATH_FILE), fastPathFile);
  } catch {
    // Each process gets the rules with its hello, then.
  }
  try {
    // A process that exits without closing its listening sockets ends their subscriptions with its layer connections,
    // and its UDP sockets' flows.
    const server = await startLayerServer({ socketPath, listenFd, handler: options.wrapHandler?.(handler) ?? handler, onDisconnect: () => void Promise.all([sweep(), udp.sweep()]) });
    // An agent that cannot listen leaves the lookups to the proxy, as the layer finds no socket. A planned session's
    // (listenFd) is a link to the socket of the agent bin/doppel started, served since that agent's start and before
    // it took us (layer/src/plan.c, src/agent/layer-dns.ts): replaced only if that agent could not listen there.
    const lookups = join(dir, AGENT_DNS_SOCKET);
    if (fastPath.agentDns && (listenFd === undefined || !existsSync(lookups))) {
      if (listenFd !== undefined) rmSync(lookups, { force: true });
      options.agent.serveLayerDns(lookups).catch(() => false);
    }
    let closing: Promise<void> | undefined;
    return {
      socketPath,
      fastPath: fastPathFile,
      handoverPid: fastPath.handoverPid,
      async prime() {
        // The hand-off's cold code (10-25 ms) would hold up a program's first calls as much as it spares its first
        // relayed connection: it runs only once the link has stayed idle, and only where connections are relayed.
        const idle = await options.agent.prime().catch(() => false);
        if (idle && fastPath.networkPid === undefined) await outgoing.prime().catch(() => undefined);
      },
      idle: () => server.connections() === 0 && !incoming.holdsPorts(),
      close() {
        closing ??= (async () => {
          try {
            outgoing.close();
            unixStreams.close();
            udp.close();
            // Fails when the session has no agent left to tell; the socket directory must go all the same.
            await incoming.close();
            await server.close();
          } finally {
            // The agent may be making its socket for lookups in it as the link closes: a listing then goes stale.
            // Synchronous, as the layer server's socket: a few files, where the thread pool's start is milliseconds
            // (a retry, rare, then holds the event loop 5 ms).
            rmSync(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 5 });
          }
        })();
        return closing;
      },
    };
  } catch (error) {
    udp.close();
    await incoming.close();
    await fs.promises.rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * Removes the socket directories of sessions whose CLI was killed outright; every `doppel exec` calls it first.
 * Synchronous: a listing of the temporary directory, where the first asynchronous file call starts libuv's threads.
 */
export function sweepDeadSessionDirs(): void {
  let entries: string[];
  try {
    entries = readdirSync(tmpdir());
  } catch {
    return;
  }
  for (const entry of entries) {
    const owner = /^doppel-(\d+)-/.exec(entry)?.[1];
    if (owner === undefined || isAlive(Number(owner))) continue;
    try {
      rmSync(join(tmpdir(), entry), { recursive: true, force: true });
    } catch {
      // Someone else's to remove.
    }
  }
}
