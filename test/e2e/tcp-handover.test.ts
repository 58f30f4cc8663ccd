// Outgoing TCP on the process platform with no relay: the program's layer makes its socket in the target's network
// namespace and connects it itself or, in a program that may not enter the namespace, takes the socket the agent
// connected from there (pidfd_getfd). Each test looks at the target's network namespace with ss to see who holds the
// connection: the program alone, or (relayed) the agent; and at the layer's log to see which way it went.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { until } from '../support/until.ts';
import { agentProcesses } from './leftovers.ts';
import { execIn, ok, startDoppel } from './run-doppel.ts';
import { suiteWorld } from './suite-world.ts';

const gate = needsRoot('outgoing TCP handed over to the program');

/** The holders (pids) of each established TCP connection in the target's network namespace to address:port. */
function socketsTo(targetPid: number, address: string, port: number): number[][] {
  const out = execFileSync('nsenter', ['-t', String(targetPid), '-n', 'ss', '-Htnp', 'state', 'established', 'dst', `${address}:${port}`], { encoding: 'utf8' });
  return out.split('\n').filter((line) => line.trim() !== '').map((line) => [...line.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])));
}

/** Waits for `programPid` alone to hold its connection to address:port in the target's network (the agent's copy released). */
const heldAlone = (targetPid: number, address: string, port: number, programPid: number) =>
  until('the program alone holding its connection', () => {
    const found = socketsTo(targetPid, address, port).filter((holders) => holders.includes(programPid));
    return found.length === 1 && found[0]!.length === 1 ? found : undefined;
  });

/** The pids of the agents serving `targetPid`. */
const agentPids = (targetPid: number) => agentProcesses(targetPid).map((line) => Number(line.split(' ')[0]));

/** TCP sockets of the target's network namespace that a process of `pids` holds. */
function heldBy(targetPid: number, pids: number[]): string[] {
  const out = execFileSync('nsenter', ['-t', String(targetPid), '-n', 'ss', '-Htanp'], { encoding: 'utf8' });
  return out.split('\n').filter((line) => pids.some((pid) => line.includes(`pid=${pid},`)));
}

/** A Python client that connects, sends `send`, reads the first line, prints what it saw as JSON and waits for stdin to end. */
const pythonHolder = (address: string, port: number, send: string) => `
import json, os, socket, sys
s = socket.create_connection((${JSON.stringify(address)}, ${port}))
s.sendall(${JSON.stringify(send)}.encode())
got = b""
while not got.endswith(b"\\n"):
    got += s.recv(4096)
print(json.dumps({"pid": os.getpid(), "local": s.getsockname()[:2], "peer": s.getpeername()[:2], "reply": got.decode()}), flush=True)
sys.stdin.read()
s.sendall(${JSON.stringify(send)}.encode())
print(s.recv(4096).decode(), end="", flush=True)`;

/** The same with Node's net (a non-blocking connect: the layer answers EINPROGRESS and libuv polls for its end). */
const nodeHolder = (address: string, port: number, send: string) => `
const socket = require('net').connect(${port}, ${JSON.stringify(address)}, () => socket.write(${JSON.stringify(send)}));
let got = '';
socket.setEncoding('utf8');
socket.on('data', function first(chunk) {
  got += chunk;
  if (!got.endsWith('\\n')) return;
  socket.off('data', first);
  console.log(JSON.stringify({ pid: process.pid, local: [socket.localAddress, socket.localPort], peer: [socket.remoteAddress, socket.remotePort], reply: got }));
  process.stdin.resume().on('end', () => {
    socket.write(${JSON.stringify(send)});
    socket.once('data', (more) => { process.stdout.write(more); socket.end(); });
  });
});`;

interface Seen {
  pid: number;
  local: [string, number];
  peer: [string, number];
  reply: string;
}

/** Root without CAP_SYS_ADMIN: the kernel refuses it setns (EPERM), a real refusal; it may still take the agent's sockets. */
const withoutSysAdmin = ['setpriv', '--bounding-set=-sys_admin', '--'];

/** Which way the layer's debug log says a program's connection went. */
function way(log: string): 'made' | 'taken' | 'relayed' {
  if (/connect: made the socket in process \d+'s network/.test(log)) return 'made';
  return /connect: took the agent's socket/.test(log) ? 'taken' : 'relayed';
}

/** Starts `command` under doppel (the layer logging) with its stdin open; a test that fails before ending it kills it. */
function started(t: TestContext, targetPid: number, command: string[]) {
  const run = startDoppel(['exec', '--target', `process/${targetPid}`, '-q', '--', ...command], { openStdin: true, env: { ...process.env, DOPPEL_LAYER_LOG: 'debug' } });
  t.after(() => {
    if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGTERM');
  });
  return run;
}

/**
 * Runs a holder under doppel: what it printed first, which way its connection went (once it has printed), and `finish`
 * (ends its stdin) for the rest of its output.
 */
async function hold(t: TestContext, targetPid: number, command: string[]): Promise<{ seen: Seen; way: () => ReturnType<typeof way>; finish: () => Promise<string> }> {
  const { child, finished } = started(t, targetPid, command);
  let out = '';
  let log = '';
  child.stdout!.on('data', (chunk: Buffer) => (out += chunk));
  child.stderr!.on('data', (chunk: Buffer) => (log += chunk));
  const line = await Promise.race([
    until('the program\'s first line', () => (out.includes('\n') ? out.slice(0, out.indexOf('\n')) : undefined), 20_000),
    finished.then((result) => {
      throw new Error(`the program ended first: ${result.status}\n${result.stderr}`);
    }),
  ]);
  return {
    seen: JSON.parse(line) as Seen,
    way: () => way(log),
    finish: async () => {
      child.stdin!.end();
      return ok(await finished).slice(line.length + 1);
    },
  };
}

describe('outgoing TCP in the target\'s network with no relay (process platform)', gate, () => {
  const world = suiteWorld();
  const pid = () => world().target.pid;
  /** A server in the services' namespace that speaks first (as SMTP and MySQL do), then echoes one line and closes. */
  const greeting = `220 greeting ${randomBytes(4).toString('hex')} ready`;
  const greeter = { address: '', port: 2525 };
  let server: ChildProcess | undefined;

  before(() => {
    greeter.address = world().services.http.address;
    const script = `require('net').createServer((s) => { s.write(process.env.GREETING + '\\r\\n'); s.on('data', (d) => s.end('echo ' + d)); }).listen(${greeter.port}, '${greeter.address}')`;
    server = spawn('ip', ['netns', 'exec', `${world().name}-svc`, process.execPath, '-e', script], { stdio: 'ignore', env: { ...process.env, GREETING: greeting } });
    return until('the greeting server', () => (execFileSync('ip', ['netns', 'exec', `${world().name}-svc`, 'ss', '-Hltn'], { encoding: 'utf8' }).includes(`${greeter.address}:${greeter.port}`) ? true : undefined));
  });
  after(() => {
    server?.kill('SIGKILL');
  });

  for (const [how, prefix, expected] of [['made in the target\'s network by its layer', [], 'made'], ['the agent\'s socket, taken by a program without CAP_SYS_ADMIN', withoutSysAdmin, 'taken']] as const) {
    test(`redis-cli's connection is ${how}, held by redis-cli alone in the target's network`, async (t) => {
      const { redis } = world().services;
      const { child, finished } = started(t, pid(), [...prefix, 'redis-cli', '-h', redis.shortName]);
      let out = '';
      child.stdout!.on('data', (chunk: Buffer) => (out += chunk));
      child.stdin!.write('PING\n');
      await until('the first PONG', () => (out.includes('PONG') ? true : undefined), 20_000);
      const agents = agentPids(pid());
      assert.equal(agents.length, 1);
      // A socket handed over: the agent lets its copy go once the layer says it took it. Then redis-cli alone holds it.
      const [holders] = await until('redis-cli alone holding its connection', () => {
        const sockets = socketsTo(pid(), redis.address, redis.port);
        return sockets.length === 1 && sockets[0]!.length === 1 && !sockets[0]!.includes(agents[0]!) ? sockets : undefined;
      });
      assert.match(execFileSync('ps', ['-o', 'comm=', '-p', String(holders![0])], { encoding: 'utf8' }), /redis-cli/);
      child.stdin!.end(`GET ${redis.key}\n`);
      const result = await finished;
      assert.equal(ok(result), `PONG\n${redis.value}\n`);
      assert.equal(way(result.stderr), expected, result.stderr);
    });
  }

  test('with no outgoing filter a connection is made in the target\'s network without asking the proxy; a filter is asked', async () => {
    const { redis } = world().services;
    const dir = mkdtempSync(join(tmpdir(), 'doppel-filter-'));
    try {
      const file = join(dir, 'filter.json');
      writeFileSync(file, JSON.stringify({ feature: { network: { outgoing: { filter: { remote: [`tcp://${redis.address}:${redis.port}`] } } } } }));
      for (const [flags, asked] of [[[], false], [['-f', file], true]] as const) {
        const result = await execIn(pid(), ['redis-cli', '-h', redis.address, 'PING'], { flags: [...flags], env: { ...process.env, DOPPEL_LAYER_LOG: 'debug' } });
        assert.equal(ok(result), 'PONG\n');
        assert.equal(way(result.stderr), 'made', result.stderr);
        assert.equal(result.stderr.includes('connect: every connection goes to the target: not asked'), !asked, result.stderr);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('getpeername and getsockname are the kernel\'s: the service, and the target\'s address on its link (python3 blocking, node non-blocking)', async (t) => {
    const { redis, udpEcho } = world().services;
    for (const script of [['python3', '-c', pythonHolder(redis.address, redis.port, 'PING\r\n')], ['node', '-e', nodeHolder(redis.address, redis.port, 'PING\r\n')]]) {
      const { seen, way: went, finish } = await hold(t, pid(), script);
      assert.equal(seen.reply, '+PONG\r\n');
      assert.deepEqual(seen.peer, [redis.address, redis.port]);
      // The pod's own address toward the services (where the UDP echo sees the pod's datagrams come from).
      assert.equal(seen.local[0], udpEcho.seenFrom);
      assert.deepEqual(await heldAlone(pid(), redis.address, redis.port, seen.pid), [[seen.pid]]);
      assert.equal(went(), 'made');
      assert.equal(await finish(), '+PONG\r\n');
    }
  });

  test('the socket made or taken keeps what the program set before connecting: options, blocking mode, close-on-exec', async (t) => {
    const { redis } = world().services;
    const script = `import fcntl, json, os, socket, struct, sys
s = socket.socket()
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 7)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 100000)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 3, 0))
s.connect(("${redis.address}", ${redis.port}))
seen = {
    "nodelay": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
    "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    "keepidle": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    "keepintvl": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
    "rcvbuf": s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
    "rcvtimeo": list(struct.unpack("ll", s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))),
    "nonblocking": bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK),
    "cloexec": bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
}
s.sendall(b"PING\\r\\n")
print(json.dumps({"pid": os.getpid(), "local": s.getsockname(), "peer": s.getpeername(), "reply": json.dumps(seen)}), flush=True)
sys.stdin.read()`;
    for (const [prefix, expected] of [[[], 'made'], [withoutSysAdmin, 'taken']] as const) {
      const { seen, way: went, finish } = await hold(t, pid(), [...prefix, 'python3', '-c', script]);
      assert.deepEqual(await heldAlone(pid(), redis.address, redis.port, seen.pid), [[seen.pid]]);
      assert.deepEqual(JSON.parse(seen.reply), { nodelay: 1, keepalive: 1, keepidle: 77, keepintvl: 7, rcvbuf: 200000, rcvtimeo: [3, 0], nonblocking: false, cloexec: true });
      assert.equal(went(), expected);
      assert.equal(await finish(), '');
    }
  });

  test('a server that speaks first: its greeting reaches the program intact, none of it read by the agent', async () => {
    const program = (address: string, port: number) => `
import json, socket, sys
s = socket.create_connection((${JSON.stringify(address)}, ${port}))
got = b""
while not got.endswith(b"\\r\\n"):
    got += s.recv(4096)
s.sendall(b"hello\\n")
rest = b""
while True:
    c = s.recv(4096)
    if not c: break
    rest += c
sys.stdout.write(json.dumps([got.decode(), rest.decode()]))`;
    assert.deepEqual(JSON.parse(ok(await execIn(pid(), ['python3', '-c', program(greeter.address, greeter.port)]))), [`${greeting}\r\n`, 'echo hello\n']);
    const node = `const s = require('net').connect(${greeter.port}, '${greeter.address}'); let got = ''; s.setEncoding('utf8');
      s.on('data', (d) => { if (!got.includes('\\r\\n')) { got += d; if (got.includes('\\r\\n')) s.write('hi\\n'); } else got += d; });
      s.on('end', () => process.stdout.write(JSON.stringify(got)));`;
    assert.equal(JSON.parse(ok(await execIn(pid(), ['node', '-e', node]))), `${greeting}\r\necho hi\n`);
  });

  test('a refused connection is ECONNREFUSED, blocking (python3) and non-blocking (node)', async () => {
    const { redis } = world().services;
    const python = `import socket, sys
try:
    socket.create_connection(("${redis.address}", 9))
except ConnectionRefusedError:
    sys.stdout.write("refused")`;
    assert.equal(ok(await execIn(pid(), ['python3', '-c', python])), 'refused');
    assert.equal(ok(await execIn(pid(), ['node', '-e', `require('net').connect(9, '${redis.address}').on('error', (e) => process.stdout.write(e.code))`])), 'ECONNREFUSED');
  });

  test('a program with neither CAP_SYS_ADMIN nor CAP_SYS_PTRACE can neither make nor take a socket: its connections are relayed and work', async (t) => {
    const { redis } = world().services;
    const accepted = () => Number(/total_connections_received:(\d+)/.exec(execFileSync('ip', ['netns', 'exec', `${world().name}-svc`, 'redis-cli', '-h', redis.address, 'INFO', 'stats'], { encoding: 'utf8' }))![1]);
    const acceptedBefore = accepted();
    // Root, but with two capabilities fewer than the agent: the kernel refuses setns and pidfd_getfd (EPERM), real refusals.
    const { seen, way: went, finish } = await hold(t, pid(), ['setpriv', '--bounding-set=-sys_ptrace,-sys_admin', '--', 'python3', '-c', pythonHolder(redis.address, redis.port, 'PING\r\n')]);
    assert.equal(seen.reply, '+PONG\r\n');
    assert.equal(went(), 'relayed');
    assert.deepEqual(seen.peer, [redis.address, redis.port]);
    const agents = agentPids(pid());
    const sockets = socketsTo(pid(), redis.address, redis.port);
    assert.equal(sockets.length, 1);
    assert.deepEqual(sockets[0], agents, 'a relayed connection is the agent\'s in the target\'s network');
    assert.equal(await finish(), '+PONG\r\n');
    // The layer knew before asking (its probe at the first connect): redis saw the program's one connection and ours.
    assert.equal(accepted() - acceptedBefore, 2);
  });

  test('a socket added to two epoll sets before it connects (as nginx does) is made in the target\'s network, and both still see it', async (t) => {
    const { redis } = world().services;
    const script = `import json, os, select, socket, sys
s = socket.socket()
s.setblocking(False)
ep = select.epoll()
ep.register(s.fileno(), select.EPOLLOUT | select.EPOLLIN)
other = select.epoll()
other.register(s.fileno(), select.EPOLLOUT)
try:
    s.connect(("${redis.address}", ${redis.port}))
except BlockingIOError:
    pass
if not ep.poll(10): sys.exit("no epoll event for the connect")
if not other.poll(10): sys.exit("no event for the connect in the second epoll set")
s.send(b"PING\\r\\n")
got = b""
while not got.endswith(b"\\n"):
    if not ep.poll(10): sys.exit("no epoll event for the answer")
    try:
        got += s.recv(100)
    except BlockingIOError:
        pass
print(json.dumps({"pid": os.getpid(), "local": s.getsockname(), "peer": s.getpeername(), "reply": got.decode()}), flush=True)
sys.stdin.read()`;
    const { seen, way, finish } = await hold(t, pid(), ['python3', '-c', script]);
    assert.equal(seen.reply, '+PONG\r\n');
    assert.equal(way(), 'made');
    // The registrations moved with the socket: the events above came from the one held by python alone.
    assert.deepEqual(socketsTo(pid(), redis.address, redis.port), [[seen.pid]]);
    assert.equal(await finish(), '');
  });

  test('the agent keeps no socket it handed over once its programs have exited', async (t) => {
    const { redis } = world().services;
    const node = `const s = require('net').connect(${redis.port}, '${redis.address}', () => s.end('PING\\r\\n')); s.pipe(process.stdout);`;
    const script = `for i in 1 2 3; do redis-cli -h ${redis.address} PING; done; node -e "${node}"; echo; echo done; read line`;
    const { child, finished } = started(t, pid(), [...withoutSysAdmin, 'sh', '-c', script]);
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk));
    await until('the programs to end', () => (out.includes('done') ? true : undefined), 20_000);
    const agents = agentPids(pid());
    assert.equal(agents.length, 1);
    assert.deepEqual(await until('the agent to hold no TCP socket', () => (heldBy(pid(), agents).length === 0 ? [] : undefined), 5000), []);
    child.stdin!.end('\n');
    const result = await finished;
    assert.equal(ok(result), 'PONG\nPONG\nPONG\n+PONG\r\n\ndone\n');
    assert.equal(result.stderr.match(/connect: took the agent's socket/g)?.length, 4, result.stderr);
  });
});
