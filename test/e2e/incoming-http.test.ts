// HTTP-filtered steal on a process target, end to end: node and python servers under the real layer and bin/doppel take
// the target's port with feature.network.incoming.http_filter; real clients on the host (curl, node http keep-alive,
// fetch, python urllib, node's WebSocket, a gRPC client) reach the program when they match and the target's own server when
// not; probes stay; several developers share the port.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, afterEach, before, describe, test } from 'node:test';
import { echoClient, grpcServerCommand, podGrpcPeer } from '../support/grpc-peers.ts';
import { firstWebSocketMessage, peerServer } from '../support/http-peers.ts';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { leftoversAfter } from './leftovers.ts';
import { serveUnderDoppel, type RunningServer } from './serve-under-doppel.ts';
import { curlTarget, targetAnswersAgain, targetUrl } from './target-http.ts';

const run = promisify(execFile);
const gate = needsRoot('HTTP-filtered incoming traffic on a process target');

/** python's http.server, HTTP/1.1 with keep-alive: answers "python <method> <path> <body>". */
const pythonServer = `
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = f"python {self.command} {self.path} {self.rfile.read(length).decode()}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("", int(sys.argv[1])), Handler)
print(f"ready {server.server_address[1]}", flush=True)
server.serve_forever()
`;

describe('HTTP-filtered incoming traffic on a process target', gate, () => {
  let world: World;
  let configDir: string;
  const port = () => world.target.http.port;
  const url = (path: string) => targetUrl(world, path);
  const curl = async (path: string, ...args: string[]) => (await run('curl', ['-sS', '-m', '5', ...args, url(path)])).stdout;
  const urllib = async (path: string, header: string) =>
    (await run('python3', ['-c', 'import sys, urllib.request; name, value = sys.argv[2].split(": "); sys.stdout.write(urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={name: value}), timeout=5).read().decode())', url(path), header])).stdout;

  /** Chains of ours left in the target's network namespace, in either iptables backend. */
  function chainsLeft(): string[] {
    return ['iptables-legacy-save', 'iptables-nft-save'].flatMap((save) => {
      try {
        return execFileSync('nsenter', [`--net=/proc/${world.target.pid}/ns/net`, save], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
          .split('\n')
          .filter((line) => line.includes('DOPPEL'));
      } catch {
        return [];
      }
    });
  }

  /** Sessions still running: a failed test stops its own before the leftovers are checked. */
  const running = new Set<RunningServer>();

  /** Runs `command` under doppel with `incoming` as feature.network.incoming, from a config file. */
  function serve(command: string[], incoming: object): RunningServer {
    const file = join(configDir, `config-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(file, JSON.stringify({ feature: { network: { incoming } } }));
    const server = serveUnderDoppel(world.target.pid, command, { flags: ['-f', file] });
    running.add(server);
    return server;
  }

  async function stopped(server: RunningServer): Promise<void> {
    running.delete(server);
    server.signal('SIGTERM');
    const result = await server.finished;
    assert.ok(result.status === 0 || result.signal === 'SIGTERM' || result.status === 143, `doppel ended ${result.status}/${result.signal}\nstderr: ${result.stderr}`);
  }

  before(async () => {
    world = await createWorld();
    configDir = mkdtempSync(join(tmpdir(), 'doppel-http-filter-'));
  });
  after(async () => {
    if (configDir) rmSync(configDir, { recursive: true, force: true });
    await world?.destroy();
  });
  afterEach(async () => {
    for (const server of running) {
      server.signal('SIGTERM');
      await server.finished;
    }
    running.clear();
    if (!world) return;
    const left = await leftoversAfter(world.target.pid);
    assert.deepEqual(left, { agents: [], dirs: [] }, 'a session left an agent process or a socket directory behind');
    assert.deepEqual(chainsLeft(), [], 'a session left iptables rules in the target');
    await targetAnswersAgain(world);
  });

  test('node program, header filter: curl, fetch, urllib and node http keep-alive; the rest and probes reach the target', async () => {
    const server = serve(['node', '-e', peerServer, 'program', String(port())], { mode: 'steal', http_filter: { header_filter: '^x-dev: alice$' } });
    await server.line(/^ready /);
    const mine = '-HX-Dev: alice';
    assert.equal(await curl('/curl', mine), 'program GET /curl ');
    assert.equal(await curl('/curl-other'), world.target.http.body);
    assert.equal(await curl('/curl-probe', mine, '-A', 'kube-probe/1.31'), world.target.http.body, 'a probe stays with the target even when it matches');
    assert.equal(await (await fetch(url('/fetch'), { headers: { 'x-dev': 'alice' } })).text(), 'program GET /fetch ');
    assert.equal(await (await fetch(url('/fetch-other'), { headers: { 'x-dev': 'bob' } })).text(), world.target.http.body);
    assert.equal(await urllib('/urllib', 'X-Dev: alice'), 'program GET /urllib ');
    assert.equal(await urllib('/urllib-other', 'X-Dev: carol'), world.target.http.body);

    // One kept-alive connection, the developer's requests and others' in turn.
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    try {
      for (const [path, dev] of [['/ka-1', 'alice'], ['/ka-2', 'bob'], ['/ka-3', 'alice'], ['/ka-4', 'bob']] as const) {
        const { body, socket } = await get(agent, url(path), { 'x-dev': dev });
        sockets.add(socket);
        assert.equal(body, dev === 'alice' ? `program GET ${path} ` : world.target.http.body);
      }
    } finally {
      agent.destroy();
    }
    assert.equal(sockets.size, 1);

    assert.deepEqual(
      world.target.http.requests().filter((line) => /curl|fetch|urllib|ka-/.test(line)),
      ['GET /curl-other', 'GET /curl-probe', 'GET /fetch-other', 'GET /urllib-other', 'GET /ka-2', 'GET /ka-4'],
      'exactly the unmatched requests reached the target, in order',
    );
    await stopped(server);
  });

  test('node program, path filter: a matched WebSocket upgrade is the program\'s for the whole connection', async () => {
    const server = serve(['node', '-e', peerServer, 'program', String(port())], { mode: 'steal', http_filter: { path_filter: '^/ws/dev' } });
    await server.line(/^ready /);
    assert.equal(await firstWebSocketMessage(`ws://${world.target.address}:${port()}/ws/dev`), 'program /ws/dev');
    assert.equal(await curl('/ws/not-a-socket'), world.target.http.body);
    await stopped(server);
  });

  test('python program, path filter with any_of: curl, fetch and urllib', async () => {
    const server = serve(['python3', '-c', pythonServer, String(port())], { mode: 'steal', http_filter: { any_of: [{ path: '^/api/dev' }, { method: 'POST' }] } });
    await server.line(/^ready /);
    assert.equal(await curl('/api/dev/curl'), 'python GET /api/dev/curl ');
    assert.equal(await curl('/api/prod/curl'), world.target.http.body);
    assert.equal(await curl('/anything', '-d', 'posted'), 'python POST /anything posted');
    assert.equal(await (await fetch(url('/api/dev/fetch?x=1'))).text(), 'python GET /api/dev/fetch?x=1 ');
    assert.equal(await urllib('/api/dev/urllib', 'X-Any: thing'), 'python GET /api/dev/urllib ');
    assert.equal(await urllib('/urllib', 'X-Any: thing'), world.target.http.body);
    await stopped(server);
  });

  test('when the session ends, callers\' idle kept-alive connections are closed, not left open at their end', async () => {
    const server = serve(['node', '-e', peerServer, 'program', String(port())], { mode: 'steal', http_filter: { header_filter: '^x-dev: alice$' } });
    await server.line(/^ready /);
    const callers = await Promise.all(
      ['alice', 'bob'].map(async (dev) => {
        const socket = connect({ host: world.target.address, port: port() });
        socket.on('error', () => {});
        await once(socket, 'connect');
        socket.write(`GET /idle HTTP/1.1\r\nHost: pod\r\nX-Dev: ${dev}\r\n\r\n`);
        await once(socket, 'data');
        return socket;
      }),
    );
    const closed = Promise.all(callers.map((socket) => once(socket, 'close')));
    await stopped(server);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('a caller\'s connection was still open 3 s after the session ended')), 3000)));
    try {
      await Promise.race([closed, late]);
    } finally {
      clearTimeout(timer);
      for (const socket of callers) socket.destroy();
    }
  });

  test('the program closes its server: a kept-alive caller\'s next request reaches the target on a new connection', async () => {
    const server = serve(['node', '-e', peerServer, 'program', String(port())], { mode: 'steal', http_filter: { header_filter: '^x-dev: alice$' } });
    await server.line(/^ready /);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      assert.equal((await get(agent, url('/before'), { 'x-dev': 'alice' })).body, 'program GET /before ');
      assert.equal((await get(agent, url('/close'), { 'x-dev': 'alice' })).body, 'program GET /close ');
      await server.line(/^closed$/);
      await targetAnswersAgain(world);
      assert.equal((await get(agent, url('/after'), { 'x-dev': 'alice' })).body, world.target.http.body);
    } finally {
      agent.destroy();
    }
    assert.equal((await server.finished).status, 0);
  });

  test('an unfiltered steal keeps kube-probe requests with the target, and steal_probes takes them too', async () => {
    for (const stealProbes of [false, true]) {
      const server = serve(['node', '-e', peerServer, 'program', String(port())], { mode: 'steal', steal_probes: stealProbes });
      await server.line(/^ready /);
      assert.equal(await curl('/plain'), 'program GET /plain ');
      assert.equal(await curl('/healthz', '-A', 'kube-probe/1.31'), stealProbes ? 'program GET /healthz ' : world.target.http.body);
      await stopped(server);
      await targetAnswersAgain(world);
    }
    assert.equal(await curlTarget(world, '/after'), world.target.http.body);
  });

  test('gRPC: a node program under doppel answers alice\'s unary, server-streaming and bidi calls, errors included; the rest reach the target', async () => {
    const grpcPort = 50051;
    const target = await podGrpcPeer(world.target.pid, grpcPort);
    const server = serve(grpcServerCommand('program', grpcPort), { mode: 'steal', http_filter: { header_filter: '^x-dev: alice$' } });
    const client = echoClient(`${world.target.address}:${grpcPort}`);
    try {
      await server.line(/^ready /);
      const alice = { 'x-dev': 'alice' };
      const ok = (answeredBy: string) => ({ code: 0, details: 'OK', answeredBy });
      assert.deepEqual(await client.unary({ text: 'hi' }, alice), { text: 'program unary hi', status: ok('program') });
      assert.deepEqual(await client.unary({ text: 'hi' }), { text: 'target unary hi', status: ok('target') });
      assert.deepEqual(await client.serverStream({ text: 's', count: 3 }, alice), { texts: ['program 0 s', 'program 1 s', 'program 2 s'], status: ok('program') });
      assert.deepEqual(await client.bidi(['a', 'b'], alice), { texts: ['program echo a', 'program echo b'], status: ok('program') });
      assert.deepEqual(await client.bidi(['c'], { 'x-dev': 'bob' }), { texts: ['target echo c'], status: ok('target') });
      assert.deepEqual((await client.unary({ text: 'no', fail: true }, alice)).status, { code: 7, details: 'program refuses', answeredBy: 'program' });
    } finally {
      client.close();
      await target.stop();
    }
    await stopped(server);
  });

  test('two developers at once: disjoint header filters share the port; an unfiltered steal is refused with one line', async () => {
    const alice = serve(['node', '-e', peerServer, 'alice', String(port())], { mode: 'steal', http_filter: { header_filter: '^x-dev: alice$' } });
    await alice.line(/^ready /);
    const bob = serve(['python3', '-c', pythonServer, String(port())], { mode: 'steal', http_filter: { header_filter: '^x-dev: bob$' } });
    await bob.line(/^ready /);
    assert.equal(await curl('/mine', '-H', 'X-Dev: alice'), 'alice GET /mine ');
    assert.equal(await curl('/mine', '-H', 'X-Dev: bob'), 'python GET /mine ');
    assert.equal(await urllib('/theirs', 'X-Dev: bob'), 'python GET /theirs ');
    assert.equal(await curl('/nobody'), world.target.http.body);

    const greedy = serve(['node', '-e', peerServer, 'greedy', String(port())], { mode: 'steal' });
    const refused = await greedy.finished;
    running.delete(greedy);
    assert.equal(refused.status, 1, `the colliding session exits 1\nstderr: ${refused.stderr}`);
    const line = refused.stderr.split('\n').find((text) => text.includes('[E_INCOMING_CONFLICT]'));
    assert.match(line ?? '', new RegExp(`^doppel: port ${port()} is already stolen by \\S+@\\S+ \\(doppel pid \\d+: node -e .*\\); the program was stopped \\[E_INCOMING_CONFLICT\\]$`), refused.stderr);
    assert.match(refused.stderr, /hint: .*on_concurrent_steal/);
    assert.equal(await curl('/still', '-H', 'X-Dev: alice'), 'alice GET /still ', 'the sessions already there keep their requests');
    await stopped(alice);
    // The other session takes the port over, within moments.
    let answer = '';
    for (let tries = 0; tries < 50 && answer !== 'python GET /after-alice '; tries++) {
      if (tries > 0) await new Promise((resolve) => setTimeout(resolve, 100));
      answer = await curl('/after-alice', '-H', 'X-Dev: bob');
    }
    assert.equal(answer, 'python GET /after-alice ');
    await stopped(bob);
  });
});

function get(agent: Agent, target: string, headers: Record<string, string>): Promise<{ body: string; socket: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(target, { agent, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ body, socket: req.socket }));
    });
    req.on('error', reject);
    req.end();
  });
}
