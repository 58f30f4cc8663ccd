// Frames on the agent stream: u32 big-endian length, u8 kind, body. Control bodies are msgpack; data bodies stay raw bytes.
import { ProtocolError } from './errors.ts';

export const FrameKind = {
  control: 1,
  data: 2,
  credit: 3,
  close: 4,
} as const;

export type Frame =
  | { kind: 'control'; body: Uint8Array }
  | { kind: 'data'; channel: number; bytes: Uint8Array }
  | { kind: 'credit'; channel: number; bytes: number }
  | { kind: 'close'; channel: number; reset: boolean };

/** Largest frame accepted by default; data frames are cut far smaller (see MAX_DATA_CHUNK). */
export const DEFAULT_MAX_FRAME = 16 * 1024 * 1024;
export const MAX_DATA_CHUNK = 64 * 1024;
const HEADER = 5;

export function encodeFrame(frame: Frame): Buffer {
  switch (frame.kind) {
    case 'control':
      return withHeader(FrameKind.control, frame.body);
    case 'data': {
      // Built in place: file contents pass through here, and one copy per chunk is enough.
      const out = Buffer.allocUnsafe(HEADER + 4 + frame.bytes.length);
      out.writeUInt32BE(1 + 4 + frame.bytes.length, 0);
      out.writeUInt8(FrameKind.data, 4);
      out.writeUInt32BE(frame.channel, HEADER);
      out.set(frame.bytes, HEADER + 4);
      return out;
    }
    case 'credit': {
      const body = Buffer.allocUnsafe(8);
      body.writeUInt32BE(frame.channel, 0);
      body.writeUInt32BE(frame.bytes, 4);
      return withHeader(FrameKind.credit, body);
    }
    case 'close': {
      const body = Buffer.allocUnsafe(5);
      body.writeUInt32BE(frame.channel, 0);
      body.writeUInt8(frame.reset ? 1 : 0, 4);
      return withHeader(FrameKind.close, body);
    }
  }
}

function withHeader(kind: number, body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(HEADER + body.length);
  out.writeUInt32BE(body.length + 1, 0);
  out.writeUInt8(kind, 4);
  out.set(body, HEADER);
  return out;
}

/**
 * Incremental decoder: push any chunking of the stream, get whole frames back.
 * It never holds more than one frame's bytes, and throws ProtocolError on anything malformed.
 */
export class FrameDecoder {
  readonly maxFrame: number;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failed: ProtocolError | undefined;

  constructor(maxFrame = DEFAULT_MAX_FRAME) {
    this.maxFrame = maxFrame;
  }

  get bufferedBytes(): number {
    return this.buffered;
  }

  push(chunk: Uint8Array): Frame[] {
    if (this.failed) throw this.failed;
    this.chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.buffered += chunk.byteLength;
    const frames: Frame[] = [];
    try {
      for (;;) {
        if (this.buffered < 4) break;
        const head = this.peek(4);
        const length = head.readUInt32BE(0);
        if (length < 1) throw new ProtocolError('E_PROTOCOL_FRAME', 'agent stream: empty frame');
        if (length > this.maxFrame) {
          throw new ProtocolError('E_PROTOCOL_FRAME', `agent stream: frame of ${length} bytes exceeds the ${this.maxFrame}-byte limit`);
        }
        if (this.buffered < 4 + length) break;
        const whole = this.take(4 + length);
        frames.push(parseFrame(whole.readUInt8(4), whole.subarray(HEADER)));
      }
    } catch (error) {
      this.failed = error instanceof ProtocolError ? error : new ProtocolError('E_PROTOCOL_FRAME', `agent stream: ${(error as Error).message}`);
      this.chunks = [];
      this.buffered = 0;
      throw this.failed;
    }
    return frames;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!;
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    // A view, not a copy: frames are handled as they come, and what is kept longer, a channel's data, is copied there
    // (Channel.receive), so no frame pins a read buffer. Reads now often hold an answer with its data and its end.
    return all.subarray(0, n);
  }
}

function parseFrame(kind: number, body: Buffer): Frame {
  switch (kind) {
    case FrameKind.control:
      return { kind: 'control', body };
    case FrameKind.data:
      need(body, 4, 'data');
      return { kind: 'data', channel: body.readUInt32BE(0), bytes: body.subarray(4) };
    case FrameKind.credit:
      exactly(body, 8, 'credit');
      return { kind: 'credit', channel: body.readUInt32BE(0), bytes: body.readUInt32BE(4) };
    case FrameKind.close: {
      exactly(body, 5, 'close');
      const how = body.readUInt8(4);
      if (how > 1) throw new ProtocolError('E_PROTOCOL_FRAME', `agent stream: close frame with unknown mode ${how}`);
      return { kind: 'close', channel: body.readUInt32BE(0), reset: how === 1 };
    }
    default:
      throw new ProtocolError('E_PROTOCOL_FRAME', `agent stream: unknown frame kind ${kind}`);
  }
}

function need(body: Buffer, n: number, what: string): void {
  if (body.length < n) throw new ProtocolError('E_PROTOCOL_FRAME', `agent stream: ${what} frame too short`);
}

function exactly(body: Buffer, n: number, what: string): void {
  if (body.length !== n) throw new ProtocolError('E_PROTOCOL_FRAME', `agent stream: ${what} frame must be ${n} bytes, got ${body.length}`);
}
