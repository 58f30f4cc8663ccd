// Routes each request from the proxy to the module of its family.
import type { RequestHandler } from '../protocol/connection.ts';
import { RemoteError } from '../protocol/errors.ts';
import type { Operation, Operations } from '../protocol/messages.ts';
import { listenDirect } from './direct-link.ts';
import { createDns } from './dns.ts';
import { targetEnvironment } from './env.ts';
import { createLayerDns } from './layer-dns.ts';
import { createFileWrites, readCredentials, type Credentials } from './file-writes.ts';
import { createFiles } from './files.ts';
import type { Incoming } from './incoming.ts';
import type { Log } from './log.ts';
import { createHandover, createOutgoing, createUnixOutgoing } from './outgoing.ts';
import { createUdp } from './udp.ts';

export interface RequestHandlerOptions {
  /** Left out where nothing may change the namespace's rules (tests of the other families). */
  incoming?: Incoming;
  /** Left out where the agent cannot stay warm for a next client. */
  park?: (args: Operations['agent.park']['args']) => Promise<void>;
  /** The client's programs run on this machine and may take our sockets (`tcp.connectFd`): the process platform. */
  handover?: boolean;
}

export function createRequestHandler(pid: number, log: Log, { incoming, park, handover }: RequestHandlerOptions = {}): RequestHandler {
  const root = `/proc/${pid}/root`;
  const files = createFiles(root);
  // Read once: a process's user and umask rarely change, and every write checks them.
  let credentials: Promise<Credentials> | undefined;
  const writes = createFileWrites(root, () => (credentials ??= readCredentials(pid)));
  const lookup = createDns(root);
  const tcpConnect = createOutgoing(log);
  const unixConnect = createUnixOutgoing(root, log);
  const udpOpen = createUdp(log);
  const handedOver = handover ? createHandover(log) : undefined;
  const layerDns = createLayerDns(lookup, log, handover === true);
  const sameMachineOnly = (op: Operation): never => {
    throw new RemoteError('ENOSYS', `${op} serves a client on the agent's machine; this agent's is on another`);
  };
  const noIncoming = (): never => {
    throw new RemoteError('ENOSYS', 'this agent serves no incoming traffic');
  };
  // `ping` is answered by the connection itself: it is also the keepalive.
  const handlers: { [O in Exclude<Operation, 'ping'>]: (args: Operations[O]['args'], connection: Parameters<RequestHandler>[2]) => Promise<Operations[O]['result']> } = {
    env: (args) => targetEnvironment(pid, args),
    'fs.stat': (args) => files.stat(args),
    'fs.read': (args) => files.read(args),
    'fs.fetch': (args, connection) => files.fetch(args, connection),
    'fs.get': (args) => files.get(args),
    'fs.readdir': (args) => files.readdir(args),
    'fs.readlink': (args) => files.readlink(args),
    'fs.access': (args) => files.access(args),
    'fs.realpath': (args) => files.realpath(args),
    'fs.open': (args, connection) => writes.open(args, connection),
    'fs.write': (args, connection) => writes.write(args, connection),
    'fs.mkdir': (args) => writes.mkdir(args),
    'fs.rmdir': (args) => writes.rmdir(args),
    'fs.unlink': (args) => writes.unlink(args),
    'fs.rename': (args) => writes.rename(args),
    'fs.chmod': (args) => writes.chmod(args),
    'dns.lookup': (args) => lookup(args),
    'tcp.connect': (args, connection) => tcpConnect(args, connection),
    'tcp.connectFd': (args, connection) => (handedOver ?? sameMachineOnly('tcp.connectFd')).connect(args, connection),
    'tcp.releaseFd': (args) => (handedOver ?? sameMachineOnly('tcp.releaseFd')).release(args),
    'dns.serveLayer': (args, connection) => layerDns(args, connection),
    'udp.open': (args, connection) => udpOpen(args, connection),
    'unix.connect': (args, connection) => unixConnect(args, connection),
    'incoming.subscribe': (args, connection) => (incoming ?? noIncoming()).subscribe(args, connection),
    'incoming.unsubscribe': (args) => (incoming ?? noIncoming()).unsubscribe(args),
    'incoming.accepted': async () => {
      throw new RemoteError('ENOSYS', 'incoming.accepted is the agent\'s request to the client');
    },
    'link.direct': (_, connection) => (handover ? Promise.reject(new RemoteError('ENOSYS', 'this agent\'s client is on its machine already')) : listenDirect(connection, log)),
    'agent.park': async (args) => {
      if (!park) throw new RemoteError('ENOSYS', 'this agent cannot stay warm');
      await park(args);
      return {};
    },
    'incoming.revoked': async () => {
      throw new RemoteError('ENOSYS', 'incoming.revoked is the agent\'s request to the client');
    },
  };
  return async (op, args, connection) => {
    const handler = handlers[op] as (args: unknown, connection: Parameters<RequestHandler>[2]) => Promise<unknown>;
    if (typeof args !== 'object' || args === null) throw new RemoteError('EINVAL', `${op}: arguments must be an object`);
    try {
      return await handler(args, connection);
    } catch (error) {
      log.debug(`${op} ${JSON.stringify(args)}: ${(error as Error).message}`);
      throw error;
    }
  };
}
