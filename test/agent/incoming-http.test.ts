// HTTP-filtered incoming traffic through the real agent in the test world: request by request, a header or path filter
// sends matched requests to the program and the rest, byte for byte, to the target's server, with real clients
// (curl, node http keep-alive, fetch, python urllib, a raw pipelining socket, WebSocket); probes stay with the target.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { request, Agent } from 'node:http';
import { connect } from 'node:net';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { after, afterEach, before, describe, test } from 'node:test';
import { createIncomingPolicy } from '../../src/config/network-policy.ts';
import { resolveConfig } from '../../src/config/resolve.ts';
import type { ConfigFile } from '../../src/config/schema.ts';
import type { StepReporter } from '../../src/platform/platform.ts';
import { createProcessPlatform } from '../../src/platform/process/process-platform.ts';
import { connectAgent } from '../../src/proxy/agent-client.ts';
import { createIncomingRequests } from '../../src/proxy/incoming.ts';
import { agentProcesses } from '../e2e/leftovers.ts';
import { firstWebSocketMessage, localPeer, pipelined, podPeer, type RecordingServer } from '../support/http-peers.ts';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';

const run = promisify(execFile);
const gate = needsRoot('HTTP-filtered incoming traffic through the agent');
const progress: StepReporter = { step: (_text, work) => work(() => {}), warn: () => {} };
/** A port of the pod's own, served by a recording target server of this test's. */
const PORT = 8001;
type Incoming = NonNullable<Exclude<NonNullable<NonNullable<ConfigFile['feature']>['network']>['incoming'], string | boolean>>;

describe('HTTP-filtered incoming traffic through the agent', gate, () => {
  let world: World;
  let target: RecordingServer;
  let program: RecordingServer & { port: number };
  const closers: (() => unknown)[] = [];
  const url = (path: string) => `http://${world.target.address}:${PORT}${path}`;
  const curl = async (path: string, ...args: string[]) => (await run('curl', ['-sS', '-m', '5', ...args, url(path)])).stdout;

  before(async () => {
    world = await createWorld({ firewall: 'nft' });
    target = await podPeer(world.target.pid, PORT);
  });
  afterEach(async () => {
    while (closers.length > 0) await closers.pop()!();
    assert.deepEqual(agentProcesses(world.target.pid), [], 'an agent was left running');
  });
  after(async () => {
    await target?.stop();
    await world?.destroy();
  });

  /** An agent started as `doppel exec` starts it, a fresh program, and the proxy's incoming side subscribing PORT. */
  async function session(incoming: Incoming): Promise<void> {
    program = await localPeer();
    closers.push(() => program.stop());
    const platform = createProcessPlatform({ pid: world.target.pid, logLevel: 'debug' });
    const [transport] = await platform.start(progress);
    closers.push(() => platform.stop());
    const client = await connectAgent(transport!.stream, { handshakeTimeoutMs: 10_000 });
    closers.push(() => client.close());
    const config = resolveConfig({ feature: { network: { incoming } } });
    const requests = createIncomingRequests(client, createIncomingPolicy(config.feature.network.incoming, config.agent));
    closers.push(() => requests.close());
    await requests.listen(PORT, { family: 4, address: '127.0.0.1', port: program.port });
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
