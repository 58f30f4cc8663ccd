// Version gating both ways: the client sends nothing an older agent lacks (and the proxy says so for UDP and writes), the agent refuses what a newer client asks, and keepalives work with version 1 peers.
import assert from 'node:assert/strict';
import { constants as fsConstants } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createLog } from '../../src/agent/log.ts';
import { createRequestHandler } from '../../src/agent/serve.ts';
import { Connection } from '../../src/protocol/connection.ts';
import { encodeFrame, FrameDecoder } from '../../src/protocol/frame.ts';
import { decodeControl, encodeControl, PROTOCOL_VERSION, type ControlMessage } from '../../src/protocol/messages.ts';
import { connectAgent } from '../../src/proxy/agent-client.ts';
import { createFileWriteRequests } from '../../src/proxy/file-writes.ts';
import { createFileRequests } from '../../src/proxy/files.ts';
import { createStandIns } from '../../src/proxy/standins.ts';
import { createUdpRequests } from '../../src/proxy/udp.ts';
import { socketPair } from './pair.ts';

const closers: (() => void)[] = [];
after(() => closers.forEach((close) => close()));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Fault injection: a peer written frame by frame, to speak as a version this build is not. */
function rawPeer(socket: Socket, version: number, software: string) {
  const received: ControlMessage[] = [];
  const decoder = new FrameDecoder();
  const send = (message: ControlMessage) => socket.write(encodeFrame({ kind: 'control', body: encodeControl(message) }));
  socket.on('data', (chunk: Buffer) => {
    for (const frame of decoder.push(chunk)) if (frame.kind === 'control') received.push(decodeControl(frame.body));
  });
  send({ t: 'hello', protocol: 'doppel-agent', version, features: [], software });
  return { received, send };
}

test('the client refuses an operation the agent version lacks, before sending anything', async () => {
  const sockets = await socketPair();
  closers.push(sockets.close);
  const agent = rawPeer(sockets.b, 1, 'doppel-agent 0.0.1');
  const client = await Connection.open(sockets.a, { role: 'client', software: 'test-client', handshakeTimeoutMs: 2000 });
  closers.push(() => client.close());
  assert.equal(client.supports('fs.stat'), true);
  assert.equal(client.supports('fs.fetch'), false);
  await assert.rejects(client.request('fs.fetch', { path: '/etc/hosts', channel: 1 }), (error: Error & { code?: string; hint?: string }) => {
    assert.equal(error.code, 'E_PROTOCOL_UNSUPPORTED');
    assert.equal(error.message, 'the agent (doppel-agent 0.0.1) speaks protocol 1; fs.fetch needs protocol 2');
    assert.match(error.hint ?? '', /agent\.image/);
    return true;
  });
  await sleep(100);
  assert.deepEqual(agent.received.map((m) => m.t), ['hello']);
});

test('the agent answers an operation it does not know with ENOSYS naming it, and keeps serving', async () => {
  const sockets = await socketPair();
  closers.push(sockets.close);
  const client = rawPeer(sockets.a, 99, 'doppel 9.0.0');
  const agent = await Connection.open(sockets.b, { role: 'agent', software: 'test-agent', handshakeTimeoutMs: 2000, onRequest: createRequestHandler(process.pid, createLog('error')) });
  closers.push(() => agent.close());
  assert.equal(agent.peer.version, 99);
  client.send({ t: 'req', id: 1, op: 'fs.teleport', args: { path: '/' } });
  client.send({ t: 'req', id: 2, op: 'fs.stat', args: { path: '/', follow: true } });
  while (client.received.filter((m) => m.t === 'res').length < 2) await sleep(10);
  const answers = new Map(client.received.flatMap((m) => (m.t === 'res' ? [[m.id, m] as const] : [])));
  assert.deepEqual(answers.get(1), { t: 'res', id: 1, err: { code: 'ENOSYS', message: `unknown operation "fs.teleport": this side speaks protocol ${PROTOCOL_VERSION}, an older one than its peer` } });
  const stat = answers.get(2) as { ok: { mode: number } };
  assert.equal(stat.ok.mode & 0o170000, 0o040000);
});

test('keepalives need nothing new from a version 1 client: its error answer to ping proves the link', async () => {
  const sockets = await socketPair();
  closers.push(sockets.close);
  const client = rawPeer(sockets.a, 1, 'doppel 0.0.1');
  const agent = await Connection.open(sockets.b, { role: 'agent', software: 'test-agent', handshakeTimeoutMs: 2000, keepaliveIntervalMs: 50, keepaliveTimeoutMs: 150 });
  closers.push(() => agent.close());
  let answered = 0;
  // What a version 1 connection without a request handler answered to every request.
  sockets.a.on('data', () => {
    for (const m of client.received.splice(0)) {
      if (m.t !== 'req') continue;
      client.send({ t: 'res', id: m.id, err: { code: 'ENOSYS', message: `this side serves no requests (${m.op})` } });
      answered++;
    }
  });
  let closed = false;
  void agent.closed.then(() => (closed = true));
  await sleep(800);
  assert.ok(answered >= 4, `only ${answered} keepalives answered`);
  assert.equal(closed, false);
});

test('toward a version 4 agent, the proxy answers UDP to the target with ENETUNREACH and one line saying why, sending nothing', async () => {
  const sockets = await socketPair();
  closers.push(sockets.close);
  const agent = rawPeer(sockets.b, 4, 'doppel-agent 0.4.0');
  const client = await connectAgent(sockets.a, { handshakeTimeoutMs: 2000 });
  closers.push(() => client.close());
  assert.equal(client.connection.supports('udp.open'), false);
  const notices: string[] = [];
  const udp = createUdpRequests(client, async () => 'remote', (text) => notices.push(text));
  closers.push(() => udp.close());
  const target = { family: 4 as const, address: '198.18.64.13', port: 7007 };
  assert.deepEqual(await udp.udpRoute(target), { kind: 'error', code: 'ENETUNREACH' });
  assert.deepEqual(await udp.udpRoute(target), { kind: 'error', code: 'ENETUNREACH' });
  assert.deepEqual(notices, ['the agent (doppel-agent 0.4.0) speaks protocol 4: outgoing UDP through the target needs protocol 5, so the program\'s UDP to the target\'s network fails (use the agent of the same doppel version as the CLI, or --no-udp-outgoing)']);
  await assert.rejects(client.connection.request('udp.open', { channel: 1 }), { code: 'E_PROTOCOL_UNSUPPORTED', message: 'the agent (doppel-agent 0.4.0) speaks protocol 4; udp.open needs protocol 5' });
  await sleep(100);
  assert.deepEqual(agent.received.map((m) => m.t), ['hello']);
});

test('toward a version 4 agent every write answers EROFS and nothing is sent', async () => {
  const sockets = await socketPair();
  closers.push(sockets.close);
  const agent = rawPeer(sockets.b, 4, 'doppel-agent 0.4.0');
  const client = await connectAgent(sockets.a, { handshakeTimeoutMs: 2000 });
  closers.push(() => client.close());
  const policy = { decide: (path: string) => ({ action: 'remote' as const, path }) };
  const notices: string[] = [];
  const writes = createFileWriteRequests(client, policy, (text) => notices.push(text));
  // No directory is opened here, so its stand-ins' directory is never made.
  const files = createFileRequests(client, policy, writes.openForWrite, createStandIns(join(tmpdir(), 'doppel-unused-standins')));
  const erofs = { kind: 'error', code: 'EROFS' };
  assert.deepEqual(await files.open('/srv/out', fsConstants.O_WRONLY | fsConstants.O_CREAT, 0o644), erofs);
  assert.deepEqual(await writes.mkdir('/srv/d', 0o755), erofs);
  assert.deepEqual(await writes.unlink('/srv/x'), erofs);
  assert.deepEqual(await writes.rename('/srv/a', '/srv/b', false), erofs);
  assert.deepEqual(await writes.chmod('/srv/a', 0o600, true), erofs);
  assert.deepEqual(notices, ['the agent (doppel-agent 0.4.0) speaks protocol 4 and cannot write the target\'s files (protocol 5): writes fail with EROFS; use an agent.image of this doppel version']);
  await sleep(100);
  assert.deepEqual(agent.received.map((m) => m.t), ['hello']);
});
