// HTTP/2 with prior knowledge (h2c, and so gRPC) taken stream by stream, with Node's own http2 sessions: the caller's
// connection is served by a server session, and each of its streams goes to the program or to the target's server on
// one client session per upstream, with its headers, body, trailers and resets as they came. A filtered mirror parses
// the copied bytes the same way and replays the matched streams to the program.
import {
  connect,
  constants,
  createServer,
  sensitiveHeaders,
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type Http2Stream,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
  type ServerStreamResponseOptions,
} from 'node:http2';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import type { RequestHead } from './http-filter.ts';
import type { HttpCopy } from './incoming-http.ts';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const { NGHTTP2_CANCEL, NGHTTP2_FLAG_END_STREAM, NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR } = constants;
/** The largest flow-control window HTTP/2 allows. */
const MAX_WINDOW = 2 ** 31 - 1;

/**
 * Limits for every session: headers as large as the HTTP/1 side takes (256 KiB), and room for many streams' buffers,
 * so that the agent refuses nothing the target's server would take. Streams are not limited in number (Node's
 * default), and each one's buffers are bounded by its flow-control window, which the pipes honour.
 */
const SESSION_OPTIONS = {
  maxHeaderListPairs: 4096,
  maxSessionMemory: 64,
  settings: { maxHeaderListSize: 256 * 1024 },
};

/** A mirrored connection's copy: given every byte the caller sends, then its end, or destroyed when it is gone. */
export interface ConnectionCopy {
  write(chunk: Buffer): void;
  end(): void;
  destroy(): void;
}

/** Whether a connection's first bytes are HTTP/2's client preface; undefined while they are too few to tell. */
export function isH2Preface(sent: Buffer[]): boolean | undefined {
  const seen = Buffer.concat(sent);
  const length = Math.min(seen.length, PREFACE.length);
  if (!seen.subarray(0, length).equals(PREFACE.subarray(0, length))) return false;
  return length === PREFACE.length ? true : undefined;
}

/** What a filter sees of a stream: its method and path, and its headers with `:authority` as the `host` it stands for. */
function requestHead(headers: IncomingHttpHeaders, raw: string[]): RequestHead {
  const rawHeaders: string[] = [];
  const authority = headers[':authority'];
  if (authority !== undefined && headers.host === undefined) rawHeaders.push('host', authority);
  for (let i = 0; i + 1 < raw.length; i += 2) if (!raw[i]!.startsWith(':')) rawHeaders.push(raw[i]!, raw[i + 1]!);
  return { method: headers[':method'], url: headers[':path'], rawHeaders };
}

/** Headers to send on as they came (order, repeats), the ones the sender marked never to be indexed still marked. */
function sameHeaders(headers: IncomingHttpHeaders, raw: string[]): string[] {
  return Object.assign([...raw], { [sensitiveHeaders]: (headers as Record<symbol, unknown>)[sensitiveHeaders] });
}

/** Client sessions to one upstream: one at a time, opened when first needed and again after it closes or goes away. */
interface Upstream {
  /** The session new streams go on. */
  session(): ClientHttp2Session;
  /** Closes every session once its streams are done. */
  close(): void;
}

function upstream(open: () => Duplex, log: (message: string) => void): Upstream {
  let current: ClientHttp2Session | undefined;
  const all = new Set<ClientHttp2Session>();
  return {
    session() {
      if (current && !current.closed && !current.destroyed) return current;
      // The authority is only a default: every stream names its own.
      const session = connect('http://localhost', { ...SESSION_OPTIONS, createConnection: () => open() });
      all.add(session);
      session.on('error', (error) => log(`an upstream HTTP/2 connection: ${error.message}`));
      // A GOAWAY lets the streams under way finish; new ones go on a new connection.
      session.on('goaway', () => {
        if (current === session) current = undefined;
      });
      session.on('close', () => {
        all.delete(session);
        if (current === session) current = undefined;
      });
      current = session;
      return session;
    },
    close() {
      for (const session of all) session.close();
    },
  };
}

/** Where a steal sends each stream: what `stealHttp` is given, whatever names its routes. */
export interface H2Steal<R> {
  /** Who answers this stream. */
  route(request: RequestHead): R;
  /** A new connection to whoever `route` names; each one carries one client session. */
  open(route: R): Duplex;
  log(message: string): void;
}

/** A caller's HTTP/2 connection being taken. */
export interface H2Stealing {
  /** GOAWAY: the streams under way finish, then the connection closes (the caller opens new ones); settles then. */
  drain(): Promise<void>;
}

/** Takes a caller's HTTP/2 connection stream by stream; `sent` is what it sent before it was known to be HTTP/2. */
export function stealH2<R>(caller: Socket, sent: Buffer[], options: H2Steal<R>): H2Stealing {
  const upstreams = new Map<R, Upstream>();
  const upstreamFor = (route: R) => {
    let existing = upstreams.get(route);
    if (!existing) upstreams.set(route, (existing = upstream(() => options.open(route), options.log)));
    return existing;
  };
  let session: ServerHttp2Session | undefined;
  const server = createServer(SESSION_OPTIONS);
  server.on('session', (started: ServerHttp2Session) => {
    session = started;
    started.on('error', (error) => options.log(`the caller's HTTP/2 connection: ${error.message}`));
    started.on('close', () => {
      for (const one of upstreams.values()) one.close();
    });
  });
  server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, raw: string[]) => {
    const route = options.route(requestHead(headers, raw));
    const log = (message: string) => options.log(`HTTP/2 ${headers[':method']} ${headers[':path']}: ${message}`);
    let request: ClientHttp2Stream;
    try {
      request = upstreamFor(route).session().request(sameHeaders(headers, raw), { endStream: stream.endAfterHeaders, waitForTrailers: true });
    } catch (error) {
      log((error as Error).message);
      stream.close(NGHTTP2_INTERNAL_ERROR);
      return;
    }
    pass(stream, request, log);
  });
  // Node's session reads the socket's handle itself, after taking what is buffered on the socket: what was read while
  // looking for the preface goes back there.
  caller.pause();
  caller.unshift(Buffer.concat(sent));
  server.emit('connection', caller);
  return {
    drain() {
      const closed = caller.closed ? Promise.resolve() : new Promise<void>((resolve) => caller.once('close', () => resolve()));
      if (session && !session.closed) session.close();
      return closed;
    },
  };
}

/**
 * Joins a caller's stream to the upstream's: the request's body and trailers one way, the response's headers, body
 * and trailers the other, each with backpressure; a reset on either side resets the other with its code.
 */
function pass(caller: ServerHttp2Stream, request: ClientHttp2Stream, log: (message: string) => void): void {
  let requestTrailers: IncomingHttpHeaders | undefined;
  let responseTrailers: IncomingHttpHeaders | undefined;
  /** Whether the caller's request, and the upstream's answer, have come in full. */
  let requested = caller.endAfterHeaders;
  let answered = false;
  caller.on('error', (error) => log(`caller: ${error.message}`));
  request.on('error', (error) => log(error.message));
  caller.on('trailers', (trailers: IncomingHttpHeaders) => (requestTrailers = trailers));
  request.on('trailers', (trailers: IncomingHttpHeaders) => (responseTrailers = trailers));
  // Trailers always wait for the end of the body: only then is it known whether the other side sent any (none sends
  // an empty DATA frame that ends the stream). A reset also ends the body, and then nothing more is sent.
  request.on('wantTrailers', () => sendTrailers(request, requestTrailers));
  caller.on('wantTrailers', () => sendTrailers(caller, responseTrailers));

  // Bodies are ended by hand: the end of one cut short by a reset must not pass for a complete one.
  if (!caller.endAfterHeaders) caller.pipe(request, { end: false });
  onCleanEnd(caller, () => {
    requested = true;
    request.end();
  });
  // 1xx answers (100 Continue, 103 Early Hints) go before the response.
  request.on('headers', (headers: IncomingHttpHeaders) => {
    if (!caller.headersSent && !caller.closed) caller.additionalHeaders(headers);
  });
  request.on('response', (headers: IncomingHttpHeaders, flags: number, raw: string[]) => {
    if (caller.closed || caller.destroyed) return;
    // A trailers-only answer (how gRPC often says an error) ends in its headers, and must reach the caller so. (Node
    // sets `endAfterHeaders` on the streams it is sent, not on the answers to its own.)
    const ends = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
    try {
      caller.respond(sameHeaders(headers, raw), { endStream: ends, waitForTrailers: true, sendDate: false } as ServerStreamResponseOptions);
    } catch (error) {
      log(`not passed on: ${(error as Error).message}`);
      caller.close(NGHTTP2_INTERNAL_ERROR);
      return;
    }
    // Node ends a HEAD request's answer at once.
    if (!caller.writableEnded) request.pipe(caller, { end: false });
  });
  onCleanEnd(request, () => {
    answered = true;
    if (!caller.writableEnded) caller.end();
  });

  request.once('close', () => {
    if (caller.closed || caller.destroyed) return;
    // No answer in full: the caller has none either, and learns how it ended (a reset's code, else an error).
    if (!answered) return caller.close(request.rstCode || NGHTTP2_INTERNAL_ERROR);
    // Answered in full and done with the request (a server may end a stream before the request's body): what the
    // caller still sends is read and dropped, so that its stream can finish.
    caller.unpipe(request);
    caller.resume();
  });
  caller.once('close', () => {
    if (request.closed || request.destroyed) return;
    if (caller.rstCode) request.close(caller.rstCode);
    // Gone without a reset before the exchange was over (its connection went): the upstream stops too.
    else if (!requested || !answered) request.close(NGHTTP2_CANCEL);
  });
}

/** Calls `ended` when the stream's body has come in full, not when a reset cut it short (Node ends it then too). */
function onCleanEnd(stream: Http2Stream, ended: () => void): void {
  stream.once('end', () => {
    if (stream.rstCode === NGHTTP2_NO_ERROR) ended();
  });
}

/** Ends a stream's body with the trailers (none: an empty DATA frame with END_STREAM), unless it was reset meanwhile. */
function sendTrailers(stream: Http2Stream, trailers: IncomingHttpHeaders | undefined): void {
  if (!stream.closed && !stream.destroyed) stream.sendTrailers(trailers ?? {});
}

/**
 * A mirrored connection's bytes, parsed as HTTP/2: the streams `take` matches are replayed to the program on a client
 * session (its answers dropped), the rest dropped. The parsing session's own frames go nowhere, and its windows are as
 * wide as HTTP/2 allows, since the caller follows the target's windows, not ours.
 */
export function copyH2(options: HttpCopy): ConnectionCopy {
  const view = new Duplex({ read() {}, write: (_chunk, _encoding, callback) => callback(), final: (callback) => callback() });
  const program = copies(options);
  const server = createServer({ ...SESSION_OPTIONS, settings: { ...SESSION_OPTIONS.settings, initialWindowSize: MAX_WINDOW } });
  server.on('session', (session: ServerHttp2Session) => {
    session.setLocalWindowSize(MAX_WINDOW);
    session.on('error', (error) => options.log(`mirrored HTTP/2 connection: no more copies: ${error.message}`));
    session.on('close', () => program.close());
  });
  server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, raw: string[]) => {
    stream.on('error', () => {});
    // Our own answer, which goes nowhere: the stream then closes when the caller's request ends.
    stream.respond({ ':status': 200 }, { endStream: true });
    if (options.take(requestHead(headers, raw))) program.copy(stream, sameHeaders(headers, raw));
    else stream.resume();
  });
  server.emit('connection', view);
  return {
    // Whatever the parser's pace: the caller never waits for its copy.
    write: (chunk) => {
      view.push(chunk);
    },
    end: () => {
      view.push(null);
    },
    destroy: () => view.destroy(),
  };
}

/** The program's side of an HTTP/2 mirror: each matched stream replayed, and given up when the program falls behind. */
function copies(options: HttpCopy): { copy(stream: ServerHttp2Stream, headers: string[]): void; close(): void } {
  let channel: Duplex | undefined;
  const sending = new Set<ClientHttp2Stream>();
  const to = upstream(() => (channel = options.openClient()), options.log);
  /** Bytes written to the program and not yet taken by it. */
  const backlog = () => [...sending].reduce((sum, copy) => sum + copy.writableLength, channel?.writableLength ?? 0);
  const send = (session: ClientHttp2Session, copy: ClientHttp2Stream, chunk: Buffer) => {
    if (copy.closed || copy.destroyed) return;
    if (backlog() > options.maxBacklog) {
      options.log(`the program fell ${options.maxBacklog} bytes behind; its HTTP/2 copies are dropped`);
      session.destroy();
      return;
    }
    copy.write(chunk);
  };
  return {
    copy(stream, headers) {
      const session = to.session();
      let copy: ClientHttp2Stream;
      try {
        copy = session.request(headers, { endStream: stream.endAfterHeaders, waitForTrailers: true });
      } catch (error) {
        options.log(`mirrored HTTP/2 stream not copied: ${(error as Error).message}`);
        return;
      }
      sending.add(copy);
      copy.on('error', () => {});
      copy.on('close', () => sending.delete(copy));
      // The program's answer goes nowhere.
      copy.resume();
      let trailers: IncomingHttpHeaders | undefined;
      stream.on('trailers', (received: IncomingHttpHeaders) => (trailers = received));
      copy.on('wantTrailers', () => sendTrailers(copy, trailers));
      if (stream.endAfterHeaders) return;
      let ended = false;
      stream.on('data', (chunk: Buffer) => send(session, copy, chunk));
      onCleanEnd(stream, () => {
        ended = true;
        if (!copy.closed && !copy.destroyed) copy.end();
      });
      // Reset by the caller, or its connection gone, before its request ended: the copy is reset.
      stream.once('close', () => {
        if (!ended && !copy.closed && !copy.destroyed) copy.close(stream.rstCode || NGHTTP2_CANCEL);
      });
    },
    close: () => to.close(),
  };
}

/** A mirrored connection's copy: `h2()`'s when its first bytes are HTTP/2's preface, `http1()`'s otherwise. */
export function copyByPreface(h2: () => ConnectionCopy, http1: () => ConnectionCopy): ConnectionCopy {
  let copy: ConnectionCopy | undefined;
  const sent: Buffer[] = [];
  return {
    write(chunk) {
      if (copy) return copy.write(chunk);
      sent.push(chunk);
      const preface = isH2Preface(sent);
      if (preface === undefined) return;
      copy = preface ? h2() : http1();
      copy.write(Buffer.concat(sent));
    },
    end() {
      if (!copy && sent.length > 0) {
        copy = http1();
        copy.write(Buffer.concat(sent));
      }
      copy?.end();
    },
    destroy: () => copy?.destroy(),
  };
}
