// UDP and DNS over UDP through the target, end to end: dig, node (c-ares, dgram), python3 (asyncio, sockets, threads,
// subprocess) against the world's DNS server and UDP echo, which only the pod reaches; and the switches that keep UDP local.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSocket, type Socket } from 'node:dgram';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { until } from '../support/until.ts';
import { execIn, ok, startDoppel } from './run-doppel.ts';
import { suiteWorld } from './suite-world.ts';

/** An echo on the developer machine's loopback (it answers `MESSAGE@here`), which a socket in the target's network cannot reach. */
async function loopbackEcho(): Promise<{ local: Socket; localPort: number }> {
  const local: Socket = createSocket('udp4');
  local.on('message', (message, from) => local.send(`${message}@here`, from.port, from.address));
  await new Promise<void>((resolve) => local.bind(0, '127.0.0.1', resolve));
  return { local, localPort: (local.address() as AddressInfo).port };
}

describe('UDP and DNS over UDP through the target', needsRoot('doppel exec against a process target'), () => {
  const world = suiteWorld();
  let dir: string;
  const pid = () => world().target.pid;
  const config = (name: string, value: unknown) => {
    const path = join(dir, `${name}.json`);
    writeFileSync(path, JSON.stringify(value));
    return ['-f', path];
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'doppel-udp-e2e-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('dig asks the target\'s resolver (read from its resolv.conf) over UDP and gets a cluster-only name', async () => {
    const { udpEcho, dnsServer } = world().services;
    const out = ok(await execIn(pid(), ['dig', udpEcho.name]));
    assert.match(out, new RegExp(`^${udpEcho.name.replaceAll('.', '\\.')}\\.\\s+\\d+\\s+IN\\s+A\\s+${udpEcho.address.replaceAll('.', '\\.')}$`, 'm'));
    assert.match(out, new RegExp(`^;; SERVER: ${dnsServer.replaceAll('.', '\\.')}#53\\(${dnsServer.replaceAll('.', '\\.')}\\) \\(UDP\\)$`, 'm'));
  });

  test('node: dns.resolve4 and dns.promises.Resolver (c-ares) get the target\'s answers; dgram reaches the echo', async () => {
    const { udpEcho, redis } = world().services;
    const script = `
      const dns = require('dns');
      const dgram = require('dgram');
      (async () => {
        const resolve4 = await new Promise((resolve, reject) => dns.resolve4(${JSON.stringify(udpEcho.name)}, (error, found) => (error ? reject(error) : resolve(found))));
        const resolver = new dns.promises.Resolver();
        const viaResolver = await resolver.resolve4(${JSON.stringify(redis.name)});
        const socket = dgram.createSocket('udp4');
        const reply = await new Promise((resolve) => {
          socket.once('message', (message, from) => resolve([message.toString(), from.address, from.port]));
          socket.send('node', ${udpEcho.port}, ${JSON.stringify(udpEcho.address)});
        });
        socket.close();
        process.stdout.write(JSON.stringify({ resolve4, viaResolver, servers: resolver.getServers(), reply }));
      })();
    `;
    assert.deepEqual(JSON.parse(ok(await execIn(pid(), ['node', '-e', script]))), {
      resolve4: [udpEcho.address],
      viaResolver: [redis.address],
      servers: [world().services.dnsServer],
      reply: [`node@${udpEcho.seenFrom}`, udpEcho.address, udpEcho.port],
    });
  });

  test('python3: asyncio datagram endpoints, connected and not, and a plain socket\'s sendto/recvfrom', async () => {
    const { udpEcho } = world().services;
    const script = `
import asyncio, socket
async def exchange(send, **where):
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    class Echo(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            got.set_result((data.decode(), addr[0], addr[1]))
    transport, _ = await loop.create_datagram_endpoint(Echo, **where)
    send(transport)
    result = await asyncio.wait_for(got, 10)
    peer = transport.get_extra_info("peername")
    transport.close()
    return result, peer and peer[0]
async def main():
    print(await exchange(lambda t: t.sendto(b"connected"), remote_addr=("${udpEcho.shortName}", ${udpEcho.port})))
    print(await exchange(lambda t: t.sendto(b"unconnected", ("${udpEcho.address}", ${udpEcho.port})), family=socket.AF_INET, local_addr=("0.0.0.0", 0)))
asyncio.run(main())
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b"plain", ("${udpEcho.name}", ${udpEcho.port}))
print(s.recvfrom(100))
`;
    const echo = `'${udpEcho.address}', ${udpEcho.port}`;
    assert.equal(ok(await execIn(pid(), ['python3', '-c', script])), [
      `(('connected@${udpEcho.seenFrom}', ${echo}), '${udpEcho.address}')`,
      `(('unconnected@${udpEcho.seenFrom}', ${echo}), None)`,
      `(b'plain@${udpEcho.seenFrom}', (${echo}))`,
      '',
    ].join('\n'));
  });

  test('python3: threads resolving and exchanging datagrams at once, and subprocesses resolving (dig, python)', async () => {
    const { udpEcho, redis } = world().services;
    const script = `
import socket, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
def work(i):
    address = socket.gethostbyname("${udpEcho.shortName}")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.sendto(b"thread %d" % i, (address, ${udpEcho.port}))
    data, source = s.recvfrom(100)
    return data.decode(), source[0]
with ThreadPoolExecutor(8) as pool:
    results = list(pool.map(work, range(16)))
print(all(r == ("thread %d@${udpEcho.seenFrom}" % i, "${udpEcho.address}") for i, r in enumerate(results)), len(results))
print(subprocess.run(["dig", "+short", "${udpEcho.name}"], capture_output=True, text=True, check=True).stdout.strip())
print(subprocess.run([sys.executable, "-c", "import socket; print(socket.gethostbyname('${redis.shortName}'))"], capture_output=True, text=True, check=True).stdout.strip())
`;
    assert.equal(ok(await execIn(pid(), ['python3', '-c', script])), `True 16\n${udpEcho.address}\n${redis.address}\n`);
  });

  test('a socket connected to a remote destination is made in the target\'s network: the kernel\'s addresses, no relay, and loopback still here', async () => {
    const { udpEcho } = world().services;
    const { local, localPort } = await loopbackEcho();
    const script = `
import errno, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.connect(("${udpEcho.address}", ${udpEcho.port}))
s.send(b"connected")
print(s.recv(100).decode(), s.getsockname()[0], s.getpeername())
s.sendto(b"addressed", ("${udpEcho.address}", ${udpEcho.port}))
print(s.recv(100).decode())
try:
    s.sendto(b"x", ("127.0.0.1", ${localPort}))
except OSError as e:
    print(errno.errorcode[e.errno])
s.connect(("127.0.0.1", ${localPort}))
s.send(b"reconnected")
print(s.recv(100).decode(), s.getsockname()[0])
s.connect(("${udpEcho.address}", ${udpEcho.port}))
s.send(b"again")
print(s.recv(100).decode())
`;
    try {
      const result = await execIn(pid(), ['python3', '-c', script], { env: { ...process.env, DOPPEL_LAYER_LOG: 'debug' } });
      assert.equal(ok(result), [
        // The pod's own address, as the kernel there gave it (a relayed socket reports none of the pod's).
        `connected@${udpEcho.seenFrom} ${udpEcho.seenFrom} ('${udpEcho.address}', ${udpEcho.port})`,
        // Addressed explicitly, it still goes from there, not through a relay.
        `addressed@${udpEcho.seenFrom}`,
        'ENETUNREACH',
        'reconnected@here 127.0.0.1',
        `again@${udpEcho.seenFrom}`,
        '',
      ].join('\n'));
      // Made there once, unasked; back here for the loopback, the socket has a port of its own and is relayed from then on.
      assert.equal(result.stderr.split('\n').filter((line) => line.endsWith('udp: every datagram goes to the target: not asked')).length, 1, result.stderr.slice(-3000));
    } finally {
      local.close();
    }
  });

  test('node\'s dgram socket, bound to any port and watched by epoll, goes to the target\'s network at its first datagram there: same port, no relay', async (t) => {
    const { udpEcho } = world().services;
    const script = `
      const dgram = require('dgram');
      const s = dgram.createSocket('udp4');
      const ask = (text) => new Promise((resolve) => {
        s.once('message', (message, from) => resolve([message.toString(), from.address, from.port]));
        s.send(text, ${udpEcho.port}, ${JSON.stringify(udpEcho.address)});
      });
      // A moment after binding, libuv has added the socket to its epoll set (through io_uring, not epoll_ctl).
      s.bind(0, () => setTimeout(async () => {
        const bound = s.address().port;
        const replies = [await ask('one'), await ask('two')];
        console.log(JSON.stringify({ pid: process.pid, bound, port: s.address().port, replies }));
        process.stdin.resume().on('end', () => s.close());
      }, 50));
    `;
    const run = startDoppel(['exec', '--target', `process/${pid()}`, '-q', '--', 'node', '-e', script], { openStdin: true, env: { ...process.env, DOPPEL_LAYER_LOG: 'debug' } });
    t.after(() => run.child.kill());
    let out = '';
    run.child.stdout!.on('data', (chunk: Buffer) => (out += chunk));
    const seen = JSON.parse(await until('the program\'s line', () => (out.includes('\n') ? out.slice(0, out.indexOf('\n')) : undefined), 20_000)) as { pid: number; bound: number; port: number; replies: unknown[] };
    assert.deepEqual(seen.replies, [[`one@${udpEcho.seenFrom}`, udpEcho.address, udpEcho.port], [`two@${udpEcho.seenFrom}`, udpEcho.address, udpEcho.port]]);
    // The port node bound here is the one its socket has there, and node alone holds it in the target's network.
    assert.equal(seen.port, seen.bound);
    const there = execFileSync('nsenter', ['-t', String(pid()), '-n', 'ss', '-Huanp', 'sport', `= :${seen.bound}`], { encoding: 'utf8' });
    assert.match(there, new RegExp(`pid=${seen.pid},`), there);
    run.child.stdin!.end();
    const result = await run.finished;
    ok(result);
    assert.equal(result.stderr.match(/udp: made the socket in process \d+'s network/g)?.length, 1, result.stderr.slice(-3000));
  });

  test('a datagram socket goes to the target\'s network unless the program tied it here (a port it chose, a datagram to loopback), and comes back for loopback', async () => {
    const { udpEcho } = world().services;
    const { local, localPort } = await loopbackEcho();
    const script = `
import socket
echo = ("${udpEcho.address}", ${udpEcho.port})
def exchange(s, text, to=echo):
    s.sendto(text.encode(), to)
    return s.recvfrom(100)[0].decode()
unbound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
unbound.settimeout(10)
print("unbound", exchange(unbound, "a"), exchange(unbound, "b"))
chosen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
chosen.settimeout(10)
chosen.bind(("0.0.0.0", 0))
port = chosen.getsockname()[1]
chosen.close()
chosen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
chosen.settimeout(10)
chosen.bind(("0.0.0.0", port))
print("chosen", exchange(chosen, "c"), chosen.getsockname()[1] == port)
looped = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
looped.settimeout(10)
print("looped", exchange(looped, "d", ("127.0.0.1", ${localPort})), exchange(looped, "e"), exchange(looped, "f", ("127.0.0.1", ${localPort})))
back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
back.settimeout(10)
back.bind(("0.0.0.0", 0))
port = back.getsockname()[1]
print("back", exchange(back, "g"), exchange(back, "h", ("127.0.0.1", ${localPort})), exchange(back, "i"), back.getsockname()[1] == port)
`;
    try {
      const result = await execIn(pid(), ['python3', '-c', script], { env: { ...process.env, DOPPEL_LAYER_LOG: 'debug' } });
      assert.equal(ok(result), [
        `unbound a@${udpEcho.seenFrom} b@${udpEcho.seenFrom}`,
        `chosen c@${udpEcho.seenFrom} True`,
        `looped d@here e@${udpEcho.seenFrom} f@here`,
        // Made there at its first datagram, back here (on its port) for the loopback one, relayed from then on.
        `back g@${udpEcho.seenFrom} h@here i@${udpEcho.seenFrom} True`,
        '',
      ].join('\n'));
      // The unbound socket and the last one were made there; the chosen port and the looped socket stayed here.
      assert.equal(result.stderr.match(/udp: made the socket in process \d+'s network/g)?.length, 2, result.stderr.slice(-3000));
      assert.equal(result.stderr.match(/udp: the socket stays here/g)?.length, 1, result.stderr.slice(-3000));
      assert.equal(result.stderr.match(/udp: the socket came back here for a datagram to loopback/g)?.length, 1, result.stderr.slice(-3000));
    } finally {
      local.close();
    }
  });

  test('--no-udp-outgoing and udp: false send from the developer machine; DNS to the target\'s resolver still follows the dns switch', async () => {
    const { udpEcho } = world().services;
    const send = `import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("${udpEcho.address}", ${udpEcho.port}))`;
    for (const flags of [['--no-udp-outgoing'], config('udp-off', { feature: { network: { outgoing: { udp: false } } } })]) {
      const result = await execIn(pid(), ['python3', '-c', send], { flags });
      assert.notEqual(result.status, 0, flags.join(' '));
      assert.match(result.stderr, /No route to host|Network is unreachable/, flags.join(' '));
      assert.equal(ok(await execIn(pid(), ['dig', '+short', udpEcho.name], { flags })), `${udpEcho.address}\n`);
    }
  });

  test('DNS over TCP to the target\'s resolver follows the dns switch too: dig +tcp resolves with --no-tcp-outgoing', async () => {
    const { udpEcho, http } = world().services;
    assert.equal(ok(await execIn(pid(), ['dig', '+tcp', '+short', udpEcho.name], { flags: ['--no-tcp-outgoing'] })), `${udpEcho.address}\n`);
    // Other TCP leaves from the developer machine, which has no route to the service.
    const other = await execIn(pid(), ['curl', '-s', '-m', '5', `http://${http.address}:${http.port}/`], { flags: ['--no-tcp-outgoing'] });
    assert.notEqual(other.status, 0);
  });

  test('--no-remote-dns sends dig\'s queries from the developer machine, where the target\'s resolver is unreachable', async () => {
    const result = await execIn(pid(), ['dig', '+tries=1', '+time=2', world().services.udpEcho.name], { flags: ['--no-remote-dns'] });
    assert.notEqual(result.status, 0);
    assert.match(result.stdout, /host unreachable|network unreachable|no servers could be reached/);
  });

  test('an outgoing filter sends a UDP destination from the developer machine and leaves TCP alone', async () => {
    const { udpEcho, http } = world().services;
    const flags = config('filter', { feature: { network: { outgoing: { filter: { local: [`udp://${udpEcho.address}:${udpEcho.port}`] } } } } });
    const send = `import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("${udpEcho.address}", ${udpEcho.port}))`;
    const filtered = await execIn(pid(), ['python3', '-c', send], { flags });
    assert.notEqual(filtered.status, 0);
    assert.match(filtered.stderr, /No route to host|Network is unreachable/);
    assert.equal(ok(await execIn(pid(), ['curl', '-s', `http://${http.address}:${http.port}/`], { flags })), http.body);
  });
});
