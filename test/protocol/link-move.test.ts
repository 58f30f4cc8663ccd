// A connection moved to another stream mid-session (`link.direct` and Connection.moveTo, what a Kubernetes session does
// from the port-forward to the agent's pod): the real agent's handlers, a relayed TCP connection carrying bytes across
// the move, and requests in flight on both sides of it. The first stream is a Unix socket pair standing in for the
// port-forward; the second is the agent's TCP listener, reached on loopback.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import { after, test } from 'node:test';
import { createLog } from '../../src/agent/log.ts';
import { createRequestHandler } from '../../src/agent/serve.ts';
import type { Channel } from '../../src/protocol/channel.ts';
import { Connection } from '../../src/protocol/connection.ts';
import { admitted } from '../../src/platform/kubernetes/agent-link.ts';
import { agentLink } from '../../src/platform/kubernetes/direct-link.ts';
import { socketPair } from './pair.ts';

const closers: (() => void)[] = [];
after(() => closers.forEach((close) => close()));

async function session() {
  const pair = await socketPair();
  closers.push(pair.close);
  const [client, agent] = await Promise.all([
    Connection.open(pair.a, { role: 'client', software: 'test-client', handshakeTimeoutMs: 2000 }),
    Connection.open(pair.b, { role: 'agent', software: 'test-agent', handshakeTimeoutMs: 2000, onRequest: createRequestHandler(process.pid, createLog('error')) }),
  ]);
  return { client, agent, pair };
}

/** A TCP echo server on loopback, for a relayed connection to carry bytes through the move. */
async function echoServer(): Promise<number> {
  const server = createServer((socket) => socket.pipe(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => server.close());
  return (server.address() as { port: number }).port;
}

function connectTo(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Reads `length` bytes from the channel and digests them. */
function digestOf(channel: Channel, length: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let seen = 0;
    const onData = (chunk: Buffer) => {
      hash.update(chunk);
      seen += chunk.length;
      if (seen >= length) {
        channel.off('data', onData);
        resolve(hash.digest('hex'));
      }
    };
    channel.on('data', onData);
    channel.once('error', reject);
  });
}

test('a moved connection keeps its requests and its relayed bytes in order, and lives on after the first stream is gone', async () => {
  const { client, agent, pair } = await session();
  const echo = await echoServer();
  const relayed = client.openChannel();
  await client.request('tcp.connect', { host: '127.0.0.1', port: echo, channel: relayed.id });
  // 4 MiB through the echo, half written before the move and half after: every byte comes back, in order.
  const bytes = randomBytes(4 << 20);
  const echoed = digestOf(relayed, bytes.length);
  relayed.write(bytes.subarray(0, bytes.length / 2));
  const before = Array.from({ length: 100 }, () => client.request('fs.stat', { path: '/proc/self/exe', follow: true }));

  const { port, key, addresses } = await client.request('link.direct', {});
  assert.ok(Array.isArray(addresses));
  const direct = await connectTo(port);
  closers.push(() => direct.destroy());
  await admitted(direct, key);
  const moving = client.moveTo(direct);
  const during = Array.from({ length: 100 }, () => client.request('fs.stat', { path: '/proc/self/exe', follow: true }));
  relayed.write(bytes.subarray(bytes.length / 2));
  await moving;

  for (const answer of await Promise.all([...before, ...during])) assert.equal(answer.mode & 0o170000, 0o100000);
  assert.equal(await echoed, createHash('sha256').update(bytes).digest('hex'));
  // The first stream, gone altogether, takes nothing with it.
  pair.close();
  const late = await client.request('fs.stat', { path: '/proc/self/exe', follow: true });
  assert.equal(late.mode & 0o170000, 0o100000);
  relayed.write('after');
  assert.equal((await digestOf(relayed, 5)).length, 64);
  let settled = false;
  void client.closed.then(() => (settled = true));
  void agent.closed.then(() => (settled = true));
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(settled, false, 'neither end saw its connection close');
  client.close();
  await agent.closed;
});

test('the agent takes only the connection that proves the key, and only one', async () => {
  const { client } = await session();
  const { port, key } = await client.request('link.direct', {});
  const stranger = await connectTo(port);
  closers.push(() => stranger.destroy());
  await assert.rejects(admitted(stranger, 'not-the-key'), /refused this session's token/);
  const direct = await connectTo(port);
  closers.push(() => direct.destroy());
  await admitted(direct, key);
  await client.moveTo(direct);
  // The listener is gone once it took its connection.
  await assert.rejects(connectTo(port), { code: 'ECONNREFUSED' });
  assert.equal((await client.request('fs.stat', { path: '/proc/self/exe', follow: true })).mode & 0o170000, 0o100000);
  client.close();
});

test('a pod address whose listener never answers the key is given up within seconds, and the link stays where it was', async () => {
  const pair = await socketPair();
  closers.push(pair.close);
  // A listener that takes the connection and never says a word, where the agent says it listens.
  let silentClosed: () => void = () => {};
  const gaveUp = new Promise<void>((resolve) => (silentClosed = resolve));
  const silent = createServer((socket) => socket.resume().once('close', silentClosed));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  closers.push(() => silent.close());
  const port = (silent.address() as { port: number }).port;
  const [client] = await Promise.all([
    Connection.open(pair.a, { role: 'client', software: 'test-client', handshakeTimeoutMs: 2000 }),
    Connection.open(pair.b, {
      role: 'agent',
      software: 'test-agent',
      handshakeTimeoutMs: 2000,
      onRequest: async (op) => (op === 'link.direct' ? { addresses: ['127.0.0.1'], port, key: 'k' } : { target: 'x' }),
    }),
  ]);
  const link = agentLink({ stream: pair.a, closed: new Promise(() => {}) }, 'a-pod', true);
  const started = performance.now();
  link.afterHandshake(client);
  await Promise.race([gaveUp, new Promise((_, reject) => setTimeout(() => reject(new Error('the silent listener was never let go')), 10_000).unref())]);
  const waited = performance.now() - started;
  assert.ok(waited >= 1500 && waited < 10_000, `gave up after ${waited} ms`);
  assert.deepEqual(await client.request('fs.readlink', { path: '/p' }), { target: 'x' });
  client.close();
});
