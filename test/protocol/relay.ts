// Fault injection for protocol tests: a relay between real sockets that can throttle the link, stall it, or rewrite the hello.
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { encodeFrame, FrameDecoder, type Frame } from '../../src/protocol/frame.ts';
import { socketPair } from './pair.ts';

export interface RelayOptions {
  /** Bytes per second in each direction; unlimited when absent. */
  bytesPerSecond?: number;
  /** Rewrites the first frame from b to a, the hello (to make a peer claim another version); the rest passes as it came. */
  helloFromB?: (frame: Frame) => Frame;
}

export interface Relay {
  /** Bytes the relay has passed on so far, per direction. */
  readonly forwarded: { aToB: number; bToA: number };
  /** Stops forwarding in both directions for good while every socket stays open: a link that hangs. */
  stall(): void;
}

export interface RelayedLink extends Relay {
  /** The two ends, each a real Unix socket. */
  a: Socket;
  b: Socket;
  close(): void;
}

/** Two fresh socket pairs joined by a relay: a and b talk through it. */
export async function relayedLink(options: RelayOptions = {}): Promise<RelayedLink> {
  const [left, right] = await Promise.all([socketPair(), socketPair()]);
  const relay = relayBetween(left.b, right.a, options);
  return {
    a: left.a,
    b: right.b,
    ...relay,
    close() {
      left.close();
      right.close();
    },
  };
}

/** Relays between two existing streams, `nearA` on a's side and `nearB` on b's. */
export function relayBetween(nearA: Duplex, nearB: Duplex, options: RelayOptions = {}): Relay {
  const forwarded = { aToB: 0, bToA: 0 };
  let stalled = false;
  const forward = (from: Duplex, to: Duplex, count: (n: number) => void, rewriteFirst?: (frame: Frame) => Frame) => {
    let head: Buffer | undefined = rewriteFirst ? Buffer.alloc(0) : undefined;
    from.on('data', (chunk: Buffer) => {
      if (stalled) return;
      let out = chunk;
      if (head !== undefined) {
        head = Buffer.concat([head, chunk]);
        if (head.length < 4 || head.length < 4 + head.readUInt32BE(0)) return;
        const end = 4 + head.readUInt32BE(0);
        const [first] = new FrameDecoder().push(head.subarray(0, end));
        out = Buffer.concat([encodeFrame(rewriteFirst!(first!)), head.subarray(end)]);
        head = undefined;
      }
      count(out.length);
      const drained = to.write(out);
      from.pause();
      // Resume once the far side took the bytes and, when throttled, once the link had time to carry them.
      const delay = options.bytesPerSecond ? new Promise((resolve) => setTimeout(resolve, (chunk.length / options.bytesPerSecond!) * 1000)) : Promise.resolve();
      const drain = drained ? Promise.resolve() : new Promise((resolve) => to.once('drain', resolve));
      void Promise.all([delay, drain]).then(() => {
        if (!stalled && !from.destroyed) from.resume();
      });
    });
    from.on('error', () => to.destroy());
    from.on('close', () => to.destroy());
  };
  forward(nearA, nearB, (n) => (forwarded.aToB += n));
  forward(nearB, nearA, (n) => (forwarded.bToA += n), options.helloFromB);
  return {
    forwarded,
    stall() {
      stalled = true;
      nearA.pause();
      nearB.pause();
    },
  };
}
