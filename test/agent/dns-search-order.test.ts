// The agent asks the search-list candidates of a name at once (a single label: its first candidate alone, then the
// others), and still answers as glibc would: with the first candidate, in resolv.conf's order, that has addresses,
// however late its answer comes. A real UDP nameserver on loopback answers each candidate after its own delay.
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createDns } from '../../src/agent/dns.ts';

/** What the nameserver knows: an A record (or none, NXDOMAIN) and how long it takes to say so. */
type Zone = Record<string, { address?: string; delayMs: number }>;

const made: string[] = [];
const servers: Socket[] = [];
after(() => {
  made.forEach((d) => rmSync(d, { recursive: true, force: true }));
  servers.forEach((s) => s.close());
});

/** The first question's name, and where the question ends. */
function question(packet: Buffer): { name: string; end: number } {
  const labels: string[] = [];
  let at = 12;
  while (packet[at]! > 0) {
    labels.push(packet.subarray(at + 1, at + 1 + packet[at]!).toString('ascii'));
    at += 1 + packet[at]!;
  }
  return { name: labels.join('.').toLowerCase(), end: at + 5 };
}

function answer(query: Buffer, address: string | undefined): Buffer {
  const { end } = question(query);
  const header = Buffer.from(query.subarray(0, 12));
  header.writeUInt16BE(0x8180 | (address ? 0 : 3), 2); // a response, recursion available; NXDOMAIN without an address
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(address ? 1 : 0, 6);
  header.writeUInt32BE(0, 8);
  const parts = [header, query.subarray(12, end)];
  if (address) {
    const record = Buffer.alloc(16);
    record.writeUInt16BE(0xc00c, 0); // the question's name
    record.writeUInt16BE(1, 2); // A
    record.writeUInt16BE(1, 4); // IN
    record.writeUInt32BE(60, 6);
    record.writeUInt16BE(4, 10);
    address.split('.').forEach((octet, i) => record.writeUInt8(Number(octet), 12 + i));
    parts.push(record);
  }
  return Buffer.concat(parts);
}

async function nameserver(zone: Zone): Promise<{ port: number; asked: string[]; askedAt: number[] }> {
  const socket = createSocket('udp4');
  servers.push(socket);
  const asked: string[] = [];
  const askedAt: number[] = [];
  socket.on('message', (query, from) => {
    const { name } = question(query);
    asked.push(name);
    askedAt.push(performance.now());
    const entry = zone[name] ?? { delayMs: 0 };
    setTimeout(() => socket.send(answer(query, entry.address), from.port, from.address), entry.delayMs);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return { port: socket.address().port, asked, askedAt };
}

function targetRoot(port: number): string {
  const root = mkdtempSync(join(tmpdir(), 'doppel-dns-'));
  made.push(root);
  mkdirSync(join(root, 'etc'));
  writeFileSync(join(root, 'etc', 'hosts'), '127.0.0.1 localhost\n');
  // c-ares takes a port after the address; glibc would not, but only the agent reads this file here.
  writeFileSync(join(root, 'etc', 'resolv.conf'), `nameserver 127.0.0.1:${port}\nsearch a.example b.example\noptions ndots:5 timeout:2 attempts:1\n`);
  return root;
}

test('the first candidate in search order that has addresses wins, even when a later one answers first', async () => {
  const { port, asked, askedAt } = await nameserver({
    'db.x.a.example': { delayMs: 300 },
    'db.x.b.example': { address: '10.0.0.2', delayMs: 100 },
    'db.x': { address: '10.0.0.3', delayMs: 0 },
  });
  const lookup = createDns(targetRoot(port));
  const found = await lookup({ name: 'db.x', family: 4 });
  assert.deepEqual(found, { addresses: [{ address: '10.0.0.2', family: 4 }], canonicalName: 'db.x.b.example' });
  assert.deepEqual([...asked].sort(), ['db.x', 'db.x.a.example', 'db.x.b.example']);
  // At once: every candidate was asked long before the first one's answer (300 ms) came.
  assert.ok(Math.max(...askedAt) - Math.min(...askedAt) < 250, `candidates asked ${askedAt.map((t) => (t - askedAt[0]!).toFixed(1)).join(', ')} ms apart`);
});

test('a single label found under the first search domain asks nothing else', async () => {
  const { port, asked } = await nameserver({ 'db.a.example': { address: '10.0.0.1', delayMs: 0 }, db: { address: '10.0.0.3', delayMs: 0 } });
  const lookup = createDns(targetRoot(port));
  assert.deepEqual(await lookup({ name: 'db', family: 4 }), { addresses: [{ address: '10.0.0.1', family: 4 }], canonicalName: 'db.a.example' });
  assert.deepEqual(asked, ['db.a.example']);
});

test('a single label not under the first search domain is found under a later one, in search order', async () => {
  const { port, asked } = await nameserver({
    'db.a.example': { delayMs: 50 },
    'db.b.example': { address: '10.0.0.2', delayMs: 100 },
    db: { address: '10.0.0.3', delayMs: 0 },
  });
  const lookup = createDns(targetRoot(port));
  assert.deepEqual(await lookup({ name: 'db', family: 4 }), { addresses: [{ address: '10.0.0.2', family: 4 }], canonicalName: 'db.b.example' });
  assert.deepEqual(asked.slice(0, 1), ['db.a.example']);
  assert.deepEqual([...asked].sort(), ['db', 'db.a.example', 'db.b.example']);
});

test('a name with no addresses under any candidate is not found', async () => {
  const { port } = await nameserver({});
  const lookup = createDns(targetRoot(port));
  await assert.rejects(lookup({ name: 'nowhere', family: 4 }), { code: 'ENOTFOUND' });
});

test('an address is its own answer and asks nothing; a name of digits and dots is still asked', async () => {
  const { port, asked } = await nameserver({ '1.2.3.a.example': { address: '10.0.0.4', delayMs: 0 } });
  const lookup = createDns(targetRoot(port));
  assert.deepEqual(await lookup({ name: '10.1.2.3', family: 0 }), { addresses: [{ address: '10.1.2.3', family: 4 }], canonicalName: '10.1.2.3' });
  assert.deepEqual(await lookup({ name: 'fd00::1', family: 0 }), { addresses: [{ address: 'fd00::1', family: 6 }], canonicalName: 'fd00::1' });
  assert.deepEqual(asked, []);
  assert.deepEqual(await lookup({ name: '1.2.3', family: 4 }), { addresses: [{ address: '10.0.0.4', family: 4 }], canonicalName: '1.2.3.a.example' });
});
