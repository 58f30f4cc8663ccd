// Priming the hot paths while a program starts: pings over a real link until done or until a real request goes out
// (none while one is in flight), saying whether the link stayed idle; and a loopback hand-off that leaves nothing open.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Connection } from '../../src/protocol/connection.ts';
import { FrameDecoder } from '../../src/protocol/frame.ts';
import { decodeControl } from '../../src/protocol/messages.ts';
import { primeHandOff } from '../../src/proxy/outgoing.ts';
import { socketPair } from './pair.ts';

const closers: (() => void)[] = [];
after(() => closers.forEach((close) => close()));

/** A client and an agent connection, and the operations of the requests the agent's end received, in order. */
async function connected() {
  const pair = await socketPair();
  closers.push(pair.close);
  const received: string[] = [];
  const decoder = new FrameDecoder();
  pair.b.on('data', (chunk: Buffer) => {
    for (const frame of decoder.push(chunk)) {
      const message = frame.kind === 'control' ? decodeControl(frame.body) : undefined;
      if (message?.t === 'req') received.push(message.op);
    }
  });
  const [client] = await Promise.all([
    Connection.open(pair.a, { role: 'client', software: 'test-client', handshakeTimeoutMs: 2000 }),
    Connection.open(pair.b, { role: 'agent', software: 'test-agent', handshakeTimeoutMs: 2000, onRequest: async () => ({ target: 'there' }) }),
  ]);
  return { client, received };
}

test('priming an idle link sends its pings one after another, and the link serves requests after it', async () => {
  const { client, received } = await connected();
  assert.equal(await client.prime(25), true);
  assert.deepEqual(received, Array.from({ length: 25 }, () => 'ping'));
  assert.equal((await client.request('fs.readlink', { path: '/p' })).target, 'there');
});

test('priming stops at the first request of the program: it never queues pings ahead of real calls', async () => {
  const { client, received } = await connected();
  const primed = client.prime(1000);
  assert.equal((await client.request('fs.readlink', { path: '/p' })).target, 'there');
  assert.equal(await primed, false);
  assert.deepEqual(received, ['ping', 'fs.readlink']);
});

test('priming sends no ping while a request of the program is in flight', async () => {
  const { client, received } = await connected();
  const asked = client.request('fs.readlink', { path: '/p' });
  assert.equal(await client.prime(1000), false);
  assert.equal((await asked).target, 'there');
  assert.deepEqual(received, ['fs.readlink']);
});

test('priming on a closed link ends at once without an error', async () => {
  const { client, received } = await connected();
  client.close();
  assert.equal(await client.prime(1000), false);
  assert.deepEqual(received, []);
});

test('the primed hand-off leaves no listener and no connection open', async () => {
  const tcp = () => process.getActiveResourcesInfo().filter((name) => name.startsWith('TCP')).length;
  const before = tcp();
  const open = new Set<{ destroy(): void }>();
  await primeHandOff(open);
  assert.equal(open.size, 0);
  // The proxy's end of the connection closes a moment after the primer's: its handles leave the list then.
  for (let turn = 0; turn < 200 && tcp() !== before; turn++) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(tcp(), before);
});
