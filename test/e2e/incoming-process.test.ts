// Incoming traffic on a process target, end to end: real servers (node, python) under the real layer take the target's
// port, stolen or mirrored, from real clients on the host (curl, node fetch, python urllib); nothing is left behind.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, afterEach, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { until } from '../support/until.ts';
import { agentProcesses, leftoversAfter } from './leftovers.ts';
import { execIn, ok } from './run-doppel.ts';
import { serveUnderDoppel, serveWithDoppel, type RunningServer } from './serve-under-doppel.ts';
import { curlTarget, targetAnswersAgain, targetUrl } from './target-http.ts';

const run = promisify(execFile);
const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));
const gate = needsRoot('incoming traffic on a process target');

/** A node server: answers with what getpeername/getsockname say; /close closes it; SIGUSR2 listens again; `stay` keeps it alive. */
const nodeServer = `
const http = require('http');
const [port, stay] = [Number(process.argv[1]), process.argv[2] === 'stay'];
let server;
const open = () => {
  server = http.createServer((req, res) => {
    const { remoteAddress, localAddress, localPort } = req.socket;
    console.log('got ' + req.method + ' ' + req.url + ' from ' + remoteAddress + ' to ' + localAddress + ':' + localPort);
    res.setHeader('connection', 'close');
    res.end('local ' + remoteAddress + ' ' + localAddress + ':' + localPort);
    if (req.url === '/close') server.close(() => console.log('closed'));
  }).listen(port, () => console.log('ready ' + server.address().port + ' pid ' + process.pid));
};
open();
process.on('SIGUSR2', open);
if (stay) { const keep = setInterval(() => {}, 1e6); process.on('SIGTERM', () => { clearInterval(keep); server.close(); }); }
`;

/** python's http.server: answers with client_address; /close shuts it down. */
const pythonServer = `
import http.server, sys, threading
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print(f"got GET {self.path} from {self.client_address[0]}", flush=True)
        body = f"local {self.client_address[0]}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if self.path == "/close":
            threading.Thread(target=self.server.shutdown).start()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("", int(sys.argv[1])), Handler)
print(f"ready {server.server_address[1]}", flush=True)
server.serve_forever()
server.server_close()
print("closed", flush=True)
`;

describe('incoming traffic on a process target', gate, () => {
  let world: World;
  const pid = () => world.target.pid;
  const port = () => world.target.http.port;
  const url = (path: string) => targetUrl(world, path);

  const curl = (path: string) => curlTarget(world, path);
  const fetchText = async (path: string) => (await fetch(url(path), { signal: AbortSignal.timeout(5000) })).text();
  const urllib = async (path: string) =>
    (await run('python3', ['-c', 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())', url(path)])).stdout;

  /** Rules of ours left in the target's network namespace, in either iptables backend. */
  function chainsLeft(): string[] {
    return ['iptables-legacy-save', 'iptables-nft-save'].flatMap((save) => {
      try {
        return execFileSync('nsenter', [`--net=/proc/${pid()}/ns/net`, save], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
          .split('\n')
          .filter((line) => line.includes('DOPPEL'));
      } catch {
        return [];
      }
    });
  }

  async function finishedOk(server: RunningServer): Promise<void> {
    const result = await server.finished;
    assert.equal(result.status, 0, `doppel exited ${result.status}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  }

  /** Takes `port` on the developer machine, as another program would. */
  async function occupy(taken: number): Promise<Server> {
    const holder = createServer((socket) => socket.end('the other program on the developer machine\n'));
    await new Promise<void>((resolve, reject) => {
      holder.once('error', reject);
      holder.listen(taken, '0.0.0.0', resolve);
    });
    return holder;
  }

  before(async () => {
    world = await createWorld();
  });
  after(async () => {
    await world?.destroy();
  });
  afterEach(async () => {
    if (!world) return;
    const left = await leftoversAfter(pid());
    assert.deepEqual(left, { agents: [], dirs: [] }, 'a session left an agent process or a socket directory behind');
    assert.deepEqual(chainsLeft(), [], 'a session left iptables rules in the target');
    assert.equal(await curl('/after'), world.target.http.body);
  });

  test('steal: a node server answers curl, node fetch and python urllib, and sees the real caller', async () => {
    const server = serveUnderDoppel(pid(), ['node', '-e', nodeServer, String(port())], { flags: ['--steal'] });
    assert.equal((await server.line(/^ready (\d+)/))[1], String(port()));
    const expected = `local ::ffff:${world.target.hostAddress} ::ffff:${world.target.address}:${port()}`;
    assert.equal(await curl('/curl'), expected);
    assert.equal(await fetchText('/fetch'), expected);
    assert.equal(await urllib('/urllib'), expected);
    for (const path of ['/curl', '/fetch', '/urllib']) await server.line(new RegExp(`^got GET ${path} from ::ffff:${world.target.hostAddress.replaceAll('.', '\\.')} `));
    assert.deepEqual(world.target.http.requests().filter((line) => /curl|fetch|urllib/.test(line)), [], 'a stolen request reached the target');
    await curl('/close');
    await finishedOk(server);
    await targetAnswersAgain(world);
  });

  test('steal: python http.server sees the real caller in client_address, on a port taken locally', async () => {
    const holder = await occupy(port());
    try {
      const server = serveUnderDoppel(pid(), ['python3', '-c', pythonServer, String(port())], { flags: ['--steal'] });
      // The program asked for the port it holds on the target, and getsockname says it has it.
      assert.equal((await server.line(/^ready (\d+)/))[1], String(port()));
      assert.equal(await curl('/curl'), `local ${world.target.hostAddress}`);
      assert.equal(await urllib('/urllib'), `local ${world.target.hostAddress}`);
      await curl('/close');
      await server.line(/^closed$/);
      await finishedOk(server);
    } finally {
      holder.close();
    }
    await targetAnswersAgain(world);
  });

  test('mirror (the default): callers get the target\'s answer while the local program gets a copy', async () => {
    const server = serveUnderDoppel(pid(), ['node', '-e', nodeServer, String(port())]);
    await server.line(/^ready /);
    assert.equal(await curl('/mirror-curl'), world.target.http.body);
    assert.equal(await urllib('/mirror-urllib'), world.target.http.body);
    const caller = `::ffff:${world.target.hostAddress}`.replaceAll('.', '\\.');
    await server.line(new RegExp(`^got GET /mirror-curl from ${caller} `));
    await server.line(new RegExp(`^got GET /mirror-urllib from ${caller} `));
    assert.deepEqual(world.target.http.requests().filter((line) => line.includes('mirror')), ['GET /mirror-curl', 'GET /mirror-urllib']);
    assert.equal(await curl('/close'), world.target.http.body);
    await finishedOk(server);
  });

  test('a port taken on the developer machine: node binds another, reports the one it asked for, and gets the traffic', async () => {
    const holder = await occupy(port());
    let knocked = 0;
    holder.on('connection', () => knocked++);
    try {
      const server = serveUnderDoppel(pid(), ['node', '-e', nodeServer, String(port())], { flags: ['--steal'] });
      assert.equal((await server.line(/^ready (\d+)/))[1], String(port()));
      assert.match(await curl('/taken'), /^local /);
      await curl('/close');
      await finishedOk(server);
      assert.equal(knocked, 0, 'the program that held the port locally was reached');
    } finally {
      holder.close();
    }
  });

  test('a second server for a port already taken fails with EADDRINUSE, as on the target', async () => {
    const script = `
      const net = require('net');
      const port = Number(process.argv[1]);
      const first = net.createServer().listen(port, () => {
        const second = net.createServer().on('error', (error) => { console.log('second ' + error.code); first.close(); });
        second.listen(port, () => { console.log('second listening ' + second.address().port); second.close(); first.close(); });
      });
    `;
    const server = serveUnderDoppel(pid(), ['node', '-e', script, String(port())], { flags: ['--steal'] });
    assert.equal((await server.line(/^second .*/))[0], 'second EADDRINUSE');
    await finishedOk(server);
  });

  test('a server that exits without closing its socket gives the port back while doppel goes on', async () => {
    // The parent stays; its child, the server, is killed outright.
    const parent = `
      const child = require('child_process').spawn(process.execPath, ['-e', process.argv[1], process.argv[2]], { stdio: 'inherit' });
      child.on('exit', () => console.log('child gone'));
      const keep = setInterval(() => {}, 1e6);
      process.on('SIGTERM', () => clearInterval(keep));
    `;
    const server = serveUnderDoppel(pid(), ['node', '-e', parent, nodeServer, String(port())], { flags: ['--steal'] });
    const serverPid = Number((await server.line(/^ready \d+ pid (\d+)/))[1]);
    assert.match(await curl('/before-kill'), /^local /);
    process.kill(serverPid, 'SIGKILL');
    await server.line(/^child gone$/);
    await targetAnswersAgain(world);
    server.signal('SIGTERM');
    await finishedOk(server);
  });

  test('a server that listens before its agent has answered takes the port once, when it has (fault injection: an nsenter slow by 1 s)', async () => {
    const env = { ...process.env, PATH: `${fixtures}/slow-nsenter:${process.env.PATH}`, DOPPEL_TEST_NSENTER_DELAY: '1' };
    const server = serveUnderDoppel(pid(), ['node', '-e', nodeServer, String(port())], { flags: ['--steal'], env });
    await server.line(/^ready /);
    assert.match(await curl('/early'), /^local /);
    await curl('/close');
    const result = await server.finished;
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stderr, '', 'a warning: the port was taken twice');
  });

  test('a session killed outright, its agent with it, leaves its rule only until the next session on the target', async () => {
    const server = serveWithDoppel(['exec', '--target', `process/${pid()}`, '-q', '--steal', '--', 'node', '-e', nodeServer, String(port()), 'stay']);
    const programPid = Number((await server.line(/^ready \d+ pid (\d+)/))[1]);
    assert.match(await curl('/before-kill'), /^local /);
    // All stopped first, so that none sees another go and cleans up: as if the machine had killed them at once.
    const victims = [server.pid, programPid, ...agentProcesses(pid()).map((line) => Number(line.split(' ')[0]))];
    assert.equal(victims.length, 3, 'the CLI, the program and the session\'s agent');
    for (const victim of victims) process.kill(victim, 'SIGSTOP');
    for (const victim of victims) process.kill(victim, 'SIGKILL');
    await server.finished;
    assert.notDeepEqual(chainsLeft(), [], 'nothing was left to remove the rule');
    await assert.rejects(curl('/while-left'), 'the port goes to a router that is gone');
    // The next session on the target, whatever it does, removes what the killed one left.
    ok(await execIn(pid(), ['true']));
    await until('the next session to remove the rule', () => (chainsLeft().length === 0 ? true : undefined), 10_000);
    await targetAnswersAgain(world);
  });

  test('closing the server gives the port back; listening again takes it again', async () => {
    const server = serveUnderDoppel(pid(), ['node', '-e', nodeServer, String(port()), 'stay'], { flags: ['--steal'] });
    await server.line(/^ready /);
    assert.match(await curl('/close'), /^local /);
    await server.line(/^closed$/);
    await targetAnswersAgain(world);
    server.signal('SIGUSR2');
    await server.line(/^ready /);
    assert.match(await curl('/back'), /^local /);
    server.signal('SIGTERM');
    await finishedOk(server);
  });
});
