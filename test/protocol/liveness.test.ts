// Deadlines and keepalives over real sockets: no request waits forever, and a link that stalls ends with a clear error on both ends.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { constants as fsConstants } from 'node:fs';
import { connect } from 'node:net';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { after, test } from 'node:test';
import { createLog } from '../../src/agent/log.ts';
import { createRequestHandler } from '../../src/agent/serve.ts';
import { Connection } from '../../src/protocol/connection.ts';
import { encodeFrame } from '../../src/protocol/frame.ts';
import { encodeControl, PROTOCOL_VERSION, type Stat } from '../../src/protocol/messages.ts';
import { connectAgent } from '../../src/proxy/agent-client.ts';
import { createFileWriteRequests } from '../../src/proxy/file-writes.ts';
import { createFileRequests } from '../../src/proxy/files.ts';
import { errorStatus } from '../../src/proxy/layer-wire.ts';
import { createStandIns } from '../../src/proxy/standins.ts';
import { startAgentProcess } from './agent-process.ts';
import { socketPair } from './pair.ts';
import { relayedLink } from './relay.ts';

const closers: (() => void)[] = [];
after(() => closers.forEach((close) => close()));

const stat: Stat = { dev: 1, ino: 2, mode: 0o100644, nlink: 1, uid: 0, gid: 0, rdev: 0, size: 1000, blksize: 4096, blocks: 8, atimeSec: 0, atimeNsec: 0, mtimeSec: 0, mtimeNsec: 0, ctimeSec: 0, ctimeNsec: 0 };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const hello = (software: string) => encodeFrame({ kind: 'control', body: encodeControl({ t: 'hello', protocol: 'doppel-agent', version: PROTOCOL_VERSION, features: [], software }) });
const codeOf = (error: unknown) => (error as { code?: string } | undefined)?.code;

async function pair(onRequest: Parameters<typeof Connection.open>[1]['onRequest'], clientTimeouts: { communicationTimeoutMs: number }) {
  const sockets = await socketPair();
  closers.push(sockets.close);
  const [client, agent] = await Promise.all([
    connectAgent(sockets.a, { handshakeTimeoutMs: 2000, ...clientTimeouts }),
    Connection.open(sockets.b, { role: 'agent', software: 'test-agent', handshakeTimeoutMs: 2000, onRequest }),
  ]);
  closers.push(() => client.close());
  return { client, agent };
}

test('a request with no answer in time fails with E_PROTOCOL_TIMEOUT; the late answer is dropped and the connection keeps working', async () => {
  // Fault injection: an agent whose fs.stat answers only after the client's deadline.
  const { client } = await pair(async (op) => {
    if (op === 'fs.stat') await sleep(400);
    return op === 'fs.stat' ? stat : { target: 'there' };
  }, { communicationTimeoutMs: 150 });
  await assert.rejects(client.stat('/slow', true), (error: Error & { code?: string }) => {
    assert.equal(error.code, 'E_PROTOCOL_TIMEOUT');
    assert.equal(error.message, 'the agent did not answer fs.stat within 150 ms');
    return true;
  });
  await sleep(400);
  assert.equal(await client.readlink('/fast'), 'there');
});

test('a remote open the agent never answers reaches the layer as EIO at the deadline, and the agent end of its channel is reset', async () => {
  // Fault injection: an agent that says the file is too big to come inside its answer (fs.get), then takes the
  // fetch's channel and never answers.
  const held: { resetCode?: Promise<string | undefined> } = {};
  const { client } = await pair((op, args, connection) => {
    if (op === 'fs.get') return Promise.resolve({ stat });
    const channel = connection.attachChannel((args as { channel: number }).channel);
    held.resetCode = new Promise((resolve) => channel.on('error', (error: Error & { code?: string }) => resolve(error.code)));
    return new Promise(() => {});
  }, { communicationTimeoutMs: 200 });
  const policy = { decide: (path: string) => ({ action: 'remote' as const, path }) };
  // No directory is opened here, so its stand-ins' directory is never made.
  const files = createFileRequests(client, policy, createFileWriteRequests(client, policy).openForWrite, createStandIns(join(tmpdir(), 'doppel-unused-standins')));
  const answer = await files.open('/etc/stuck.conf', fsConstants.O_RDONLY, 0);
  assert.deepEqual(answer, { kind: 'error', code: 'E_PROTOCOL_TIMEOUT' });
  assert.equal(errorStatus('open', 'E_PROTOCOL_TIMEOUT'), -osConstants.errno.EIO);
  assert.equal(await held.resetCode, 'ECONNRESET');
});

test('a connect the client gave up on at its deadline is abandoned by the agent too', async () => {
  // A real listener on loopback that never accepts: with its one-slot queue taken, a further connect hangs in SYN retries.
  const listener = spawn('python3', ['-c', 'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)'], { stdio: ['ignore', 'pipe', 'inherit'] });
  closers.push(() => listener.kill('SIGKILL'));
  const [line] = (await once(listener.stdout!, 'data')) as [Buffer];
  const port = Number(line.toString().trim());
  const filler = connect(port, '127.0.0.1');
  closers.push(() => filler.destroy());
  await once(filler, 'connect');

  const serve = createRequestHandler(process.pid, createLog('error'));
  let agentGaveUp: Promise<unknown> | undefined;
  const { client, agent } = await pair((op, args, connection) => {
    const answer = serve(op, args, connection);
    if (op === 'tcp.connect') agentGaveUp = answer.then(() => 'connected', (error: Error & { code?: string }) => error.code);
    return answer;
  }, { communicationTimeoutMs: 300 });
  await assert.rejects(client.connectTcp('127.0.0.1', port), { code: 'E_PROTOCOL_TIMEOUT' });
  assert.equal(await agentGaveUp, 'ECANCELED');
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(agent.openChannels, 0);
  assert.equal(client.connection.openChannels, 0);
});

test('file content that stops coming mid-transfer fails after the communication timeout', async () => {
  // Fault injection: an agent that says the file is too big for fs.get, answers the fetch, sends a little content,
  // then goes quiet without ending it.
  const { client } = await pair(async (op, args, connection) => {
    if (op === 'fs.get') return { stat };
    const channel = connection.attachChannel((args as { channel: number }).channel);
    channel.write(Buffer.alloc(1000, 7));
    return { stat };
  }, { communicationTimeoutMs: 250 });
  await assert.rejects(client.fetch('/var/log/half'), (error: Error & { code?: string }) => error.code === 'E_PROTOCOL_TIMEOUT' && /sent nothing more of \/var\/log\/half/.test(error.message));
  assert.equal(client.connection.openChannels, 0);
});

test('a stalled agent ends the client connection with E_PROTOCOL_STALLED, and pending requests fail with it', async () => {
  const sockets = await socketPair();
  closers.push(sockets.close);
  // Fault injection: a fake agent that says hello, then neither reads nor writes, with its socket left open.
  sockets.b.write(hello('stalled fake agent'));
  const client = await Connection.open(sockets.a, { role: 'client', software: 'test-client', handshakeTimeoutMs: 2000, requestTimeoutMs: 60_000, keepaliveIntervalMs: 100, keepaliveTimeoutMs: 300 });
  closers.push(() => client.close());
  const pending = client.request('fs.stat', { path: '/x', follow: true });
  const why = await client.closed;
  assert.equal(codeOf(why), 'E_PROTOCOL_STALLED');
  assert.equal(why?.message, 'the link to the agent stalled: no answer to a keepalive within 300 ms');
  await assert.rejects(pending, { code: 'E_PROTOCOL_STALLED' });
});

test('a link that hangs in both directions is noticed by both ends', async () => {
  const link = await relayedLink();
  closers.push(link.close);
  const quick = { handshakeTimeoutMs: 2000, keepaliveIntervalMs: 100, keepaliveTimeoutMs: 300 };
  const [client, agent] = await Promise.all([
    Connection.open(link.a, { role: 'client', software: 'test-client', ...quick }),
    Connection.open(link.b, { role: 'agent', software: 'test-agent', ...quick }),
  ]);
  closers.push(() => client.close(), () => agent.close());
  let closedEarly = false;
  void Promise.race([client.closed, agent.closed]).then(() => (closedEarly = true));
  // Healthy first: several keepalive periods pass without a false alarm.
  await sleep(1000);
  assert.ok(link.forwarded.aToB > 0 && link.forwarded.bToA > 0, 'keepalives crossed the link');
  assert.equal(closedEarly, false);

  link.stall();
  const [clientWhy, agentWhy] = await Promise.all([client.closed, agent.closed]);
  assert.match(clientWhy?.message ?? '', /^the link to the agent stalled/);
  assert.match(agentWhy?.message ?? '', /^the link to the proxy stalled/);
  assert.equal(codeOf(clientWhy), 'E_PROTOCOL_STALLED');
  assert.equal(codeOf(agentWhy), 'E_PROTOCOL_STALLED');
});

test('the real agent process exits, with default keepalives, when its client stops reading and writing', async (t) => {
  const agent = startAgentProcess();
  closers.push(agent.kill);
  // Fault injection: a fake client that says hello, then never reads or writes again, its end held open.
  agent.socket.write(hello('stalled fake client'));
  const start = Date.now();
  while (!agent.log().includes('serving')) await sleep(20);
  let guard: NodeJS.Timeout | undefined;
  const code = await Promise.race([agent.exited, new Promise((resolve) => (guard = setTimeout(() => resolve('still running after 30 s'), 30_000)))]);
  clearTimeout(guard);
  t.diagnostic(`the agent noticed the stalled client after ${Date.now() - start} ms`);
  assert.equal(code, 0, agent.log());
  assert.match(agent.log(), /exiting: connection failed: the link to the proxy stalled: no answer to a keepalive within 6 s/);
});
