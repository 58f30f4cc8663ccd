// File contents on channels: the real agent's fs.fetch through the real client, over throttled real sockets, with small requests overtaking a big transfer.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createLog } from '../../src/agent/log.ts';
import { createRequestHandler } from '../../src/agent/serve.ts';
import { Connection } from '../../src/protocol/connection.ts';
import { decodeControl, encodeControl, PROTOCOL_VERSION } from '../../src/protocol/messages.ts';
import { connectAgent, type AgentClient } from '../../src/proxy/agent-client.ts';
import { startAgentProcess } from './agent-process.ts';
import { socketPair } from './pair.ts';
import { relayBetween, relayedLink, type RelayedLink, type RelayOptions } from './relay.ts';

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'doppel-fetch-'));
const closers: (() => void)[] = [];
after(() => {
  closers.forEach((close) => close());
  rmSync(dir, { recursive: true, force: true });
});

/** The real agent's request handler, serving this process's own root, behind a relayed link. */
async function agentOverLink(options: RelayOptions = {}): Promise<{ client: AgentClient; agent: Connection; link: RelayedLink }> {
  const link = await relayedLink(options);
  closers.push(link.close);
  const [client, agent] = await Promise.all([
    connectAgent(link.a, { handshakeTimeoutMs: 5000 }),
    Connection.open(link.b, { role: 'agent', software: 'test-agent', handshakeTimeoutMs: 5000, onRequest: createRequestHandler(process.pid, createLog('error')) }),
  ]);
  closers.push(() => client.close());
  return { client, agent, link };
}

const sha = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

test('a small request issued during a 64 MiB transfer over a throttled link is answered long before the transfer ends', async () => {
  const big = join(dir, 'big');
  const content = Buffer.concat(Array.from({ length: 64 }, () => randomBytes(MiB)));
  writeFileSync(big, content);
  writeFileSync(join(dir, 'small'), 'small\n');
  // The agent in its own process, as in a session: its answers do not wait for this process's relay and client.
  const agent = startAgentProcess('error');
  closers.push(agent.kill);
  const near = await socketPair();
  closers.push(near.close);
  const link = relayBetween(near.b, agent.socket, { bytesPerSecond: 32 * MiB });
  const client = await connectAgent(near.a, { handshakeTimeoutMs: 5000 });
  closers.push(() => client.close());

  const order: string[] = [];
  const transfer = client.fetch(big).then((file) => {
    order.push('transfer');
    return file;
  });
  // 4.5 MiB in: had the file come in 4 MiB pieces inside control frames, the answer would wait behind most of the second.
  while (link.forwarded.bToA < 4.5 * MiB) await new Promise((resolve) => setTimeout(resolve, 5));
  const issuedAt = link.forwarded.bToA;
  let answeredAt = 0;
  const small = client.stat(join(dir, 'small'), true).then((stat) => {
    answeredAt = link.forwarded.bToA;
    order.push('small');
    return stat;
  });
  const [file, stat] = await Promise.all([transfer, small]);

  assert.deepEqual(order, ['small', 'transfer']);
  assert.equal(stat.size, 6);
  assert.equal(file.stat.size, 64 * MiB);
  assert.equal(sha(file.data), sha(content));
  // What crossed the link ahead of the small answer is what already sat in socket buffers (at most about 600 KiB
  // in bench/protocol-bench.ts), not the rest of the file, nor the rest of a piece (about 3.5 MiB with fs.read pieces).
  const ahead = answeredAt - issuedAt;
  assert.ok(ahead < MiB, `${ahead} bytes of the transfer went ahead of the small answer`);
});

test('fetch answers like open: whole content, directories and files whose stat says 0 bytes, errors by errno', async () => {
  const { client, agent } = await agentOverLink();
  writeFileSync(join(dir, 'empty'), '');
  assert.equal((await client.fetch(join(dir, 'empty'))).data.length, 0);
  const listed = await client.fetch(dir);
  assert.equal(listed.stat.mode & 0o170000, 0o040000);
  assert.equal(listed.data.length, 0);
  // /proc files report size 0: the content is read to its end, not to the stat's size.
  const status = Buffer.from((await client.fetch('/proc/self/status')).data).toString();
  assert.match(status, /^Name:/);
  await assert.rejects(client.fetch(join(dir, 'missing')), { code: 'ENOENT' });
  // Each transfer closed its channel on both sides.
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(client.connection.openChannels, 0);
  assert.equal(agent.openChannels, 0);
});

test('a client facing a version 1 agent fetches in fs.read pieces and never sends fs.fetch', async () => {
  // Fault injection: the relay makes the real agent's hello claim protocol 1, as an older agent image would.
  const link = await relayedLink({
    helloFromB: (frame) => {
      const message = frame.kind === 'control' ? decodeControl(frame.body) : undefined;
      if (message?.t !== 'hello') throw new Error('the agent did not start with its hello');
      return { kind: 'control', body: encodeControl({ ...message, version: 1 }) };
    },
  });
  closers.push(link.close);
  const seen: string[] = [];
  const serve = createRequestHandler(process.pid, createLog('error'));
  const [client] = await Promise.all([
    connectAgent(link.a, { handshakeTimeoutMs: 5000 }),
    Connection.open(link.b, {
      role: 'agent',
      software: 'doppel-agent 0.0.1',
      handshakeTimeoutMs: 5000,
      onRequest: (op, args, connection) => {
        seen.push(op);
        return serve(op, args, connection);
      },
    }),
  ]);
  closers.push(() => client.close());

  const nine = randomBytes(9 * MiB);
  writeFileSync(join(dir, 'nine'), nine);
  assert.equal(client.connection.supports('fs.fetch'), false);
  assert.equal(sha((await client.fetch(join(dir, 'nine'))).data), sha(nine));
  assert.deepEqual(seen, ['fs.read', 'fs.read', 'fs.read']);
});

test('a file up to 64 KiB comes inside the answer (fs.get); a bigger one, or a /proc file past its look-ahead, streams on a channel', async () => {
  const link = await relayedLink();
  closers.push(link.close);
  const seen: string[] = [];
  const serve = createRequestHandler(process.pid, createLog('error'));
  const [client, agent] = await Promise.all([
    connectAgent(link.a, { handshakeTimeoutMs: 5000 }),
    Connection.open(link.b, {
      role: 'agent',
      software: 'test-agent',
      handshakeTimeoutMs: 5000,
      onRequest: (op, args, connection) => {
        seen.push(op);
        return serve(op, args, connection);
      },
    }),
  ]);
  closers.push(() => client.close());
  const fetched = async (path: string) => {
    seen.length = 0;
    const { data } = await client.fetch(path);
    return { data: Buffer.from(data), ops: [...seen] };
  };

  const inline = randomBytes(64 * 1024);
  writeFileSync(join(dir, 'inline'), inline);
  const small = await fetched(join(dir, 'inline'));
  assert.deepEqual(small.ops, ['fs.get']);
  assert.equal(sha(small.data), sha(inline));

  const over = randomBytes(64 * 1024 + 1);
  writeFileSync(join(dir, 'over'), over);
  const big = await fetched(join(dir, 'over'));
  assert.deepEqual(big.ops, ['fs.get', 'fs.fetch']);
  assert.equal(sha(big.data), sha(over));

  // /proc files say 0 bytes: a short one fits the look-ahead, a long one (this process's memory map) goes on a channel.
  const status = await fetched('/proc/self/status');
  assert.deepEqual(status.ops, ['fs.get']);
  assert.match(status.data.toString(), /^Name:/);
  const maps = await fetched('/proc/self/maps');
  assert.ok(maps.data.length > 4096, `/proc/self/maps of the agent is ${maps.data.length} bytes`);
  assert.deepEqual(maps.ops, ['fs.get', 'fs.fetch']);
  assert.match(maps.data.toString().trimEnd().split('\n').at(-1)!, /\[vsyscall\]|\[vdso\]|\[stack\]/);

  const directory = await fetched(dir);
  assert.deepEqual(directory.ops, ['fs.get']);
  assert.equal(directory.data.length, 0);
  await assert.rejects(client.fetch(join(dir, 'missing')), { code: 'ENOENT' });
  assert.equal(agent.openChannels, 0);
});

test('the environment brings /etc/hostname in the same answer; a version 6 agent is asked for the file alongside', async () => {
  const serve = createRequestHandler(process.pid, createLog('error'));
  const hostnameFile = readFileSync('/etc/hostname', 'utf8');
  for (const version of [PROTOCOL_VERSION, 6]) {
    // Fault injection for the older case: the relay makes the real agent's hello claim version 6.
    const link = await relayedLink({
      helloFromB: (frame) => {
        const message = frame.kind === 'control' ? decodeControl(frame.body) : undefined;
        if (message?.t !== 'hello') throw new Error('the agent did not start with its hello');
        return { kind: 'control', body: encodeControl({ ...message, version }) };
      },
    });
    closers.push(link.close);
    const seen: string[] = [];
    const [client] = await Promise.all([
      connectAgent(link.a, { handshakeTimeoutMs: 5000 }),
      Connection.open(link.b, {
        role: 'agent',
        software: 'test-agent',
        handshakeTimeoutMs: 5000,
        onRequest: (op, args, connection) => {
          seen.push(op);
          return serve(op, args, connection);
        },
      }),
    ]);
    closers.push(() => client.close());
    const { vars, hostnameFile: got } = await client.env(true);
    assert.equal(vars.PATH, process.env.PATH);
    assert.equal(got, hostnameFile);
    assert.deepEqual(seen.sort(), version === 6 ? ['env', 'fs.fetch'] : ['env']);
    seen.length = 0;
    assert.equal((await client.env(false)).hostnameFile, undefined);
    assert.deepEqual(seen, ['env']);
  }
});
