// HTTP-filtered incoming traffic through the real agent in the test world: request by request, a header or path filter
// sends matched requests to the program and the rest, byte for byte, to the target's server, with real clients
// (curl, node http keep-alive, fetch, python urllib, a raw pipelining socket, WebSocket); probes stay with the target.
// HTTP/2 with prior knowledge stream by stream, with node's http2 client, curl --http2-prior-knowledge and gRPC.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { request, Agent } from 'node:http';
import { connect as connectH2, constants as h2, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { connect } from 'node:net';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { after, afterEach, before, describe, test } from 'node:test';
import { agentProcesses } from '../e2e/leftovers.ts';
import { echoClient, localGrpcPeer, podGrpcPeer } from '../support/grpc-peers.ts';
import { firstWebSocketMessage, localH2Peer, localPeer, pipelined, podH2Peer, podPeer, type RecordedStream, type RecordingServer } from '../support/http-peers.ts';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { agentSession, incomingRequests, type Incoming } from './agent-session.ts';

const run = promisify(execFile);
const gate = needsRoot('HTTP-filtered incoming traffic through the agent');
/** A port of the pod's own, served by a recording target server of this test's. */
const PORT = 8001;
/** The pod's HTTP/2 (h2c) port, and its gRPC port. */
const H2_PORT = 8002;
const GRPC_PORT = 8003;

describe('HTTP-filtered incoming traffic through the agent', gate, () => {
  let world: World;
  let target: RecordingServer;
  let h2Target: RecordingServer;
  let grpcTarget: RecordingServer;
  let program: RecordingServer & { port: number };
  const closers: (() => unknown)[] = [];
  const url = (path: string) => `http://${world.target.address}:${PORT}${path}`;
  const curl = async (path: string, ...args: string[]) => (await run('curl', ['-sS', '-m', '5', ...args, url(path)])).stdout;

  before(async () => {
    world = await createWorld({ firewall: 'nft' });
    target = await podPeer(world.target.pid, PORT);
    h2Target = await podH2Peer(world.target.pid, H2_PORT);
    grpcTarget = await podGrpcPeer(world.target.pid, GRPC_PORT);
  });
  afterEach(async () => {
    while (closers.length > 0) await closers.pop()!();
    assert.deepEqual(agentProcesses(world.target.pid), [], 'an agent was left running');
  });
  after(async () => {
    await target?.stop();
    await h2Target?.stop();
    await grpcTarget?.stop();
    await world?.destroy();
  });

  /** An agent started as `doppel exec` starts it, a fresh program, and the proxy's incoming side subscribing `port`. */
  async function session(incoming: Incoming, { port = PORT, start = () => localPeer() }: { port?: number; start?: () => Promise<RecordingServer & { port: number }> } = {}): Promise<void> {
    program = await start();
    closers.push(() => program.stop());
    const { client } = await agentSession(world.target.pid, closers);
    const requests = incomingRequests(client, { feature: { network: { incoming } } }, closers);
    await requests.listen(port, { family: 4, address: '127.0.0.1', port: program.port });
  }

  /** One HTTP/2 connection (prior knowledge) to the pod's h2c port, closed after the test. */
  function h2Connection(): ClientHttp2Session {
    const connection = connectH2(`http://${world.target.address}:${H2_PORT}`);
    connection.on('error', () => {});
    closers.push(() => connection.destroy());
    return connection;
  }

  test('header filter: curl with the header reaches the program, without it the target, whose bytes are the caller\'s', async () => {
    await session({ mode: 'steal', http_filter: { header_filter: '^x-dev: alice$' } });
    assert.equal(await curl('/one', '-H', 'X-Dev: alice'), 'program GET /one ');
    assert.equal(await curl('/two', '-H', 'X-Dev: bob'), 'target GET /two ');
    assert.equal(await curl('/three', '-H', 'x-dev: ALICE'), 'program GET /three ', 'header filters are case-insensitive');

    // Exactly what a caller sent reaches the target: odd casing, repeated headers, a body.
    const before = target.received().length;
    const sent = Buffer.from(`POST /exact?q=1 HTTP/1.1\r\nHost: pod.example\r\nx-MiXeD-CaSe: a  b\r\nX-Twice: 1\r\nX-Twice: 2\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`);
    const answer = await exchange(world.target.address, PORT, sent);
    assert.match(answer, /target POST \/exact\?q=1 hello$/);
    assert.equal(target.received().subarray(before).toString('latin1'), sent.toString('latin1'));
    assert.doesNotMatch(program.received().toString('latin1'), /exact|\/two/);
  });

  test('path filter: node http on one kept-alive connection, matched and unmatched in turn, answers in order', async () => {
    await session({ mode: 'steal', http_filter: { path_filter: '^/api/dev' } });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    closers.push(() => agent.destroy());
    const sockets = new Set<unknown>();
    for (const path of ['/api/dev/1', '/api/prod/2', '/api/dev/3', '/health', '/api/dev/5?x=1']) {
      const { body, socket } = await get(agent, url(path));
      sockets.add(socket);
      assert.equal(body, `${path.startsWith('/api/dev') ? 'program' : 'target'} GET ${path} `);
    }
    assert.equal(sockets.size, 1, 'the caller\'s requests all went on one connection');
    // A query is part of what a path filter sees.
    assert.equal(await curl('/other?route=/api/dev'), 'target GET /other?route=/api/dev ');
  });

  test('fetch and python urllib, path filter with the query', async () => {
    await session({ mode: 'steal', http_filter: { path_filter: 'dev=1' } });
    assert.equal(await (await fetch(url('/f?dev=1'))).text(), 'program GET /f?dev=1 ');
    assert.equal(await (await fetch(url('/f?dev=2'))).text(), 'target GET /f?dev=2 ');
    const urllib = async (path: string) => (await run('python3', ['-c', 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())', url(path)])).stdout;
    assert.equal(await urllib('/u?dev=1'), 'program GET /u?dev=1 ');
    assert.equal(await urllib('/u'), 'target GET /u ');
  });

  test('pipelined requests in one write: each answered by its server, in the order sent', async () => {
    await session({ mode: 'steal', http_filter: { method_filter: 'POST' } });
    const requests = ['GET /p1', 'POST /p2', 'GET /p3', 'POST /p4'].map((line) => `${line} HTTP/1.1\r\nHost: pod\r\nContent-Length: 2\r\n\r\n${line.slice(-2)}`);
    const bodies = await pipelined(world.target.address, PORT, Buffer.from(requests.join('')), 4);
    assert.deepEqual(bodies, ['target GET /p1 p1', 'program POST /p2 p2', 'target GET /p3 p3', 'program POST /p4 p4']);
  });

  test('chunked request bodies, matched and unmatched, arrive whole', async () => {
    await session({ mode: 'steal', http_filter: { header_filter: '^x-dev: alice$' } });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    closers.push(() => agent.destroy());
    const pieces = ['first piece,', 'x'.repeat(70_000), ',last'];
    for (const dev of ['alice', 'bob']) {
      const body = await post(agent, url(`/chunked-${dev}`), { 'x-dev': dev }, pieces);
      assert.equal(body, `${dev === 'alice' ? 'program' : 'target'} POST /chunked-${dev} ${pieces.join('')}`);
    }
    // The unmatched one reached the target chunked, as it was sent.
    assert.match(target.received().toString('latin1'), /POST \/chunked-bob HTTP\/1\.1\r\n[^]*Transfer-Encoding: chunked\r\n/);
  });

  test('WebSocket: a matched upgrade is the program\'s, an unmatched one the target\'s, for the rest of the connection', async () => {
    await session({ mode: 'steal', http_filter: { path_filter: '^/ws/dev' } });
    assert.equal(await firstWebSocketMessage(`ws://${world.target.address}:${PORT}/ws/dev`), 'program /ws/dev');
    assert.equal(await firstWebSocketMessage(`ws://${world.target.address}:${PORT}/ws/other`), 'target /ws/other');
  });

  test('probes stay with the target, filtered or not, unless steal_probes', async () => {
    await session({ mode: 'steal', http_filter: { path_filter: '^/' } });
    assert.equal(await curl('/healthz', '-A', 'kube-probe/1.31'), 'target GET /healthz ');
    assert.equal(await curl('/healthz'), 'program GET /healthz ');
    while (closers.length > 0) await closers.pop()!();

    await session({ mode: 'steal' });
    assert.equal(await curl('/ready', '-A', 'kube-probe/1.31'), 'target GET /ready ');
    assert.equal(await curl('/ready'), 'program GET /ready ');
    while (closers.length > 0) await closers.pop()!();

    await session({ mode: 'steal', steal_probes: true });
    assert.equal(await curl('/ready', '-A', 'kube-probe/1.31'), 'program GET /ready ');
  });

  test('a filtered steal passes a connection that is not HTTP to the target whole', async () => {
    await session({ mode: 'steal', http_filter: { path_filter: '.' } });
    // Not a request line: the target's own server says so, as it would without us.
    assert.match(await exchange(world.target.address, PORT, Buffer.from('\x16\x03\x01 not http\r\n\r\n', 'latin1')), /^HTTP\/1\.1 400 Bad Request/);
  });

  test('mirror with a filter: the target answers everything, the program gets a copy of the matched requests only', async () => {
    await session({ mode: 'mirror', http_filter: { header_filter: '^x-dev: alice$' } });
    assert.equal(await curl('/m1', '-H', 'X-Dev: alice'), 'target GET /m1 ');
    assert.equal(await curl('/m2'), 'target GET /m2 ');
    const deadline = Date.now() + 5000;
    while (!program.received().toString('latin1').includes('/m1') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.match(program.received().toString('latin1'), /^GET \/m1 HTTP\/1\.1\r\n[^]*X-Dev: alice\r\n/);
    assert.doesNotMatch(program.received().toString('latin1'), /\/m2/);
  });
  test('HTTP/2: concurrent streams on one connection go by a header filter, with bodies and trailers both ways', async () => {
    await session({ mode: 'steal', http_filter: { header_filter: '^x-dev: alice$' } }, { start: localH2Peer, port: H2_PORT });
    const connection = h2Connection();
    const programBefore = program.streams().length;
    const targetBefore = h2Target.streams().length;
    // A matched stream held open while the others come and go on the same connection.
    const held = h2Stream(connection, '/held', { 'x-dev': 'alice' }, { method: 'POST', trailers: { 'x-sent': 'held' } });
    held.write('first,');
    const devs = ['alice', 'bob', 'ALICE', undefined, 'alice', 'carol'];
    const answers = await Promise.all(devs.map((dev, i) => h2Stream(connection, `/s${i}`, dev ? { 'x-dev': dev } : {}, { method: i % 2 ? 'POST' : 'GET', body: i % 2 ? `body ${i}` : undefined, trailers: { 'x-sent': `s${i}` } }).answer));
    held.end('last');
    answers.push(await held.answer);
    const whoFor = (dev: string | undefined) => (dev?.toLowerCase() === 'alice' ? 'program' : 'target');
    answers.slice(0, devs.length).forEach((answer, i) => {
      const who = whoFor(devs[i]);
      assert.equal(answer.body, `${who} ${i % 2 ? 'POST' : 'GET'} /s${i} ${i % 2 ? `body ${i}` : ''}`);
      assert.equal(answer.headers['x-who'], who);
      assert.equal(answer.trailers?.['x-answered-by'], who, 'the response trailers came through');
    });
    assert.equal(answers.at(-1)!.body, 'program POST /held first,last');

    // Each server saw its streams only, with the caller's headers and request trailers.
    await until(() => program.streams().length - programBefore === 4 && h2Target.streams().length - targetBefore === 3);
    const paths = (streams: RecordedStream[]) => streams.map((stream) => stream.path).sort();
    assert.deepEqual(paths(program.streams().slice(programBefore)), ['/held', '/s0', '/s2', '/s4']);
    assert.deepEqual(paths(h2Target.streams().slice(targetBefore)), ['/s1', '/s3', '/s5']);
    for (const stream of [...program.streams().slice(programBefore), ...h2Target.streams().slice(targetBefore)]) {
      assert.deepEqual(stream.trailers, { 'x-sent': stream.path.slice(1) });
      assert.equal(stream.headers[':authority'], `${world.target.address}:${H2_PORT}`);
    }
    assert.equal(h2Target.streams().find((stream) => stream.path === '/s5')!.headers['x-dev'], 'carol');
    assert.equal(connection.closed, false, 'one connection carried every stream');
  });

  test('HTTP/2: a path filter, and :authority seen as the host a header filter matches', async () => {
    await session({ mode: 'steal', http_filter: { any_of: [{ path: '^/api/dev' }, { header: '^host: dev\\.example$' }] } }, { start: localH2Peer, port: H2_PORT });
    const connection = h2Connection();
    const asks: [string, Record<string, string>, string][] = [
      ['/api/dev/1', {}, 'program'],
      ['/api/prod/2', {}, 'target'],
      ['/api/dev/3?x=1', {}, 'program'],
      ['/other?route=/api/dev', {}, 'target'],
      ['/by-host', { ':authority': 'dev.example' }, 'program'],
      ['/by-host', { ':authority': 'prod.example' }, 'target'],
    ];
    const answers = await Promise.all(asks.map(([path, headers]) => h2Stream(connection, path, headers).answer));
    assert.deepEqual(
      answers.map((answer) => answer.body),
      asks.map(([path, , who]) => `${who} GET ${path} `),
    );
  });

  test('HTTP/2: a reset crosses both ways with its code', async () => {
    await session({ mode: 'steal', http_filter: { header_filter: '^x-dev: alice$' } }, { start: localH2Peer, port: H2_PORT });
    const connection = h2Connection();
    const fromProgram = await h2Stream(connection, '/reset', { 'x-dev': 'alice', 'x-reset-code': String(h2.NGHTTP2_ENHANCE_YOUR_CALM) }).answer;
    assert.equal(fromProgram.rstCode, h2.NGHTTP2_ENHANCE_YOUR_CALM);
    const fromTarget = await h2Stream(connection, '/reset', { 'x-reset-code': String(h2.NGHTTP2_REFUSED_STREAM) }).answer;
    assert.equal(fromTarget.rstCode, h2.NGHTTP2_REFUSED_STREAM);
    // Cut short in the middle of an answer: the caller sees the reset, not an answer that looks complete.
    for (const dev of ['alice', 'bob']) {
      const cut = await h2Stream(connection, '/cut', { 'x-dev': dev, 'x-reset-code': String(h2.NGHTTP2_INTERNAL_ERROR) }).answer;
      assert.deepEqual([cut.headers['x-who'], cut.body, cut.trailers, cut.rstCode], [dev === 'alice' ? 'program' : 'target', 'partial', undefined, h2.NGHTTP2_INTERNAL_ERROR]);
    }

    // The caller gives up on a request half sent: the program's stream is reset with the caller's code. (Trailers
    // to come keep node's client from ending the request before the reset.)
    const cancelled = h2Stream(connection, '/cancelled', { 'x-dev': 'alice' }, { method: 'POST', trailers: { 'x-sent': 'never' } });
    cancelled.write('some of it');
    await until(() => program.received().includes('some of it'));
    cancelled.close(h2.NGHTTP2_CANCEL);
    await until(() => program.streams().some((stream) => stream.path === '/cancelled'));
    const seen = program.streams().find((stream) => stream.path === '/cancelled')!;
    assert.equal(seen.reset, h2.NGHTTP2_CANCEL);
    assert.equal(seen.body, 'some of it');
    // The connection is still good for more streams.
    assert.equal((await h2Stream(connection, '/after', { 'x-dev': 'alice' }).answer).body, 'program GET /after ');
  });

  test('HTTP/2: curl --http2-prior-knowledge, matched and unmatched', async () => {
    await session({ mode: 'steal', http_filter: { header_filter: '^x-dev: alice$' } }, { start: localH2Peer, port: H2_PORT });
    const h2curl = async (path: string, ...args: string[]) =>
      (await run('curl', ['-sS', '-m', '5', '--http2-prior-knowledge', '-w', ' HTTP/%{http_version}', ...args, `http://${world.target.address}:${H2_PORT}${path}`])).stdout;
    assert.equal(await h2curl('/c1', '-H', 'X-Dev: alice'), 'program GET /c1  HTTP/2');
    assert.equal(await h2curl('/c2', '-H', 'X-Dev: bob'), 'target GET /c2  HTTP/2');
    assert.equal(await h2curl('/c3', '-H', 'X-Dev: alice', '--data-binary', 'posted'), 'program POST /c3 posted HTTP/2');
    assert.equal(await h2curl('/c4', '--data-binary', 'posted'), 'target POST /c4 posted HTTP/2');
  });

  test('gRPC: unary, server-streaming and bidi calls on one channel go by metadata, statuses and trailers included', async () => {
    await session({ mode: 'steal', http_filter: { header_filter: '^x-dev: alice$' } }, { start: localGrpcPeer, port: GRPC_PORT });
    const client = echoClient(`${world.target.address}:${GRPC_PORT}`);
    closers.push(() => client.close());
    const alice = { 'x-dev': 'alice' };
    const ok = (who: string) => ({ code: 0, details: 'OK', answeredBy: who });
    const refused = (who: string) => ({ code: 7, details: `${who} refuses`, answeredBy: who });
    const [unary, unaryTarget, unaryFails, unaryTargetFails, streamed, streamedFails, bidi, bidiTarget] = await Promise.all([
      client.unary({ text: 'hi' }, alice),
      client.unary({ text: 'hi' }, { 'x-dev': 'bob' }),
      client.unary({ text: 'no', fail: true }, alice),
      client.unary({ text: 'no', fail: true }),
      client.serverStream({ text: 'st', count: 3 }, alice),
      client.serverStream({ text: 'st', count: 2, fail: true }),
      client.bidi(['a', 'b', 'c'], alice),
      client.bidi(['x', 'y']),
    ]);
    assert.deepEqual(unary, { text: 'program unary hi', status: ok('program') });
    assert.deepEqual(unaryTarget, { text: 'target unary hi', status: ok('target') });
    // An error status (here a trailers-only answer) reaches the client as that status.
    assert.deepEqual(unaryFails, { text: undefined, status: refused('program') });
    assert.deepEqual(unaryTargetFails, { text: undefined, status: refused('target') });
    assert.deepEqual(streamed, { texts: ['program 0 st', 'program 1 st', 'program 2 st'], status: ok('program') });
    // After messages, the status comes in trailers.
    assert.deepEqual(streamedFails, { texts: ['target 0 st', 'target 1 st'], status: refused('target') });
    assert.deepEqual(bidi, { texts: ['program echo a', 'program echo b', 'program echo c'], status: ok('program') });
    assert.deepEqual(bidiTarget, { texts: ['target echo x', 'target echo y'], status: ok('target') });
    const calls = (peer: RecordingServer) => peer.streams().map((stream) => `${stream.path.split('/').pop()} ${stream.body} ${stream.headers['x-dev'] ?? '-'}`).sort();
    assert.deepEqual(calls(program), ['Bidi a,b,c alice', 'ServerStream st alice', 'Unary hi alice', 'Unary no alice']);
    assert.ok(['Bidi x,y -', 'ServerStream st -', 'Unary hi bob', 'Unary no -'].every((call) => calls(grpcTarget).includes(call)));
    assert.ok(!calls(grpcTarget).some((call) => call.endsWith(' alice')), 'the target saw none of alice\'s calls');
  });

  test('HTTP/2 mirror with a filter: the target answers every stream, the program gets copies of the matched ones', async () => {
    await session({ mode: 'mirror', http_filter: { header_filter: '^x-dev: alice$' } }, { start: localH2Peer, port: H2_PORT });
    const connection = h2Connection();
    const big = 'x'.repeat(300_000);
    const answers = await Promise.all([
      h2Stream(connection, '/m1', { 'x-dev': 'alice' }, { method: 'POST', body: 'copied', trailers: { 'x-sent': 'm1' } }).answer,
      h2Stream(connection, '/m2', { 'x-dev': 'bob' }, { method: 'POST', body: 'not copied' }).answer,
      h2Stream(connection, '/m3', { 'x-dev': 'alice' }, { method: 'POST', body: big }).answer,
      h2Stream(connection, '/m4').answer,
    ]);
    assert.deepEqual(
      answers.map((answer) => answer.body),
      ['target POST /m1 copied', 'target POST /m2 not copied', `target POST /m3 ${big}`, 'target GET /m4 '],
    );
    await until(() => program.streams().length === 2);
    // Give a copy of /m2 or /m4, were there one, the time to arrive.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const copies = program.streams().sort((a, b) => a.path.localeCompare(b.path));
    assert.deepEqual(copies.map((stream) => [stream.path, stream.body.length, stream.headers['x-dev']]), [['/m1', 6, 'alice'], ['/m3', big.length, 'alice']]);
    assert.deepEqual(copies[0]!.trailers, { 'x-sent': 'm1' });
  });

  test('HTTP/2: probes stay with the target, filtered or not', async () => {
    const probe = { 'user-agent': 'kube-probe/1.31' };
    await session({ mode: 'steal', http_filter: { path_filter: '^/' } }, { start: localH2Peer, port: H2_PORT });
    let connection = h2Connection();
    assert.deepEqual(
      (await Promise.all([h2Stream(connection, '/healthz', probe).answer, h2Stream(connection, '/healthz').answer])).map((answer) => answer.body),
      ['target GET /healthz ', 'program GET /healthz '],
    );
    while (closers.length > 0) await closers.pop()!();

    await session({ mode: 'steal' }, { start: localH2Peer, port: H2_PORT });
    connection = h2Connection();
    assert.deepEqual(
      (await Promise.all([h2Stream(connection, '/ready', probe).answer, h2Stream(connection, '/ready').answer])).map((answer) => answer.body),
      ['target GET /ready ', 'program GET /ready '],
    );
  });

});

function get(agent: Agent, target: string): Promise<{ body: string; socket: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(target, { agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ body, socket: req.socket }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A POST with no length: node sends it chunked, a piece per write. */
function post(agent: Agent, target: string, headers: Record<string, string>, pieces: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(target, { agent, method: 'POST', headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    for (const piece of pieces) req.write(piece);
    req.end();
  });
}

/** Sends `bytes` on a new connection and returns all it gets back until the other side closes. */
async function exchange(host: string, port: number, bytes: Buffer): Promise<string> {
  const socket = connect({ host, port });
  await once(socket, 'connect');
  socket.write(bytes);
  const chunks: Buffer[] = [];
  for await (const chunk of socket) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('latin1');
}

interface H2Answer {
  headers: IncomingHttpHeaders;
  body: string;
  trailers: IncomingHttpHeaders | undefined;
  /** The RST_STREAM code the stream closed with (NGHTTP2_NO_ERROR when it ended normally). */
  rstCode: number | undefined;
}

/**
 * A stream on an HTTP/2 connection: its request's body (`body`, else written by the caller, who then ends it) and
 * trailers; `answer` settles when the stream closes, however it does.
 */
function h2Stream(connection: ClientHttp2Session, path: string, headers: Record<string, string> = {}, options: { method?: string; body?: string | undefined; trailers?: Record<string, string> } = {}) {
  const { method = 'GET', body, trailers } = options;
  const stream = connection.request({ ':method': method, ':path': path, ...headers }, { endStream: method === 'GET' && trailers === undefined, waitForTrailers: trailers !== undefined });
  // Closed meanwhile (a reset), the stream sends no trailers, and no END_STREAM.
  if (trailers) stream.on('wantTrailers', () => stream.closed || stream.sendTrailers(trailers));
  const answer = new Promise<H2Answer>((resolve) => {
    const answer: H2Answer = { headers: {}, body: '', trailers: undefined, rstCode: undefined };
    stream.on('response', (received) => (answer.headers = received));
    stream.on('trailers', (received) => (answer.trailers = received));
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => (answer.body += chunk));
    stream.on('error', () => {});
    stream.on('close', () => resolve({ ...answer, rstCode: stream.rstCode }));
  });
  if (body !== undefined) stream.end(body);
  else if (method === 'GET') stream.end();
  return Object.assign(stream, { answer });
}

/** Waits for `condition`, for up to 10 s. */
async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`not so within 10 s: ${condition.toString()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
