// The agent asks every search-list candidate of a name at once, and still answers as glibc would: with the first
// candidate, in resolv.conf's order, that has addresses, however late its answer comes. Its own UDP query gives way
// to c-ares for anything but a plain answer, and for a lost one. A real UDP nameserver on loopback answers each
// candidate after its own delay, or misbehaves as a test asks.
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createDns } from '../../src/agent/dns.ts';
import { parseNameserver } from '../../src/agent/dns-udp.ts';

/** What the nameserver knows: an A record (or none, NXDOMAIN) and how long it takes to say so. */
type Zone = Record<string, { address?: string; delayMs: number }>;
/** What the nameserver does with the `nth` (from 1) query for a name: answer, ignore it, or answer SERVFAIL. */
type Behaviour = (name: string, nth: number) => 'answer' | 'drop' | 'servfail';

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

function answer(query: Buffer, address: string | undefined, rcode = address ? 0 : 3): Buffer {
  const { end } = question(query);
  const header = Buffer.from(query.subarray(0, 12));
  header.writeUInt16BE(0x8180 | rcode, 2); // a response, recursion available; NXDOMAIN without an address
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

/** A nameserver on loopback; `asked` lists each query's name, `from` the source port it came from. */
async function nameserver(zone: Zone, behave: Behaviour = () => 'answer'): Promise<{ port: number; asked: string[]; from: number[] }> {
  const socket = createSocket('udp4');
  servers.push(socket);
  const asked: string[] = [];
  const ports: number[] = [];
  socket.on('message', (query, from) => {
    const { name } = question(query);
    asked.push(name);
    ports.push(from.port);
    const entry = zone[name] ?? { delayMs: 0 };
    const what = behave(name, asked.filter((one) => one === name).length);
    if (what === 'drop') return;
    setTimeout(() => socket.send(answer(query, entry.address, what === 'servfail' ? 2 : undefined), from.port, from.address), entry.delayMs);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return { port: socket.address().port, asked, from: ports };
}

function targetRoot(port: number, timeoutS = 2): string {
  const root = mkdtempSync(join(tmpdir(), 'doppel-dns-'));
  made.push(root);
  mkdirSync(join(root, 'etc'));
  writeFileSync(join(root, 'etc', 'hosts'), '127.0.0.1 localhost\n');
  // c-ares takes a port after the address; glibc would not, but only the agent reads this file here.
  writeFileSync(join(root, 'etc', 'resolv.conf'), `nameserver 127.0.0.1:${port}\nsearch a.example b.example\noptions ndots:5 timeout:${timeoutS} attempts:2\n`);
  return root;
}

test('the first candidate in search order that has addresses wins, even when a later one answers first', async () => {
  const { port, asked, from } = await nameserver({
    'db.a.example': { delayMs: 60 },
    'db.b.example': { address: '10.0.0.2', delayMs: 30 },
    db: { address: '10.0.0.3', delayMs: 0 },
  });
  const lookup = createDns(targetRoot(port));
  const found = await lookup({ name: 'db', family: 4 });
  assert.deepEqual(found, { addresses: [{ address: '10.0.0.2', family: 4 }], canonicalName: 'db.b.example' });
  assert.deepEqual([...asked].sort(), ['db', 'db.a.example', 'db.b.example']);
  // The agent's own UDP socket asked them all (c-ares uses a socket of its own per query).
  assert.equal(new Set(from).size, 1);
});

test('a name with no addresses under any candidate is not found', async () => {
  const { port } = await nameserver({});
  const lookup = createDns(targetRoot(port));
  await assert.rejects(lookup({ name: 'nowhere', family: 4 }), { code: 'ENOTFOUND' });
});

test('an answer that is not a plain one (SERVFAIL) is asked again by c-ares, which gets the addresses', async () => {
  const { port, asked } = await nameserver({ 'db.a.example': { address: '10.0.0.1', delayMs: 0 } }, (name, nth) => (name === 'db.a.example' && nth === 1 ? 'servfail' : 'answer'));
  const lookup = createDns(targetRoot(port));
  assert.deepEqual(await lookup({ name: 'db', family: 4 }), { addresses: [{ address: '10.0.0.1', family: 4 }], canonicalName: 'db.a.example' });
  assert.equal(asked.filter((name) => name === 'db.a.example').length, 2, 'asked once over UDP, once by c-ares');
});

test('a lost query is asked again long before resolv.conf\'s timeout, and that nameserver is left to c-ares from then on', async () => {
  const { port, asked, from } = await nameserver({ 'db.a.example': { address: '10.0.0.1', delayMs: 0 } }, (name, nth) => (name === 'db.a.example' && nth === 1 ? 'drop' : 'answer'));
  // A 5 s timeout, as glibc's default: the lookup must not wait for it.
  const lookup = createDns(targetRoot(port, 5));
  const started = Date.now();
  assert.deepEqual(await lookup({ name: 'db', family: 4 }), { addresses: [{ address: '10.0.0.1', family: 4 }], canonicalName: 'db.a.example' });
  assert.ok(Date.now() - started < 2500, `answered after ${Date.now() - started} ms, not after the 5 s timeout`);
  // Once the lost query's own 5 s have passed, every later query goes through c-ares alone: one query per name, none
  // from the agent's UDP socket (the source port of the first, lost, query).
  await new Promise((resolve) => setTimeout(resolve, 5200));
  const before = asked.length;
  await lookup({ name: 'db', family: 4 });
  assert.deepEqual(asked.slice(before).sort(), ['db', 'db.a.example', 'db.b.example']);
  assert.ok(!from.slice(before).includes(from[0]!), 'asked by c-ares, not over the UDP socket');
});

test('resolv.conf nameservers as c-ares reads them; IPv6 as an answer\'s source reads it; a scoped one is left to c-ares', () => {
  assert.deepEqual(parseNameserver('10.96.0.10'), { address: '10.96.0.10', port: 53, family: 4 });
  assert.deepEqual(parseNameserver('127.0.0.1:5353'), { address: '127.0.0.1', port: 5353, family: 4 });
  assert.deepEqual(parseNameserver('fd00:0:0::a'), { address: 'fd00::a', port: 53, family: 6 });
  assert.deepEqual(parseNameserver('[fd00::a]:5353'), { address: 'fd00::a', port: 5353, family: 6 });
  assert.equal(parseNameserver('fe80::1%eth0'), undefined);
  assert.equal(parseNameserver('ns.example'), undefined);
});
