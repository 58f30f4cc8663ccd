// HTTP/1 on a byte stream, with Node's own parsers: requests read from a caller's bytes, a request written back out
// from what the parser gave, and where an upstream's response ends. Parsers only find boundaries: the bytes they are
// fed go on elsewhere, so nothing here ever writes to a real socket.
import { createServer, request, type IncomingMessage } from 'node:http';
import { Duplex } from 'node:stream';

/** What a caller's request stream turns into, in order. */
export interface RequestEvents {
  /** A request's head; its body follows on it as a stream (chunked bodies already de-chunked). */
  request(request: IncomingMessage): void;
  /** An Upgrade or CONNECT request: what follows `head` is no longer HTTP. */
  upgrade(request: IncomingMessage, head: Buffer): void;
  /** Bytes that are not HTTP/1 (a TLS hello, an HTTP/2 preface, garbage). */
  error(error: Error): void;
}

export interface RequestReader {
  /** The caller's bytes; false when the parser wants no more until `more` is called. */
  write(chunk: Buffer): boolean;
  end(): void;
  /** The request `request()` gave is answered: its parser state may move on. */
  answered(request: IncomingMessage): void;
  /** Bytes written but not yet parsed when an upgrade stopped the parser. */
  unparsed(): Buffer[];
  destroy(): void;
}

/** Requests are large enough in practice; a caller's head above this is not HTTP the agent can take apart. */
const MAX_HEADER_BYTES = 256 * 1024;

const readers = new WeakMap<Duplex, RequestEvents>();
// One server parses every caller stream; it never listens, and what it writes goes nowhere.
const parser = createServer({ requestTimeout: 0, headersTimeout: 0, keepAliveTimeout: 0, maxHeaderSize: MAX_HEADER_BYTES });
const responses = new WeakMap<IncomingMessage, { end(): void }>();
const onRequest = (req: IncomingMessage, res: { end(): void }) => {
  responses.set(req, res);
  readers.get(req.socket as Duplex)?.request(req);
};
parser.on('request', onRequest);
// Without these, Node would answer `Expect:` itself (100 or 417); the upstream answers it.
parser.on('checkContinue', onRequest);
parser.on('checkExpectation', onRequest);
parser.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => readers.get(socket)?.upgrade(req, head));
parser.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => readers.get(socket)?.upgrade(req, head));
parser.on('clientError', (error: Error, socket: Duplex) => {
  readers.get(socket)?.error(error);
  socket.destroy();
});

export function readRequests(events: RequestEvents, more: () => void): RequestReader {
  const view = new Duplex({
    read: more,
    write: (_chunk, _encoding, callback) => callback(),
    final: (callback) => callback(),
  });
  readers.set(view, events);
  parser.emit('connection', view);
  return {
    write: (chunk) => view.push(chunk),
    end: () => view.push(null),
    answered: (req) => responses.get(req)?.end(),
    unparsed() {
      const left: Buffer[] = [];
      for (let chunk = view.read() as Buffer | null; chunk !== null; chunk = view.read() as Buffer | null) left.push(chunk);
      return left;
    },
    destroy: () => view.destroy(),
  };
}

/** The request's head as it is sent on: its request line and its headers, names, order and values as received. */
export function requestHead(req: IncomingMessage): Buffer {
  let head = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
  return Buffer.from(`${head}\r\n`, 'latin1');
}

/** Frames a request's body as its headers say: chunked again when it came chunked, as it is otherwise. */
export function bodyFraming(req: IncomingMessage): { piece(data: Buffer): Buffer[]; last(): Buffer | undefined } {
  const chunked = /(^|,)\s*chunked\s*$/i.test(req.headers['transfer-encoding'] ?? '');
  if (!chunked) return { piece: (data) => [data], last: () => undefined };
  return {
    piece: (data) => (data.length === 0 ? [] : [Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from('\r\n')]),
    last() {
      let trailer = '0\r\n';
      const raw = req.rawTrailers;
      for (let i = 0; i + 1 < raw.length; i += 2) trailer += `${raw[i]}: ${raw[i + 1]}\r\n`;
      return Buffer.from(`${trailer}\r\n`, 'latin1');
    },
  };
}

export interface ResponseWatch {
  /** The upstream's bytes, as they are passed on. */
  write(chunk: Buffer): void;
  /** The upstream ended its side. */
  end(): void;
}

/**
 * Follows one response to a request made with `method`: `done` once it is complete (1xx answers are part of it), with
 * whether its connection stays open; `failed` when it is malformed or cut short.
 */
export function watchResponse(method: string, done: (keepAlive: boolean) => void, failed: (error: Error) => void): ResponseWatch {
  const view = new Duplex({ read() {}, write: (_chunk, _encoding, callback) => callback(), final: (callback) => callback() });
  // The request Node writes into the view goes nowhere: it only makes Node read a response to `method`.
  const probe = request({ createConnection: () => view, method, path: '/', setHost: false });
  let settled = false;
  const fail = (error: Error) => {
    if (settled) return;
    settled = true;
    failed(error);
  };
  probe.on('error', fail);
  probe.on('response', (res: IncomingMessage) => {
    res.on('error', fail);
    res.on('end', () => {
      if (settled) return;
      settled = true;
      done(keepsAlive(res));
    });
    res.resume();
  });
  probe.end();
  return {
    write: (chunk) => {
      if (!settled) view.push(chunk);
    },
    end: () => view.push(null),
  };
}

/** HTTP/1.1 stays open unless it says close; HTTP/1.0 closes unless it says keep-alive. */
function keepsAlive(message: IncomingMessage): boolean {
  const connection = (message.headers.connection ?? '').toLowerCase();
  if (message.httpVersion === '1.0') return /(^|,)\s*keep-alive\s*(,|$)/.test(connection);
  return !/(^|,)\s*close\s*(,|$)/.test(connection);
}
