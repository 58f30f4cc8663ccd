// The UDP hooks with a C client (connect/send/recv, sendto/recvfrom, sendmsg/recvmsg, sendmmsg/recvmmsg, getpeername)
// against a real agent, and the same client's datagrams staying local when outgoing UDP is off.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { execIn } from '../e2e/run-doppel.ts';
import { udpClient } from './udp-scenario.ts';

describe('the UDP hooks', needsRoot('UDP through a test world'), () => {
  let world: World;
  before(async () => {
    world = await createWorld();
  });
  after(async () => {
    await world?.destroy();
  });

  test('a C client reaches a service only the pod reaches, and sees the service as its peer', async () => {
    assert.equal(await udpClient(world), '');
  });

  test('with --no-udp-outgoing the same datagrams leave from the developer machine, which has no route to the service', async () => {
    const { address, port } = world.services.udpEcho;
    const script = `import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("${address}", ${port}))`;
    const result = await execIn(world.target.pid, ['python3', '-c', script], { flags: ['--no-udp-outgoing'] });
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /No route to host|Network is unreachable/);
  });
});
