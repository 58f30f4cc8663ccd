// Outgoing UDP: one program socket's datagrams, sent from the target's network namespace, and the datagrams that come back.
import { createSocket, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import type { Connection } from '../protocol/connection.ts';
import { DatagramDecoder, encodeDatagram } from '../protocol/datagrams.ts';
import type { Operations } from '../protocol/messages.ts';
import type { Log } from './log.ts';

type UdpOpen = Operations['udp.open'];
/** Replies waiting for the client beyond this are dropped, as a full socket buffer drops them, rather than held. */
const MAX_QUEUED = 1024 * 1024;

export function createUdp(log: Log): (args: UdpOpen['args'], connection: Connection) => Promise<UdpOpen['result']> {
  return async ({ channel: channelId }, connection) => {
    const channel = connection.attachChannel(channelId);
    // One socket per address family, each bound on first use to a port of the namespace, as the kernel binds the program's.
    const sockets = new Map<number, Socket>();
    const socketFor = (family: number) => {
      let socket = sockets.get(family);
      if (socket) return socket;
      socket = createSocket(family === 6 ? 'udp6' : 'udp4');
      socket.on('message', (data, from) => {
        if (channel.writableLength <= MAX_QUEUED) channel.write(encodeDatagram({ address: from.address, port: from.port, data }));
      });
      // An unreachable destination loses its datagram, as it would for the program; the flow goes on.
      socket.on('error', (error) => log.debug(`udp on channel ${channelId}: ${error.message}`));
      sockets.set(family, socket);
      return socket;
    };
    const close = () => {
      for (const socket of sockets.values()) socket.close();
      sockets.clear();
    };
    const decoder = new DatagramDecoder();
    channel.on('data', (chunk: Buffer) => {
      try {
        for (const { address, port, data } of decoder.push(chunk)) {
          const family = isIP(address);
          if (family !== 0) socketFor(family).send(data, port, address);
        }
      } catch (error) {
        channel.destroy(error as Error);
      }
    });
    channel.once('end', () => channel.end());
    channel.once('close', close);
    log.debug(`udp flow on channel ${channelId}`);
    return {};
  };
}
