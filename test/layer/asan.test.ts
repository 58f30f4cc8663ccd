// The layer under AddressSanitizer and UBSan: real programs through every hook family against a real agent; any report fails the run.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { execIn } from '../e2e/run-doppel.ts';
import { cServer, nodeServer } from './incoming-scenario.ts';
import { sanitizedEnv, sanitizerReport } from './sanitized.ts';
import { writeHooks } from './write-scenario.ts';
import { udpClient } from './udp-scenario.ts';

describe('the layer under AddressSanitizer', needsRoot('the sanitizer run'), () => {
  let world: World;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    env = sanitizedEnv();
    world = await createWorld();
  });
  after(async () => {
    await world?.destroy();
  });

  // Each program, what it prints, and what the layer's debug log must say it did (the path a name promises).
  const programs: [string, string[], (w: World) => string, RegExp[]?][] = [
    ['cat (open, fstat, read)', ['cat', '/srv/app/config/settings.json'], (w) => w.target.files['/srv/app/config/settings.json']!],
    ['ls (opendir, readdir, statx)', ['ls', '/srv/app/data'], (w) => `${w.target.dir.entries.join('\n')}\n`],
    ['getent (getaddrinfo, gethostbyname2)', ['sh', '-c', 'getent ahostsv4 redis.data | head -1 | cut -d" " -f1; getent hosts api | cut -d" " -f1'], (w) => `${w.services.redis.address}\n${w.services.http.address}\n`],
    ['python3 (connect handed over: pidfd_getfd, dup3; getpeername)', ['python3', '-c', 'import socket,sys; s=socket.create_connection(("api",8080)); s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); d=s.recv(4096); print(s.getpeername()[0]); sys.stdout.write(d.split(b"\\r\\n\\r\\n",1)[1].decode())'], (w) => `${w.services.http.address}\n${w.services.http.body}`],
    ['node (non-blocking connect handed over, epoll_ctl, getpeername)', ['node', '-e', 'const s = require("net").connect(6379, "redis.data", () => s.write("PING\\r\\n")); s.on("data", (d) => { process.stdout.write(s.remoteAddress + " " + d); s.end(); })'],
      (w) => `${w.services.redis.address} +PONG\r\n`],
    ['python3 (a socket in epoll before connect, made there with its registration)', ['python3', '-c', 'import select,socket; s=socket.socket(); s.setblocking(False); e=select.epoll(); e.register(s.fileno(), select.EPOLLOUT); s.connect_ex(("redis.data",6379)); print(len(e.poll(10)) > 0); s.setblocking(True); s.sendall(b"PING\\r\\n"); print(s.recv(100).decode().strip())'],
      () => 'True\n+PONG\n', [/connect: made the socket in process \d+'s network/]],
    ['node (a dgram socket bound to any port and in epoll, made there at its first datagram)', ['node', '-e', 'const s = require("dgram").createSocket("udp4"); s.on("message", (m) => { console.log(String(m)); s.close(); }); s.bind(0, () => setTimeout(() => s.send("dgram", 7007, "echo"), 50))'],
      (w) => `dgram@${w.services.udpEcho.seenFrom}\n`, [/udp: made the socket in process \d+'s network/]],
    ['python3 without CAP_SYS_PTRACE (the hand-over probe refused, relayed)', ['setpriv', '--bounding-set=-sys_ptrace', '--', 'python3', '-c', 'import socket; s=socket.create_connection(("redis.data",6379)); s.sendall(b"PING\\r\\n"); print(s.recv(100).decode().strip())'], () => '+PONG\n'],
    ['hostname and uname -n (gethostname, uname)', ['sh', '-c', 'hostname; uname -n'], (w) => `${w.target.hostname}\n${w.target.hostname}\n`],
    ['python3 (lookups asked of the agent itself, from a thread and a forked child; a UDP socket made in the target\'s network)', ['python3', '-c', [
      'import os, socket, threading, time',
      'agent = os.path.join(os.path.dirname(os.environ["DOPPEL_LAYER_SOCKET"]), "dns.sock")',
      'deadline = time.time() + 20',
      'while not os.path.exists(agent) and time.time() < deadline: time.sleep(0.02)',
      'look = lambda: print(socket.getaddrinfo("redis.data", 6379, socket.AF_INET)[0][4][0], flush=True)',
      'look(); t = threading.Thread(target=look); t.start(); t.join()',
      'pid = os.fork()',
      'if pid == 0: look(); os._exit(0)',
      'os.waitpid(pid, 0)',
      'u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10); u.connect(("echo", 7007)); u.send(b"asan"); print(u.recv(100).decode())',
    ].join('\n')], (w) => `${w.services.redis.address}\n`.repeat(3) + `asan@${w.services.udpEcho.seenFrom}\n`,
      [/(op 7: asked the agent[^]*){3}/, /udp: every datagram goes to the target: not asked/]],
    ['dig (DNS over UDP to the target\'s resolver)', ['dig', '+short', '+search', 'echo'], (w) => `${w.services.udpEcho.address}\n`],
    ['cd (chdir into a remote directory)', ['sh', '-c', 'cd /srv/app/data && ls'], (w) => `${w.target.dir.entries.join('\n')}\n`],
    ['ls -la (getxattr, lgetxattr of remote files)', ['sh', '-c', 'ls -la /srv/app/data >/dev/null && echo listed'], () => 'listed\n'],
    ['the fast path, remote stats kept briefly and the working directory (chdir, statx)', ['sh', '-c', 'cd /srv && stat -c %s app/config/settings.json app/config/settings.json && cd /usr/bin && stat -c %F env'],
      (w) => `${Buffer.byteLength(w.target.files['/srv/app/config/settings.json']!)}\n`.repeat(2) + 'regular file\n'],
    ['readlink and realpath', ['sh', '-c', 'readlink /srv/app/current; realpath /srv/app/current/feature-flags'], () => '/srv/app/config\n/srv/app/config/feature-flags\n'],
  ];
  test('a C server (bind, getsockname, listen, accept, accept4, getpeername, dup, fork, close)', async () => {
    assert.doesNotMatch(await cServer(world, env), sanitizerReport);
  });
  test('a node server (accept4, getpeername, syscall(SYS_close))', async () => {
    assert.doesNotMatch(await nodeServer(world, env), sanitizerReport);
  });
  test('write mode (open/creat/fopen/fclose, fsync, dup/fork, mkdir, rmdir, unlink, rename, chmod, write-back at exit)', async () => {
    assert.doesNotMatch(await writeHooks(world, env), sanitizerReport);
  });
  test('--trace: the calls the layer settles itself are timed and told (open, stat, connect in the target\'s network)', async () => {
    const path = '/srv/app/config/settings.json';
    const connect = 'python3 -c "import socket; socket.create_connection((\'api\', 8080)).close()"';
    const result = await execIn(world.target.pid, ['sh', '-c', `cat ${path} > /dev/null; stat -c %s ${path} > /dev/null; ${connect}`], { env: { ...env, DOPPEL_TRACE: '1' } });
    assert.doesNotMatch(result.stderr, sanitizerReport);
    assert.equal(result.status, 0, result.stderr);
    for (const call of [`open "${path}"`, `stat "${path}"`, `connect "${world.services.http.address}:${world.services.http.port}"`]) {
      assert.ok(result.stderr.includes(`call ${call} -> remote: layer `), `no trace of ${call} in:\n${result.stderr}`);
    }
  });
  test('a UDP client (connect, sendto, sendmsg, sendmmsg, recvfrom, recvmsg, recvmmsg, getpeername), made there and relayed', async () => {
    assert.doesNotMatch(await udpClient(world, env), sanitizerReport);
    assert.doesNotMatch(await udpClient(world, env, 'relayed'), sanitizerReport);
  });

  for (const [name, command, expected, logged = []] of programs) {
    test(name, async () => {
      const result = await execIn(world.target.pid, command, { env: logged.length > 0 ? { ...env, DOPPEL_LAYER_LOG: 'debug' } : env });
      assert.doesNotMatch(result.stderr, sanitizerReport);
      assert.equal(result.status, 0, result.stderr);
      assert.equal(result.stdout, expected(world));
      for (const line of logged) assert.match(result.stderr, line);
    });
  }
});
