// `dns.serveLayer`: a process target's agent (or a launcher's, on its client's machine) answers the layer's lookups
// itself, in the layer's wire format, on a Unix socket of the session's; only lookups, only while the link that asked
// lasts. A real agent against the test world, asked over a raw stream as libdoppel.so asks it.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { ADDR_SIZE, decodeAddr, errorStatus, GAI_REQ_SIZE, Op, REQ_HEADER, RESP_HEADER } from '../../src/proxy/layer-wire.ts';
import { needsRoot } from '../support/root.ts';
import { until } from '../support/until.ts';
import { createWorld, type World } from '../world/world.ts';
import { agentSession } from './agent-session.ts';

const gate = needsRoot('an agent answering the layer\'s lookups');

/** One request frame as the layer writes it (struct dp_req_hdr, then the payload). */
function frame(op: number, seq: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(REQ_HEADER);
  head.writeUInt32LE(payload.length, 0);
  head.writeUInt32LE(op, 4);
  head.writeUInt32LE(seq, 8);
  return Buffer.concat([head, payload]);
}

function lookupFrame(seq: number, name: string, family = 0): Buffer {
  const hints = Buffer.alloc(GAI_REQ_SIZE);
  hints.writeInt32LE(family, 0);
  return frame(Op.getaddrinfo, seq, Buffer.concat([hints, Buffer.from(`${name}\0`)]));
}

interface Reply {
  status: number;
  seq: number;
  body: Buffer;
}

/** Sends `request` and reads one answer (struct dp_resp_hdr, then its payload). */
function ask(socket: Socket, request: Buffer): Promise<Reply> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length < RESP_HEADER || got.length < RESP_HEADER + got.readUInt32LE(0)) return;
      socket.off('data', onData);
      resolve({ status: got.readInt32LE(4), seq: got.readUInt32LE(8), body: got.subarray(RESP_HEADER, RESP_HEADER + got.readUInt32LE(0)) });
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(request);
  });
}

function addresses(body: Buffer): string[] {
  const count = body.readUInt32LE(0);
  return Array.from({ length: count }, (_, i) => decodeAddr(body, 4 + i * ADDR_SIZE).address);
}

const open = (path: string) =>
  new Promise<Socket>((resolve, reject) => {
    const socket = connect(path, () => resolve(socket));
    socket.once('error', reject);
  });

describe('the agent answers the layer\'s lookups', gate, () => {
  let world: World;
  let dir: string;
  let closers: (() => unknown)[] = [];
  before(async () => {
    world = await createWorld();
  });
  after(async () => {
    await world?.destroy();
  });
  afterEach(async () => {
    for (const close of closers.reverse()) await close();
    closers = [];
    rmSync(dir, { recursive: true, force: true });
  });

  test('names as the target resolves them, localhost left to the layer, nothing but lookups, and the socket gone with the link', async () => {
    dir = mkdtempSync(join(tmpdir(), 'doppel-layer-dns-'));
    const path = join(dir, 'dns.sock');
    const { client } = await agentSession(world.target.pid, closers);
    assert.equal(await client.serveLayerDns(path), true);
    const socket = await open(path);
    closers.push(() => socket.destroy());
    const { redis, hostsAlias } = world.services;

    const full = await ask(socket, lookupFrame(1, redis.name));
    assert.deepEqual([full.status, full.seq, addresses(full.body)], [0, 1, [redis.address]]);
    // The target's search list, and its /etc/hosts.
    assert.deepEqual(addresses((await ask(socket, lookupFrame(2, redis.shortName, 2))).body), [redis.address]);
    assert.deepEqual(addresses((await ask(socket, lookupFrame(3, hostsAlias.name))).body), [hostsAlias.address]);
    // The world's nameserver refuses what it does not know: a temporary failure, as glibc would say.
    assert.equal((await ask(socket, lookupFrame(4, `nothing-${process.pid}.invalid`))).status, errorStatus('getaddrinfo', 'EAI_AGAIN'));
    assert.deepEqual(await ask(socket, lookupFrame(5, 'localhost')), { status: 1, seq: 5, body: Buffer.alloc(0) });
    // A path call is the proxy's to answer, not the agent's.
    assert.equal((await ask(socket, frame(Op.stat, 6, Buffer.from('\0\0\0\0/etc/hostname\0')))).status, errorStatus('stat', 'ENOSYS'));

    client.close();
    await until('the agent\'s socket to go with its link', () => (existsSync(path) ? undefined : true), 5000);
  });

  test('named with its client\'s process (a launcher\'s agent), only in that client\'s session directory, through its root', async () => {
    dir = mkdtempSync(join(tmpdir(), `doppel-${process.pid}-`));
    const stranger = mkdtempSync(join(tmpdir(), 'doppel-layer-dns-'));
    closers.push(() => rmSync(stranger, { recursive: true, force: true }));
    const { client } = await agentSession(world.target.pid, closers);
    const serve = (socket: string, pid: number) => client.connection.request('dns.serveLayer', { socket, client: pid });
    const refused = (error: Error & { code?: string }) => error.code === 'EACCES' && /is not a session directory of process/.test(error.message);
    // Another directory, another process's, a process that does not exist.
    await assert.rejects(serve(join(stranger, 'dns.sock'), process.pid), refused);
    await assert.rejects(serve(join(dir, 'dns.sock'), world.target.pid), refused);
    await assert.rejects(serve(join(dir, 'dns.sock'), 0x3fffffff), refused);
    assert.ok(!existsSync(join(stranger, 'dns.sock')));

    const path = join(dir, 'dns.sock');
    await serve(path, process.pid);
    const socket = await open(path);
    closers.push(() => socket.destroy());
    assert.deepEqual(addresses((await ask(socket, lookupFrame(1, world.services.redis.name))).body), [world.services.redis.address]);
  });

  test('a socket path that is not absolute is refused', async () => {
    dir = mkdtempSync(join(tmpdir(), 'doppel-layer-dns-'));
    const { client } = await agentSession(world.target.pid, closers);
    await assert.rejects(client.serveLayerDns('dns.sock'), (error: Error & { code?: string }) => error.code === 'EINVAL');
  });
});
