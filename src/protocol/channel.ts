// A relayed byte stream inside the agent connection, with credit-based flow control in both directions.
import { Duplex } from 'node:stream';
import { MAX_DATA_CHUNK } from './frame.ts';

/** Bytes each side may send on a fresh channel before the peer grants more. */
export const INITIAL_WINDOW = 256 * 1024;
/**
 * Credit goes back once this much was taken, not after every read: a request and its answer of a few bytes then cost
 * no credit frames (each a wake-up of the peer). The peer waits for credit only after a whole window, by which time
 * at least this much has been taken, so it is never held back for want of a grant.
 */
const GRANT_AT = INITIAL_WINDOW / 4;

/** What a channel needs from its connection. */
export interface ChannelLink {
  sendData(channel: number, bytes: Uint8Array): void;
  sendCredit(channel: number, bytes: number): void;
  sendClose(channel: number, reset: boolean): void;
  forget(channel: number): void;
}

export class Channel extends Duplex {
  readonly id: number;
  private readonly link: ChannelLink;
  private sendCredit = INITIAL_WINDOW;
  private creditWaiter: (() => void) | undefined;
  /** Received and handed to the reader, not yet granted back to the peer. */
  private ungranted = 0;
  /** What the peer may still send; going below zero is a protocol violation. */
  private allowance = INITIAL_WINDOW;
  private remoteEnded = false;
  private localEnded = false;

  constructor(id: number, link: ChannelLink) {
    super({ allowHalfOpen: true });
    this.id = id;
    this.link = link;
  }

  /** Data from the peer; false when it sent more than it was allowed. */
  receive(bytes: Uint8Array): boolean {
    this.allowance -= bytes.length;
    if (this.allowance < 0) return false;
    this.ungranted += bytes.length;
    if (this.push(Buffer.from(bytes))) this.grant();
    return true;
  }

  /**
   * Lets the peer send `bytes` more than the initial window before it waits for us: for a channel whose reader
   * takes everything at once (a file fetch), so that a long round trip does not cap its throughput.
   */
  widen(bytes: number): void {
    this.allowance += bytes;
    this.link.sendCredit(this.id, bytes);
  }

  receiveCredit(bytes: number): void {
    this.sendCredit += bytes;
    const waiter = this.creditWaiter;
    this.creditWaiter = undefined;
    waiter?.();
  }

  receiveClose(reset: boolean): void {
    if (reset) {
      this.destroy(Object.assign(new Error('connection reset by the remote side'), { code: 'ECONNRESET' }));
      return;
    }
    this.remoteEnded = true;
    this.push(null);
    this.forgetIfDone();
  }

  override _read(): void {
    this.grant();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    // The usual case, a chunk within the credit, goes out at once: no promise for each relayed read.
    if (chunk.length <= this.sendCredit && chunk.length <= MAX_DATA_CHUNK && !this.destroyed) {
      this.link.sendData(this.id, chunk);
      this.sendCredit -= chunk.length;
      callback();
      return;
    }
    this.sendAll(chunk).then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.localEnded = true;
    this.link.sendClose(this.id, false);
    this.forgetIfDone();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!(this.localEnded && this.remoteEnded)) this.link.sendClose(this.id, true);
    this.link.forget(this.id);
    const waiter = this.creditWaiter;
    this.creditWaiter = undefined;
    waiter?.();
    callback(error);
  }

  private grant(): void {
    if (this.ungranted < GRANT_AT || this.destroyed) return;
    this.allowance += this.ungranted;
    this.link.sendCredit(this.id, this.ungranted);
    this.ungranted = 0;
  }

  private async sendAll(chunk: Buffer): Promise<void> {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.destroyed) throw Object.assign(new Error('channel closed'), { code: 'EPIPE' });
      if (this.sendCredit === 0) {
        await new Promise<void>((resolve) => (this.creditWaiter = resolve));
        continue;
      }
      const size = Math.min(this.sendCredit, MAX_DATA_CHUNK, chunk.length - offset);
      this.link.sendData(this.id, chunk.subarray(offset, offset + size));
      this.sendCredit -= size;
      offset += size;
    }
  }

  private forgetIfDone(): void {
    if (this.localEnded && this.remoteEnded) this.link.forget(this.id);
  }
}
