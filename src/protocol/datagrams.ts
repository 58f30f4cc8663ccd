// Datagrams on a `udp.open` channel: a channel is a byte stream, so each datagram carries its length and remote address.
import { ProtocolError } from './errors.ts';

/** A datagram and the remote it goes to (client to agent) or came from (agent to client). */
export interface Datagram {
  address: string;
  port: number;
  data: Uint8Array;
}

/** The most a UDP datagram can hold (IPv6 jumbograms aside). */
export const MAX_DATAGRAM = 65_535;
/** u32 BE length of the rest, u16 BE port, u8 address length, the address as text. */
const HEAD = 4 + 2 + 1;
const MAX_ADDRESS = 64;

export function encodeDatagram({ address, port, data }: Datagram): Buffer {
  const text = Buffer.from(address, 'latin1');
  if (text.length > MAX_ADDRESS) throw new ProtocolError('E_PROTOCOL_MESSAGE', `datagram address of ${text.length} bytes`);
  if (data.length > MAX_DATAGRAM) throw new ProtocolError('E_PROTOCOL_MESSAGE', `datagram of ${data.length} bytes`);
  const out = Buffer.allocUnsafe(HEAD + text.length + data.length);
  out.writeUInt32BE(out.length - 4, 0);
  out.writeUInt16BE(port, 4);
  out.writeUInt8(text.length, 6);
  text.copy(out, HEAD);
  out.set(data, HEAD + text.length);
  return out;
}

/** Cuts a channel's bytes back into datagrams; holds at most one incomplete datagram. */
export class DatagramDecoder {
  private buffered = Buffer.alloc(0);

  push(chunk: Buffer): Datagram[] {
    let bytes = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const out: Datagram[] = [];
    while (bytes.length >= 4) {
      const length = bytes.readUInt32BE(0);
      if (length < HEAD - 4 || length > HEAD - 4 + MAX_ADDRESS + MAX_DATAGRAM) {
        throw new ProtocolError('E_PROTOCOL_MESSAGE', `udp channel: a datagram record of ${length} bytes`);
      }
      if (bytes.length < 4 + length) break;
      const addressLength = bytes.readUInt8(6);
      if (HEAD + addressLength > 4 + length) throw new ProtocolError('E_PROTOCOL_MESSAGE', 'udp channel: a datagram address longer than its record');
      out.push({
        port: bytes.readUInt16BE(4),
        address: bytes.toString('latin1', HEAD, HEAD + addressLength),
        data: bytes.subarray(HEAD + addressLength, 4 + length),
      });
      bytes = bytes.subarray(4 + length);
    }
    // A copy, so the chunk that held it is not kept alive with it.
    this.buffered = Buffer.from(bytes);
    return out;
  }
}
