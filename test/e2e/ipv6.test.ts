// IPv6 outgoing and AAAA answers end to end: the services have IPv6 addresses only the pod reaches, and programs under
// bin/doppel resolve the target's AAAA records and connect to them through the target.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { leftoversAfter } from './leftovers.ts';
import { execIn, ok } from './run-doppel.ts';

const gate = needsRoot('IPv6 outgoing against a process target');

describe('IPv6 outgoing and AAAA', gate, () => {
  let world: World;
  const pid = () => world.target.pid;
  const v6 = () => world.services.ipv6!;

  before(async () => {
    world = await createWorld({ ipv6: true });
  });
  after(async () => {
    await world?.destroy();
  });
  afterEach(async () => {
    if (!world) return;
    assert.deepEqual(await leftoversAfter(pid()), { agents: [], dirs: [] }, 'a session left an agent process or a socket directory behind');
  });

  test('getaddrinfo with AF_INET6 gets the target\'s AAAA answer, AF_UNSPEC both families (getent, python3)', async () => {
    const { http } = world.services;
    assert.equal(ok(await execIn(pid(), ['sh', '-c', `getent ahostsv6 ${http.name} | head -1 | cut -d' ' -f1`])).trim(), v6().http);
    const script = `import socket; print(sorted({a[4][0] for a in socket.getaddrinfo("${http.shortName}", 8080, socket.AF_INET6)})); print(sorted({a[4][0] for a in socket.getaddrinfo("${http.shortName}", 8080)}))`;
    const out = ok(await execIn(pid(), ['python3', '-c', script])).trim().split('\n');
    assert.deepEqual(out, [`['${v6().http}']`, `${JSON.stringify([http.address, v6().http].sort()).replace(/"/g, "'").replace(/,/g, ', ')}`]);
  });

  test('curl -6 by name and by literal address, and redis-cli over IPv6, go through the target', async () => {
    const { http, redis } = world.services;
    assert.equal(ok(await execIn(pid(), ['curl', '-6', '-sS', '--max-time', '10', `http://${http.name}:${http.port}/`])), http.body);
    assert.equal(ok(await execIn(pid(), ['curl', '-g', '-sS', '--max-time', '10', `http://[${v6().http}]:${http.port}/`])), http.body);
    assert.equal(ok(await execIn(pid(), ['redis-cli', '-h', v6().redis, 'GET', redis.key])).trim(), redis.value);
  });

  test('node: dns.lookup family 6 and net.connect (sending side shut down after the request), with the remote IPv6 address as the peer', async () => {
    const { http } = world.services;
    const script = `const net = require('net'); require('dns').lookup('${http.name}', { family: 6 }, (error, address) => {
      if (error) throw error;
      const socket = net.connect(${http.port}, address, () => { console.log(address, socket.remoteAddress, socket.remoteFamily); socket.end('GET / HTTP/1.0\\r\\n\\r\\n'); });
      let body = ''; socket.on('data', (d) => (body += d)); socket.on('end', () => console.log(body.split('\\r\\n\\r\\n')[1]));
    });`;
    const [first, body] = ok(await execIn(pid(), ['node', '-e', script])).trim().split('\n');
    assert.equal(first, `${v6().http} ${v6().http} IPv6`);
    assert.equal(body, http.body);
  });
});
