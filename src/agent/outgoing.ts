// Outgoing TCP: connect from the target's network namespace and relay the bytes over a channel.
import { connect, isIP } from 'node:net';
import type { Connection } from '../protocol/connection.ts';
import { RemoteError } from '../protocol/errors.ts';
import type { Operations } from '../protocol/messages.ts';
import type { Log } from './log.ts';

type TcpConnect = Operations['tcp.connect'];
const CONNECT_TIMEOUT_MS = 30_000;

export function createOutgoing(log: Log): (args: TcpConnect['args'], connection: Connection) => Promise<TcpConnect['result']> {
  return ({ host, port, channel: channelId }, connection) =>
    new Promise((resolve, reject) => {
      if (isIP(host) === 0) throw new RemoteError('EINVAL', `not an IP address: ${host}`);
      const socket = connect({ host, port, noDelay: true, timeout: CONNECT_TIMEOUT_MS });
      const fail = (error: Error) => {
        socket.destroy();
        reject(error);
      };
      socket.once('timeout', () => fail(new RemoteError('ETIMEDOUT', `connecting to ${host}:${port} timed out`)));
      socket.once('error', fail);
      socket.once('connect', () => {
        socket.off('error', fail);
        socket.setTimeout(0);
        const channel = connection.attachChannel(channelId);
        socket.on('error', (error) => channel.destroy(error));
        channel.on('error', () => socket.destroy());
        socket.pipe(channel);
        channel.pipe(socket);
        log.debug(`tcp ${host}:${port} on channel ${channelId}`);
        resolve({ localAddress: socket.localAddress ?? '', localPort: socket.localPort ?? 0 });
      });
    });
}
