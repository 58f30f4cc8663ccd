// Incoming connections taken request by request: each HTTP/1 request goes to the client's program or to the target's
// server, and the answers go back to the caller in request order; a filtered mirror copies only the matched requests.
// A connection that starts with HTTP/2's preface is taken stream by stream instead (incoming-h2.ts).
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { RequestHead } from './http-filter.ts';
import { bodyFraming, readRequests, requestHead, watchResponse, type ResponseWatch } from './http-wire.ts';
import { copyByPreface, copyH2, isH2Preface, stealH2, type ConnectionCopy } from './incoming-h2.ts';

/** Who answers a request: a session's program, by its key, or the target's own server (`undefined`). */
export type Route = string | undefined;

export interface HttpSteal {
  /** Who answers this request. */
  route(request: RequestHead): Route;
  /**
   * A new connection to whoever `route` names: a session's program (on a channel) or the target's server; each one
   * opened carries the next requests routed there, in order.
   */
  open(route: Route): Duplex;
  /** The connection is not HTTP/1: where it goes whole. */
  notHttp: Route;
  /** How long a caller that sends nothing may wait before its connection counts as not HTTP (a server-first protocol). */
  firstBytesMs: number;
  log(message: string): void;
}

interface Upstream {
  stream: Duplex;
  /** The response being passed to the caller; none while the upstream is idle. */
  watch: ResponseWatch | undefined;
  ended: boolean;
  /** Stops reading it as answers: for an upgrade, which splices it to the caller. */
  detach(): void;
}

interface Exchange {
  req: IncomingMessage;
  /** For an Upgrade or CONNECT request: the bytes after its head, up to where parsing stopped. */
  upgrade?: Buffer[];
}

/** A caller's connection taken request by request. */
export interface HttpStealing {
  /**
   * Ends the caller's connection once the request under way (if any) is answered: for an unsubscribe, so that a
   * kept-alive caller reconnects to the target rather than reuse a connection whose redirect is going away.
   * Settles when the connection is closed.
   */
  drain(): Promise<void>;
}

/** Takes a caller's connection request by request. */
export function stealHttp(caller: Socket, options: HttpSteal): HttpStealing {
  const upstreams = new Map<Route, Upstream>();
  const queue: Exchange[] = [];
  /** Everything the caller sent until its first request was read: replayed whole if it turns out not to be HTTP. */
  let prelude: Buffer[] | undefined = [];
  let current: Exchange | undefined;
  let callerEnded = false;
  /** Caller bytes past an Upgrade or CONNECT head, held until that request's turn comes. */
  let held: Buffer[] | undefined;
  let done = false;
  let draining = false;
  /** Until the first bytes tell whether they are HTTP/2's preface, they are held back from the HTTP/1 reader. */
  let sniffing = true;
  let h2: HttpStealing | undefined;

  const shutdown = (reset: boolean) => {
    if (done) return;
    done = true;
    reader.destroy();
    for (const upstream of upstreams.values()) {
      if (reset) upstream.stream.destroy();
      else upstream.stream.end();
    }
    if (reset) caller.resetAndDestroy();
    else caller.end();
  };

  const reader = readRequests(
    {
      request(req) {
        prelude = undefined;
        queue.push({ req });
        pump();
      },
      upgrade(req, head) {
        prelude = undefined;
        held = [head, ...reader.unparsed()];
        queue.push({ req, upgrade: held });
        pump();
      },
      error(error) {
        if (prelude) return whole(prelude);
        options.log(`not HTTP/1 after a request: ${error.message}`);
        shutdown(true);
      },
    },
    () => caller.resume(),
  );

  const firstBytes = setTimeout(() => {
    if (prelude?.length === 0) whole([]);
  }, options.firstBytesMs);
  const onData = (chunk: Buffer) => {
    clearTimeout(firstBytes);
    if (held) {
      held.push(chunk);
      return;
    }
    prelude?.push(chunk);
    if (sniffing) {
      const preface = isH2Preface(prelude!);
      if (preface === undefined) return;
      sniffing = false;
      if (preface) {
        const sent = prelude!;
        detach();
        h2 = stealH2(caller, sent, options);
        return;
      }
      chunk = Buffer.concat(prelude!);
    }
    if (!reader.write(chunk)) caller.pause();
  };
  const onEnd = () => {
    callerEnded = true;
    if (held) return;
    if (prelude?.length === 0) return whole([]);
    if (sniffing) reader.write(Buffer.concat(prelude!));
    reader.end();
    pump();
  };
  const onError = () => shutdown(true);
  const onClose = () => {
    clearTimeout(firstBytes);
    if (!done) shutdown(true);
  };
  caller.on('data', onData);
  caller.on('end', onEnd);
  caller.on('error', onError);
  caller.on('close', onClose);

  /** From here the caller's bytes are no longer read as HTTP. */
  const detach = () => {
    done = true;
    clearTimeout(firstBytes);
    prelude = undefined;
    reader.destroy();
    caller.off('data', onData);
    caller.off('end', onEnd);
    caller.off('error', onError);
    caller.off('close', onClose);
  };

  /** Not HTTP: the whole connection, with what it already sent, goes where the subscription sends such connections. */
  function whole(sent: Buffer[]): void {
    if (done) return;
    detach();
    splice(caller, options.open(options.notHttp), sent, callerEnded);
  }

  function upstreamFor(route: Route): Upstream {
    const existing = upstreams.get(route);
    if (existing && !existing.ended) return existing;
    const stream = options.open(route);
    const onUpstreamData = (chunk: Buffer) => {
      const watch = upstream.watch;
      if (!watch) return;
      if (!caller.write(chunk)) {
        stream.pause();
        caller.once('drain', () => stream.resume());
      }
      watch.write(chunk);
    };
    const onUpstreamEnd = () => {
      upstream.ended = true;
      if (upstream.watch) upstream.watch.end();
      else stream.end();
    };
    // Gone in the middle of an answer without an end: the caller cannot be answered.
    const onUpstreamGone = () => {
      upstream.ended = true;
      if (upstream.watch) shutdown(true);
    };
    const upstream: Upstream = {
      stream,
      watch: undefined,
      ended: false,
      detach() {
        stream.off('data', onUpstreamData);
        stream.off('end', onUpstreamEnd);
        stream.off('error', onUpstreamGone);
        stream.off('close', onUpstreamGone);
      },
    };
    upstreams.set(route, upstream);
    stream.on('data', onUpstreamData);
    stream.on('end', onUpstreamEnd);
    stream.on('error', onUpstreamGone);
    stream.on('close', onUpstreamGone);
    return upstream;
  }

  function pump(): void {
    if (done || current) return;
    const exchange = draining ? undefined : queue.shift();
    if (!exchange) {
      if (callerEnded || draining) shutdown(false);
      return;
    }
    current = exchange;
    const { req } = exchange;
    const route = options.route(req);
    const upstream = upstreamFor(route);
    upstream.stream.write(requestHead(req));
    if (exchange.upgrade) {
      // From here the connection is the upstream's alone: no more HTTP to read, whatever the upgrade's answer.
      for (const [other, { stream }] of upstreams) if (other !== route) stream.end();
      detach();
      upstream.detach();
      splice(caller, upstream.stream, exchange.upgrade, callerEnded);
      return;
    }
    let bodySent = false;
    let answered: boolean | undefined;
    const finish = () => {
      if (!bodySent || answered === undefined || current !== exchange) return;
      current = undefined;
      reader.answered(req);
      if (answered) pump();
      else shutdown(false);
    };
    upstream.watch = watchResponse(
      req.method ?? 'GET',
      (keepAlive) => {
        upstream.watch = undefined;
        answered = keepAlive;
        if (!keepAlive || upstream.ended) upstream.stream.end();
        finish();
      },
      (error) => {
        upstream.watch = undefined;
        options.log(`${route === undefined ? 'the target' : `session ${route}`}'s answer to ${req.method} ${req.url}: ${error.message}`);
        // Cut short by its end: the caller sees the end too. Malformed: it is reset.
        shutdown(!upstream.ended);
      },
    );
    const framing = bodyFraming(req);
    req.on('data', (data: Buffer) => {
      let room = true;
      for (const piece of framing.piece(data)) room = upstream.stream.write(piece) && room;
      if (!room) {
        req.pause();
        upstream.stream.once('drain', () => req.resume());
      }
    });
    req.on('end', () => {
      const last = framing.last();
      if (last) upstream.stream.write(last);
      bodySent = true;
      finish();
    });
  }

  return {
    drain() {
      if (h2) return h2.drain();
      draining = true;
      const closed = caller.closed ? Promise.resolve() : new Promise<void>((resolve) => caller.once('close', () => resolve()));
      pump();
      return closed;
    },
  };
}

export interface HttpCopy {
  take(request: RequestHead): boolean;
  /** A new copy connection to the program; what comes back on it is dropped. */
  openClient(): Duplex;
  /** What a copy connection may hold unsent before it is given up: the caller never waits for the program. */
  maxBacklog: number;
  log(message: string): void;
}

/** A mirrored connection's bytes, parsed as HTTP/2 stream by stream when they start with its preface, else as HTTP/1. */
export function copyHttp(options: HttpCopy): ConnectionCopy {
  return copyByPreface(() => copyH2(options), () => copyHttp1(options));
}

/** A mirrored connection's bytes, parsed: the matched requests are written to the program, the rest dropped. */
function copyHttp1(options: HttpCopy): ConnectionCopy {
  let copy: Duplex | undefined;
  let raw = false;
  let stopped = false;
  /** Matched requests whose body is still being copied: the copy ends after the last of them. */
  let copying = 0;
  let ending = false;
  const endIfDone = () => {
    if (ending && copying === 0) copy?.end();
  };
  const open = () => {
    if (copy && !copy.destroyed && copy.writable) return copy;
    const stream = options.openClient();
    stream.on('data', () => {});
    stream.on('error', () => {});
    copy = stream;
    return stream;
  };
  const send = (stream: Duplex, bytes: Buffer) => {
    if (stream.destroyed) return;
    if (stream.writableLength > options.maxBacklog) {
      options.log(`the program fell ${options.maxBacklog} bytes behind; this copy is dropped`);
      stream.destroy();
      return;
    }
    stream.write(bytes);
  };
  const reader = readRequests(
    {
      request(req) {
        if (!options.take(req)) {
          req.resume();
          reader.answered(req);
          return;
        }
        const stream = open();
        copying++;
        send(stream, requestHead(req));
        const framing = bodyFraming(req);
        req.on('data', (data: Buffer) => {
          for (const piece of framing.piece(data)) send(stream, piece);
        });
        req.on('end', () => {
          const last = framing.last();
          if (last) send(stream, last);
          reader.answered(req);
          copying--;
          endIfDone();
        });
      },
      upgrade(req, head) {
        stopped = true;
        if (!options.take(req)) return;
        const stream = open();
        send(stream, requestHead(req));
        for (const chunk of [head, ...reader.unparsed()]) send(stream, chunk);
        raw = true;
      },
      error(error) {
        stopped = true;
        options.log(`mirrored connection: no more copies, not HTTP/1: ${error.message}`);
      },
    },
    () => {},
  );
  return {
    write(chunk) {
      if (raw) {
        if (copy) send(copy, chunk);
      }
      else if (!stopped) reader.write(chunk);
    },
    end() {
      reader.end();
      ending = true;
      endIfDone();
    },
    destroy() {
      reader.destroy();
      // An ended copy finishes on its own; only one cut short is dropped.
      if (copy && !copy.writableEnded) copy.destroy();
    },
  };
}

/** Joins the caller to one upstream for the rest of the connection, after `sent`; ends and resets cross both ways. */
function splice(caller: Socket, upstream: Duplex, sent: Buffer[], callerEnded: boolean): void {
  for (const chunk of sent) upstream.write(chunk);
  if (callerEnded) upstream.end();
  else caller.pipe(upstream);
  upstream.pipe(caller);
  caller.on('error', () => upstream.destroy());
  upstream.on('error', () => caller.resetAndDestroy());
  upstream.once('close', () => {
    if (caller.readable || caller.writable) caller.resetAndDestroy();
  });
  caller.resume();
}
