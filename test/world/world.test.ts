// The test world is what it claims: the target's files, DNS and services are there from inside the pod and nowhere else.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from './world.ts';
import { netnsNames } from './world-system.ts';

const gate = needsRoot('the test world');

describe('test world', gate, () => {
  let world: World;
  const inPod = (script: string) => execFileSync('nsenter', ['-t', String(world.target.pid), '-n', '-m', 'sh', '-c', script], { encoding: 'utf8' });

  before(async () => {
    world = await createWorld();
  });
  after(async () => {
    await world?.destroy();
  });

  test('the target sees its own files, resolv.conf and environment', () => {
    for (const [path, content] of Object.entries(world.target.files)) assert.equal(inPod(`cat ${path}`), content);
    assert.match(inPod('cat /etc/resolv.conf'), new RegExp(`nameserver ${world.services.dnsServer.replaceAll('.', '\\.')}`));
    const environ = execFileSync('cat', [`/proc/${world.target.pid}/environ`], { encoding: 'utf8' });
    assert.ok(environ.includes(`DOPPEL_TEST_SECRET=${world.target.env.DOPPEL_TEST_SECRET}`));
  });

  test('the host does not see the target\'s files', () => {
    for (const path of Object.keys(world.target.files)) assert.equal(existsSync(path), false, path);
  });

  test('cluster names resolve inside the pod, long and short', () => {
    assert.match(inPod(`getent hosts ${world.services.redis.name}`), new RegExp(world.services.redis.address.replaceAll('.', '\\.')));
    assert.match(inPod(`getent hosts ${world.services.redis.shortName}`), new RegExp(world.services.redis.address.replaceAll('.', '\\.')));
    assert.match(inPod(`getent hosts ${world.services.hostsAlias.name}`), new RegExp(world.services.hostsAlias.address.replaceAll('.', '\\.')));
    assert.notEqual(spawnSync('nsenter', ['-t', String(world.target.pid), '-n', '-m', 'getent', 'hosts', 'nothing.svc.cluster.local']).status, 0);
  });

  test('the services answer inside the pod', () => {
    assert.equal(inPod(`redis-cli -h ${world.services.redis.name} GET ${world.services.redis.key}`).trim(), world.services.redis.value);
    assert.equal(inPod(`curl -s http://${world.services.http.shortName}:${world.services.http.port}/`), world.services.http.body);
  });

  test('the UDP echo answers inside the pod, and dig asks the DNS server over UDP', () => {
    const { udpEcho } = world.services;
    const script = `import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); s.sendto(b"ping", ("${udpEcho.name}", ${udpEcho.port})); print(s.recvfrom(100)[0].decode())`;
    assert.equal(inPod(`python3 -c '${script}'`).trim(), `ping@${udpEcho.seenFrom}`);
    assert.equal(inPod(`dig +short +notcp ${udpEcho.name}`).trim(), udpEcho.address);
  });

  test('the host cannot reach the services range', async () => {
    const code = await new Promise<string>((resolve) => {
      const socket = connect({ host: world.services.redis.address, port: world.services.redis.port });
      socket.once('connect', () => resolve('connected'));
      socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    });
    assert.ok(['EHOSTUNREACH', 'ENETUNREACH'].includes(code), code);
  });

  test('destroy removes everything', async () => {
    const other = await createWorld();
    const { name, target } = other;
    await other.destroy();
    assert.ok(!netnsNames().some((w) => w.name === name));
    assert.equal(existsSync(`/proc/${target.pid}`), false);
    assert.doesNotMatch(execFileSync('ip', ['route'], { encoding: 'utf8' }), new RegExp(other.services.range.replaceAll('.', '\\.')));
  });
});
