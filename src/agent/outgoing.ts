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
      // Attached before connecting, so a client that gave up (its deadline) resets the channel and ends the attempt.
      const channel = connection.attachChannel(channelId);
      // Half-open: the program's shutdown(SHUT_WR) reaches the server, whose answer still comes back.
      const socket = connect({ host, port, noDelay: true, timeout: CONNECT_TIMEOUT_MS, allowHalfOpen: true });
      const fail = (error: Error) => {
        socket.destroy();
        channel.destroy();
        reject(error);
      };
      socket.once('timeout', () => fail(new RemoteError('ETIMEDOUT', `connecting to ${host}:${port} timed out`)));
      socket.once('error', fail);
      const cancelled = () => fail(new RemoteError('ECANCELED', `the client gave up connecting to ${host}:${port}`));
      channel.once('error', cancelled);
      socket.once('connect', () => {
        socket.off('error', fail);
        channel.off('error', cancelled);
        socket.setTimeout(0);
        socket.on('error', (error) => channel.destroy(error));
        channel.on('error', () => socket.destroy());
        socket.pipe(channel);
        channel.pipe(socket);
        log.debug(`tcp ${host}:${port} on channel ${channelId}`);
        resolve({ localAddress: socket.localAddress ?? '', localPort: socket.localPort ?? 0 });
      });
    });
}
