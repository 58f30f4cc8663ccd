// The UDP hooks with a C client (connect/send/recv, sendto/recvfrom, sendmsg/recvmsg, sendmmsg/recvmmsg, getpeername)
// against a real agent, its sockets made in the target's network or relayed, and the same client's datagrams staying
// local when outgoing UDP is off.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { serveUnderDoppel } from '../e2e/serve-under-doppel.ts';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { execIn } from '../e2e/run-doppel.ts';
import { relayedFlags, udpClient } from './udp-scenario.ts';

describe('the UDP hooks', needsRoot('UDP through a test world'), () => {
  let world: World;
  before(async () => {
    world = await createWorld();
  });
  after(async () => {
    await world?.destroy();
  });

  test('a C client reaches a service only the pod reaches, and sees the service as its peer: its sockets made there', async () => {
    assert.equal(await udpClient(world), '');
  });

  test('the same C client with its datagrams relayed through the proxy and the agent (an outgoing filter present)', async () => {
    assert.equal(await udpClient(world, process.env, 'relayed'), '');
  });

  test('a relayed socket\'s target-side socket lives as long as it: those of exited children and of a closed socket go', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'doppel-udp-hooks-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const { address, port, seenFrom } = world.services.udpEcho;
    const child = `const s = require('dgram').createSocket('udp4'); s.on('message', () => s.close()); s.send('child', ${port}, '${address}')`;
    const script = `
      const { execFileSync } = require('child_process');
      const socket = require('dgram').createSocket('udp4');
      socket.once('message', (m) => {
        console.log('parent ' + m);
        for (let i = 0; i < 3; i++) execFileSync(process.execPath, ['-e', ${JSON.stringify(child)}]);
        console.log('children done');
      });
      socket.send('parent', ${port}, '${address}');
      process.once('SIGUSR1', () => {
        socket.close();
        // A process that exits is what makes the proxy look again.
        execFileSync(process.execPath, ['-e', 'process.exit(0)']);
        console.log('closed');
      });
      setInterval(() => {}, 1000);
    `;
    // The pod's UDP sockets are the agent's alone: the services, and their DNS server, are in another namespace.
    const podSockets = () => execFileSync('nsenter', ['-t', String(world.target.pid), '-n', 'ss', '-Hua'], { encoding: 'utf8' }).split('\n').filter((line) => line.trim() !== '').length;
    const until = async (count: number) => {
      for (let i = 0; i < 100 && podSockets() !== count; i++) await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(podSockets(), count);
    };
    const server = serveUnderDoppel(world.target.pid, ['node', '-e', script], { flags: relayedFlags(dir) });
    assert.equal((await server.line(/^parent .*/))[0], `parent parent@${seenFrom}`);
    await server.line(/^children done$/);
    await until(1);
    server.signal('SIGUSR1');
    await server.line(/^closed$/);
    await until(0);
    server.signal('SIGTERM');
    await server.finished;
  });

  test('with --no-udp-outgoing the same datagrams leave from the developer machine, which has no route to the service', async () => {
    const { address, port } = world.services.udpEcho;
    const script = `import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("${address}", ${port}))`;
    const result = await execIn(world.target.pid, ['python3', '-c', script], { flags: ['--no-udp-outgoing'] });
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /No route to host|Network is unreachable/);
  });
});
