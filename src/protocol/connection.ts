// One agent connection, used by both ends: handshake, requests by id with deadlines, keepalives, and channels, over any duplex byte stream.
import type { Duplex } from 'node:stream';
import { Channel, type ChannelLink } from './channel.ts';
import { ProtocolError, RemoteError } from './errors.ts';
import { encodeFrame, FrameDecoder, type Frame } from './frame.ts';
import { decodeControl, encodeControl, isOperation, isProcessPlace, MIN_PEER_VERSION, operationSince, PROTOCOL_NAME, PROTOCOL_VERSION, type ControlMessage, type Operation, type Operations, type ProcessPlace } from './messages.ts';

/** Serves the peer's requests; `op` is always one this version knows, and `ping` never reaches it. */
export type RequestHandler = (op: Exclude<Operation, 'ping'>, args: unknown, connection: Connection) => Promise<unknown>;

/** mirrord's `agent.communication_timeout` default. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** A keepalive goes out this long after the last one was answered... */
export const DEFAULT_KEEPALIVE_INTERVAL_MS = 2_000;
/** ...and a link that leaves it unanswered this long is dead: a stall is noticed within 8 s. */
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 6_000;

export interface ConnectionOptions {
  /** Channel ids a side allocates: the client's are odd, the agent's even, so they never collide. */
  role: 'client' | 'agent';
  software: string;
  features?: string[];
  /** Sent in the hello: the agent's process, whose sockets a program on the same machine may take (`tcp.connectFd`). */
  pid?: number;
  /** Sent in the hello: where the agent sees its target, so that a client on the same machine may reach it itself. */
  target?: ProcessPlace | undefined;
  handshakeTimeoutMs: number;
  maxFrame?: number;
  onRequest?: RequestHandler;
  /** How long a request may wait for its answer (`agent.communication_timeout`). */
  requestTimeoutMs?: number;
  keepaliveIntervalMs?: number;
  keepaliveTimeoutMs?: number;
  /** The agent's `--trace`: every answer says how long this side took to make it (`us`), for the client's trace. */
  timeAnswers?: boolean;
  /** The client's `--trace`: called as each request goes out; what it returns is called with the answer's `us` in ms. */
  onCall?: (op: string) => (servedMs: number | undefined) => void;
}

export interface PeerHello {
  version: number;
  features: string[];
  software: string;
  pid?: number;
  target?: ProcessPlace;
}

export class Connection implements ChannelLink {
  readonly peer: PeerHello;
  /** Settles once, when the stream is gone; with the reason if it was not a clean close. */
  readonly closed: Promise<Error | undefined>;
  private stream: Duplex;
  private decoder: FrameDecoder;
  /** Takes this connection's listeners off the stream it reads (at a move). */
  private detach: () => void = () => {};
  /** A move's new stream: the agent's, taken before the client's `move` comes (`acceptMove`); the client's, until `moved`. */
  private nextStream: Duplex | undefined;
  private moving: { resolve(): void; reject(error: Error): void } | undefined;
  private readonly onRequest: RequestHandler | undefined;
  private readonly role: ConnectionOptions['role'];
  private readonly requestTimeoutMs: number;
  private readonly keepaliveIntervalMs: number;
  private readonly keepaliveTimeoutMs: number;
  private readonly timeAnswers: boolean;
  private readonly onCall: ConnectionOptions['onCall'];
  private readonly pending = new Map<number, Waiter>();
  private readonly channels = new Map<number, Channel>();
  private readonly controlQueue: Buffer[] = [];
  private readonly dataQueue: Buffer[] = [];
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private waitingDrain = false;
  private flushScheduled = false;
  private nextRequest = 1;
  private nextChannel: number;
  private ended: Error | undefined | null = null;
  private markClosed!: (reason: Error | undefined) => void;
  /** Frames that came while dispatching is held (see `hold`), in order. */
  private held: Frame[] | undefined;

  private constructor(stream: Duplex, decoder: FrameDecoder, peer: PeerHello, options: ConnectionOptions) {
    this.stream = stream;
    this.decoder = decoder;
    this.peer = peer;
    this.onRequest = options.onRequest;
    this.role = options.role;
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.keepaliveIntervalMs = options.keepaliveIntervalMs ?? DEFAULT_KEEPALIVE_INTERVAL_MS;
    this.keepaliveTimeoutMs = options.keepaliveTimeoutMs ?? DEFAULT_KEEPALIVE_TIMEOUT_MS;
    this.timeAnswers = options.timeAnswers === true;
    this.onCall = options.onCall;
    this.nextChannel = options.role === 'client' ? 1 : 2;
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
  }

  /** Sends our hello, waits for the peer's, and returns the connection ready for requests. */
  static async open(stream: Duplex, options: ConnectionOptions): Promise<Connection> {
    const decoder = new FrameDecoder(options.maxFrame);
    const hello: ControlMessage = { t: 'hello', protocol: PROTOCOL_NAME, version: PROTOCOL_VERSION, features: options.features ?? [], software: options.software, ...(options.pid === undefined ? {} : { pid: options.pid }), ...(options.target ? { target: options.target } : {}) };
    stream.write(encodeFrame({ kind: 'control', body: encodeControl(hello) }));
    const { peer, rest } = await readHello(stream, decoder, options.handshakeTimeoutMs);
    const connection = new Connection(stream, decoder, peer, options);
    connection.attach(stream, rest);
    connection.scheduleKeepalive();
    return connection;
  }

  /** Sends a request the peer's version serves; it fails with E_PROTOCOL_TIMEOUT when no answer comes in time. */
  request<O extends Operation>(op: O, args: Operations[O]['args']): Promise<Operations[O]['result']> {
    if (this.ended !== null) return Promise.reject(this.lostError());
    if (!this.supports(op)) {
      return Promise.reject(
        new ProtocolError('E_PROTOCOL_UNSUPPORTED', `${this.peerName} (${this.peer.software}) speaks protocol ${this.peer.version}; ${op} needs protocol ${operationSince[op] ?? '(unknown operation)'}`, 'use the agent of the same doppel version as the CLI (agent.image)'),
      );
    }
    const timeoutMs = this.requestTimeoutMs;
    return this.call(op, args, timeoutMs, (reject) =>
      reject(new ProtocolError('E_PROTOCOL_TIMEOUT', `${this.peerName} did not answer ${op} within ${duration(timeoutMs)}`, 'the agent or the link to it is stuck or slow; raise agent.communication_timeout if it is only slow')),
    ) as Promise<Operations[O]['result']>;
  }

  /** Whether the peer's protocol version has `op`: callers pick a fallback with it, `request` refuses without it. */
  supports(op: Operation): boolean {
    const since = operationSince[op] as number | undefined;
    return since !== undefined && since <= this.peer.version;
  }

  /** A new channel with an id from our half of the id space; the peer learns the id from a request. */
  openChannel(): Channel {
    const id = this.nextChannel;
    this.nextChannel += 2;
    return this.register(id);
  }

  /** The local end of a channel whose id the peer chose. */
  attachChannel(id: number): Channel {
    if (!Number.isInteger(id) || id <= 0 || id > 0xffffffff || id % 2 === this.nextChannel % 2) {
      throw new ProtocolError('E_PROTOCOL_CHANNEL', `agent stream: channel ${id} is not one the peer may choose`);
    }
    if (this.channels.has(id)) throw new ProtocolError('E_PROTOCOL_CHANNEL', `agent stream: channel ${id} is already open`);
    return this.register(id);
  }

  /**
   * Up to `count` pings, one after another, while nothing else is asked: both ends' code for a round trip (framing,
   * msgpack, dispatch, the corked writes) is then past V8's interpreter and its first compiles before the program's
   * first calls need it. Stops at the first other request, or sends none while one is in flight (the program's own
   * calls warm the same code); never fails. Says whether the link stayed idle throughout.
   */
  async prime(count: number): Promise<boolean> {
    for (let i = 0; i < count; i++) {
      if (this.ended !== null || this.pending.size > 0) return false;
      const id = this.nextRequest;
      const answered = await this.call('ping', {}, this.keepaliveTimeoutMs, (reject) => reject(new Error('no answer to a ping'))).then(
        () => true,
        () => false,
      );
      if (!answered || this.nextRequest !== id + 1) return false;
    }
    return this.ended === null;
  }

  /**
   * Frames that come until `until` settles wait for it, then are dispatched in the order they came. For a request whose
   * handler cannot run yet (the agent's handlers still loading): the frames behind it (the data of a channel it will
   * attach) would otherwise be dispatched first, to a channel not attached yet, and dropped.
   */
  hold(until: Promise<unknown>): void {
    this.held ??= [];
    void until
      .catch(() => undefined)
      .then(() => {
        const frames = this.held ?? [];
        this.held = undefined;
        if (this.ended !== null) return;
        try {
          this.dispatchAll(frames);
        } catch (error) {
          this.fail(error as Error);
        }
      });
  }

  /**
   * Moves the connection to `next` (client side, once the agent took `next` for it: `link.direct`). What is queued and
   * then `move` go out on the old stream, and every frame after on `next`; `next` is read once the agent's `moved` ends
   * what comes on the old one, when this resolves. The old stream is the caller's to close then.
   */
  moveTo(next: Duplex): Promise<void> {
    if (this.ended !== null) return Promise.reject(this.lostError());
    if (this.role !== 'client' || this.nextStream) return Promise.reject(new Error('internal error: a move by the agent, or during another'));
    next.pause();
    this.nextStream = next;
    this.writeLastThen({ t: 'move' }, next);
    return new Promise((resolve, reject) => (this.moving = { resolve, reject }));
  }

  /** Agent side: the stream the client's coming `move` goes to; it is not read before. */
  acceptMove(next: Duplex): void {
    next.pause();
    this.nextStream?.destroy();
    this.nextStream = next;
  }

  close(): void {
    this.pump();
    this.stream.end();
    this.shutdown(undefined);
  }

  sendData(channel: number, bytes: Uint8Array): void {
    this.enqueue(encodeFrame({ kind: 'data', channel, bytes }), this.dataQueue);
  }

  sendCredit(channel: number, bytes: number): void {
    this.enqueue(encodeFrame({ kind: 'credit', channel, bytes }), this.controlQueue);
  }

  sendClose(channel: number, reset: boolean): void {
    // Behind the channel's queued data, so an end never overtakes the last bytes.
    this.enqueue(encodeFrame({ kind: 'close', channel, reset }), this.dataQueue);
  }

  forget(channel: number): void {
    this.channels.delete(channel);
  }

  get openChannels(): number {
    return this.channels.size;
  }

  private register(id: number): Channel {
    const channel = new Channel(id, this);
    // A reset from the peer may come before any consumer listens (a failed connect, a file that could not be read):
    // it must not crash this process. Consumers still get the error through their own listeners and pipelines.
    channel.on('error', () => undefined);
    this.channels.set(id, channel);
    return channel;
  }

  private attach(stream: Duplex, rest: Frame[]): void {
    const onData = (chunk: Buffer) => {
      try {
        this.dispatchAll(this.decoder.push(chunk));
      } catch (error) {
        this.fail(error as Error);
      }
    };
    const onError = (error: Error) => this.shutdown(error);
    const onEnd = () => this.shutdown(undefined);
    stream.on('data', onData);
    stream.on('error', onError);
    stream.on('close', onEnd);
    stream.on('end', onEnd);
    this.detach = () => {
      stream.off('data', onData);
      stream.off('error', onError);
      stream.off('close', onEnd);
      stream.off('end', onEnd);
      // Its close may still fail after the move (a reset port-forward): nobody's business now.
      stream.on('error', () => undefined);
    };
    try {
      this.dispatchAll(rest);
    } catch (error) {
      this.fail(error as Error);
    }
    stream.resume();
  }

  /** Writes what is queued and then `last` to the current stream, and makes `next` the stream written to. */
  private writeLastThen(last: ControlMessage, next: Duplex): void {
    const old = this.stream;
    for (const frame of [...this.controlQueue.splice(0), ...this.dataQueue.splice(0)]) old.write(frame);
    old.write(encodeFrame({ kind: 'control', body: encodeControl(last) }));
    this.stream = next;
    this.waitingDrain = false;
  }

  /** Dispatches `frames` in order; those after a frame that holds dispatching wait with it. */
  private dispatchAll(frames: Iterable<Frame>): void {
    for (const frame of frames) {
      if (this.held) this.held.push(frame);
      else this.dispatch(frame);
    }
  }

  private dispatch(frame: Frame): void {
    switch (frame.kind) {
      case 'control':
        this.dispatchControl(decodeControl(frame.body));
        return;
      case 'data': {
        const channel = this.channels.get(frame.channel);
        // Data racing a reset we sent is dropped; anything beyond the granted window is a broken peer.
        if (channel && !channel.receive(frame.bytes)) {
          throw new ProtocolError('E_PROTOCOL_FLOW', `agent stream: channel ${frame.channel} sent beyond its credit`);
        }
        return;
      }
      case 'credit':
        this.channels.get(frame.channel)?.receiveCredit(frame.bytes);
        return;
      case 'close':
        this.channels.get(frame.channel)?.receiveClose(frame.reset);
        return;
    }
  }

  private dispatchControl(message: ControlMessage): void {
    if (message.t === 'res') {
      // No waiter: the answer came after its deadline, and the caller has been told already.
      const waiter = this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      clearTimeout(waiter.timer);
      waiter.answered?.(typeof message.us === 'number' ? message.us / 1000 : undefined);
      if ('err' in message) waiter.reject(new RemoteError(message.err.code, message.err.message));
      else waiter.resolve(message.ok);
      return;
    }
    if (message.t === 'req') {
      void this.answer(message.id, message.op, message.args);
      return;
    }
    if ((message.t === 'move' && this.role === 'agent') || (message.t === 'moved' && this.role === 'client')) {
      const next = this.nextStream;
      if (!next) throw new ProtocolError('E_PROTOCOL_MESSAGE', `agent stream: a ${message.t} with no stream to move to`);
      this.nextStream = undefined;
      const old = this.stream;
      // The agent's last frames on the old stream answer the client's; the client's last were written at moveTo.
      if (message.t === 'move') this.writeLastThen({ t: 'moved' }, next);
      this.detach();
      this.decoder = new FrameDecoder(this.decoder.maxFrame);
      this.attach(next, []);
      if (message.t === 'move') old.end();
      this.moving?.resolve();
      this.moving = undefined;
      return;
    }
    throw new ProtocolError('E_PROTOCOL_MESSAGE', message.t === 'hello' ? 'agent stream: a second hello' : `agent stream: an unexpected ${message.t}`);
  }

  private async answer(id: number, op: string, args: unknown): Promise<void> {
    const start = this.timeAnswers ? performance.now() : 0;
    const served = (): { us?: number } => (this.timeAnswers ? { us: Math.round((performance.now() - start) * 1000) } : {});
    try {
      if (!isOperation(op)) throw new RemoteError('ENOSYS', `unknown operation "${op}": this side speaks protocol ${PROTOCOL_VERSION}, an older one than its peer`);
      if (op === 'ping') {
        this.sendControl({ t: 'res', id, ok: { now: Date.now() } });
        return;
      }
      if (!this.onRequest) throw new RemoteError('ENOSYS', `this side serves no requests (${op})`);
      // Called synchronously: a handler may attach a channel before any frame behind this request is dispatched.
      const ok = await this.onRequest(op, args, this);
      this.sendControl({ t: 'res', id, ok: ok ?? {}, ...served() });
    } catch (error) {
      const code = typeof (error as { code?: unknown }).code === 'string' ? (error as { code: string }).code : 'EIO';
      this.sendControl({ t: 'res', id, err: { code, message: (error as Error).message ?? String(error) }, ...served() });
    }
  }

  private call(op: string, args: unknown, timeoutMs: number, expire: (reject: (error: Error) => void) => void): Promise<unknown> {
    const id = this.nextRequest++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        expire(reject);
      }, timeoutMs);
      // The stream keeps the process alive while it is open; once it is gone, shutdown clears the timers.
      timer.unref();
      this.pending.set(id, { resolve, reject, timer, answered: op === 'ping' ? undefined : this.onCall?.(op) });
      this.sendControl({ t: 'req', id, op, args });
    });
  }

  /**
   * One `ping` at a time; an unanswered one ends the connection. It proves that the peer still reads and
   * writes, which bytes arriving alone would not: a peer that stopped reading can keep sending.
   */
  private scheduleKeepalive(): void {
    if (this.ended !== null) return;
    this.keepaliveTimer = setTimeout(() => {
      const timeoutMs = this.keepaliveTimeoutMs;
      const stalled = () => this.fail(new ProtocolError('E_PROTOCOL_STALLED', `the link to ${this.peerName} stalled: no answer to a keepalive within ${duration(timeoutMs)}`, 'the agent, its node or the connection to it stopped responding'));
      // Any answer will do: a version 1 client answers `ping` with an error.
      const again = () => this.scheduleKeepalive();
      this.call('ping', {}, timeoutMs, stalled).then(again, again);
    }, this.keepaliveIntervalMs);
    this.keepaliveTimer.unref();
  }

  private get peerName(): string {
    return this.role === 'client' ? 'the agent' : 'the proxy';
  }

  private sendControl(message: ControlMessage): void {
    this.enqueue(encodeFrame({ kind: 'control', body: encodeControl(message) }), this.controlQueue);
  }

  /**
   * Frames go out once per turn of the event loop, together: an answer, its data and its channel's end (or a request
   * and its channel's credit) are one write and wake the peer once, where a write each cost a system call and a
   * wake-up each (measured with --cpu-prof: the writes were the largest part of the proxy's and the agent's time).
   */
  private enqueue(frame: Buffer, queue: Buffer[]): void {
    if (this.ended !== null) return;
    queue.push(frame);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(this.flush);
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    this.pump();
  };

  /** Writes control frames before data, so requests never wait behind bulk transfers; corked, so one writev takes them all. */
  private pump(): void {
    if (this.waitingDrain || this.ended !== null) return;
    this.stream.cork();
    try {
      for (;;) {
        const next = this.controlQueue.shift() ?? this.dataQueue.shift();
        if (next === undefined) return;
        if (!this.stream.write(next)) {
          this.waitingDrain = true;
          this.stream.once('drain', () => {
            this.waitingDrain = false;
            this.pump();
          });
          return;
        }
      }
    } finally {
      this.stream.uncork();
    }
  }

  private fail(error: Error): void {
    this.shutdown(error);
    this.stream.destroy();
  }

  private shutdown(reason: Error | undefined): void {
    if (this.ended !== null) return;
    this.ended = reason;
    clearTimeout(this.keepaliveTimer);
    const lost = this.lostError();
    for (const waiter of this.pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(lost);
    }
    this.pending.clear();
    for (const channel of this.channels.values()) channel.destroy();
    this.channels.clear();
    this.controlQueue.length = 0;
    this.dataQueue.length = 0;
    this.nextStream?.destroy();
    this.nextStream = undefined;
    this.moving?.reject(lost);
    this.moving = undefined;
    this.markClosed(reason);
  }

  private lostError(): Error {
    if (this.ended instanceof ProtocolError) return this.ended;
    return new ProtocolError('E_PROTOCOL_CLOSED', `the agent connection closed${this.ended ? ` (${this.ended.message})` : ''}`, 'the agent or its target may have exited');
  }
}

interface Waiter {
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
  answered: ((servedMs: number | undefined) => void) | undefined;
}

function duration(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${ms / 1000} s`;
}

async function readHello(stream: Duplex, decoder: FrameDecoder, timeoutMs: number): Promise<{ peer: PeerHello; rest: Frame[] }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new ProtocolError('E_PROTOCOL_HANDSHAKE', `no handshake from the peer within ${timeoutMs} ms`, 'the other end may not be a doppel agent, or it is stuck')), timeoutMs);
    const onData = (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = decoder.push(chunk);
      } catch (error) {
        finish(error as Error);
        return;
      }
      const [first, ...rest] = frames;
      if (!first) return;
      try {
        finish(undefined, { peer: checkHello(first), rest });
      } catch (error) {
        finish(error as Error);
      }
    };
    const onEnd = () => finish(new ProtocolError('E_PROTOCOL_CLOSED', 'the peer closed the connection during the handshake', 'the agent may have failed to start'));
    const onError = (error: Error) => finish(new ProtocolError('E_PROTOCOL_CLOSED', `the connection failed during the handshake: ${error.message}`, 'the agent may have failed to start'));
    function finish(error: Error | undefined, value?: { peer: PeerHello; rest: Frame[] }) {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.off('error', onError);
      if (error) {
        stream.destroy();
        reject(error);
      } else {
        // Hold further bytes until the connection's own listener is attached.
        stream.pause();
        resolve(value!);
      }
    }
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('close', onEnd);
    stream.on('error', onError);
    // A stream handed over paused (after a transport's own preface) does not flow again by itself.
    stream.resume();
  });
}

function checkHello(frame: Frame): PeerHello {
  const message = frame.kind === 'control' ? decodeControl(frame.body) : undefined;
  if (message?.t !== 'hello' || message.protocol !== PROTOCOL_NAME) {
    throw new ProtocolError('E_PROTOCOL_HANDSHAKE', 'the peer did not start with a doppel hello', 'the other end is not a doppel agent');
  }
  if (message.version < MIN_PEER_VERSION) {
    throw new ProtocolError('E_PROTOCOL_VERSION', `the peer speaks protocol version ${message.version} (${message.software}); this side needs at least ${MIN_PEER_VERSION}`);
  }
  return {
    version: message.version,
    features: message.features,
    software: message.software,
    ...(Number.isSafeInteger(message.pid) ? { pid: message.pid } : {}),
    ...(isProcessPlace(message.target) ? { target: message.target } : {}),
  };
}
