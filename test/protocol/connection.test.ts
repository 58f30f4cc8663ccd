// The agent connection over a real Unix socket: handshake, requests, and channels whose credits keep memory bounded and requests flowing.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { createServer, type Socket } from 'node:net';
import { createLog } from '../../src/agent/log.ts';
import { createRequestHandler } from '../../src/agent/serve.ts';
import { Connection } from '../../src/protocol/connection.ts';
import { RemoteError } from '../../src/protocol/errors.ts';
import { INITIAL_WINDOW } from '../../src/protocol/channel.ts';
import { encodeFrame } from '../../src/protocol/frame.ts';
import { encodeControl } from '../../src/protocol/messages.ts';
import { until } from '../support/until.ts';
import { socketPair } from './pair.ts';

const closers: (() => void)[] = [];
after(() => closers.forEach((close) => close()));

async function connected(onRequest?: Parameters<typeof Connection.open>[1]['onRequest']) {
  const pair = await socketPair();
  closers.push(pair.close);
  const [client, agent] = await Promise.all([
    Connection.open(pair.a, { role: 'client', software: 'test-client', handshakeTimeoutMs: 2000 }),
    Connection.open(pair.b, { role: 'agent', software: 'test-agent', handshakeTimeoutMs: 2000, onRequest }),
  ]);
  return { client, agent, pair };
}

test('the handshake exchanges software names, then requests are answered by id', async () => {
  const { client, agent } = await connected(async (op, args) => {
    if (op === 'fs.readlink') return { target: `${(args as { path: string }).path} -> there` };
    throw new RemoteError('ENOENT', 'no such thing');
  });
  assert.equal(client.peer.software, 'test-agent');
  assert.equal(agent.peer.software, 'test-client');
  const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => client.request('fs.readlink', { path: `/p${i}` })));
  assert.deepEqual(answers.map((a) => a.target), Array.from({ length: 100 }, (_, i) => `/p${i} -> there`));
  await assert.rejects(client.request('fs.stat', { path: '/x', follow: true }), (error: unknown) => error instanceof RemoteError && error.code === 'ENOENT');
});

test('a peer that says nothing is a handshake timeout, not a hang', async () => {
  const pair = await socketPair();
  closers.push(pair.close);
  await assert.rejects(Connection.open(pair.a, { role: 'client', software: 't', handshakeTimeoutMs: 200 }), /no handshake from the peer within 200 ms/);
});

test('a peer that is not a doppel agent, or too old, is refused clearly', async () => {
  const garbage = await socketPair();
  closers.push(garbage.close);
  garbage.b.write('HTTP/1.1 400 Bad Request\r\n\r\n');
  await assert.rejects(Connection.open(garbage.a, { role: 'client', software: 't', handshakeTimeoutMs: 2000 }), (error: Error & { code?: string }) => error.code === 'E_PROTOCOL_FRAME' || error.code === 'E_PROTOCOL_HANDSHAKE');

  const old = await socketPair();
  closers.push(old.close);
  old.b.write(encodeFrame({ kind: 'control', body: encodeControl({ t: 'hello', protocol: 'doppel-agent', version: 0, features: [], software: 'doppel-agent 0.0.1' }) }));
  await assert.rejects(Connection.open(old.a, { role: 'client', software: 't', handshakeTimeoutMs: 2000 }), (error: Error & { code?: string }) => error.code === 'E_PROTOCOL_VERSION' && /version 0 \(doppel-agent 0\.0\.1\)/.test(error.message));
});

test('pending requests fail with a clear error when the peer goes away', async () => {
  const { client, pair } = await connected(() => new Promise(() => {}));
  const pending = client.request('fs.stat', { path: '/x', follow: true });
  (pair.b as Socket).destroy();
  await assert.rejects(pending, (error: Error & { code?: string }) => error.code === 'E_PROTOCOL_CLOSED');
  await client.closed;
});

test('a channel that nobody reads holds at most one window; other channels and requests keep flowing', async () => {
  const channels = new Map<number, import('node:stream').Duplex>();
  const { client } = await connected(async (op, args, connection) => {
    if (op === 'tcp.connect') {
      const id = (args as { channel: number }).channel;
      channels.set(id, connection.attachChannel(id));
      return { localAddress: '198.18.0.1', localPort: 1 };
    }
    return { now: Date.now() };
  });
  const slow = client.openChannel();
  await client.request('tcp.connect', { host: '198.18.0.9', port: 1, channel: slow.id });
  const fast = client.openChannel();
  await client.request('tcp.connect', { host: '198.18.0.9', port: 2, channel: fast.id });
  const slowFar = channels.get(slow.id)!;
  slowFar.pause();

  // Push 8 MiB into the channel nobody reads: the writer must be held back by credits.
  const chunk = Buffer.alloc(64 * 1024, 1);
  let written = 0;
  const writer = (async () => {
    for (let i = 0; i < 128; i++) {
      if (!slow.write(chunk)) await new Promise((resolve) => slow.once('drain', resolve));
      written += chunk.length;
    }
  })();
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.ok(slowFar.readableLength <= INITIAL_WINDOW, `receiver buffered ${slowFar.readableLength} bytes`);
  assert.ok(written < 8 * 1024 * 1024, 'the writer was never held back');

  // Meanwhile another channel and plain requests still work.
  const fastFar = channels.get(fast.id)!;
  const echoed = new Promise<string>((resolve) => fastFar.once('data', (data: Buffer) => resolve(data.toString())));
  fast.write('still moving');
  assert.equal(await echoed, 'still moving');
  assert.ok((await client.request('ping', {})).now > 0);

  // Reading resumes the flow and every byte arrives, in order.
  let received = 0;
  slowFar.on('data', (data: Buffer) => (received += data.length));
  slowFar.resume();
  await writer;
  slow.end();
  await new Promise((resolve) => slowFar.once('end', resolve));
  assert.equal(received, 8 * 1024 * 1024);
});

test('a refused connect resets its channel before anyone listens to it, and neither side crashes', async () => {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  const { client, agent } = await connected(createRequestHandler(process.pid, createLog('error')));
  const channel = client.openChannel();
  await assert.rejects(client.request('tcp.connect', { host: '127.0.0.1', port, channel: channel.id }), { code: 'ECONNREFUSED' });
  // The agent's reset follows its answer; nothing here listens to the channel yet.
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.ok(channel.destroyed);
  assert.equal(client.openChannels, 0);
  assert.equal(agent.openChannels, 0);
});

test('frames behind a request that holds the link wait for it: the data of the channel it attaches late is not dropped', async () => {
  // As the agent does while its handlers load: the request's handler runs later, and attaches its channel only then.
  let release!: () => void;
  const loaded = new Promise<void>((resolve) => (release = resolve));
  const received: Buffer[] = [];
  const { client } = await connected((op, args, connection) => {
    const attached = loaded.then(() => {
      connection.attachChannel((args as { channel: number }).channel).on('data', (chunk: Buffer) => received.push(chunk));
      return {};
    });
    connection.hold(attached);
    return attached;
  });
  const channel = client.openChannel();
  const opened = client.request('udp.open', { channel: channel.id });
  // Written at once, as the proxy writes a UDP flow's first datagram: it reaches the agent right behind the request.
  channel.write('the first datagram');
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.deepEqual(received, []);
  release();
  await opened;
  await until('the channel\'s data', () => (received.length > 0 ? true : undefined), 2000);
  assert.equal(Buffer.concat(received).toString(), 'the first datagram');
});
