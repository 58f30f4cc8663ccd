// The datagram framing of udp.open channels: golden bytes, any datagrams cut at any points come back whole, garbage is a ProtocolError.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import fc from 'fast-check';
import { DatagramDecoder, encodeDatagram, MAX_DATAGRAM, type Datagram } from '../../src/protocol/datagrams.ts';
import { ProtocolError } from '../../src/protocol/errors.ts';
import { encodeFrame } from '../../src/protocol/frame.ts';
import { decodeControl, encodeControl } from '../../src/protocol/messages.ts';

const golden = (name: string) => Buffer.from(readFileSync(new URL(`./fixtures/${name}.hex`, import.meta.url), 'utf8').replace(/\s+/g, ''), 'hex');

test('udp.open and a datagram match the committed golden bytes', () => {
  // Protocol 5: a UDP socket on channel 3, and a datagram to 198.18.64.13:7007 on it.
  const open = { t: 'req', id: 7, op: 'udp.open', args: { channel: 3 } } as const;
  assert.deepEqual(encodeFrame({ kind: 'control', body: encodeControl(open) }), golden('control-req-udp-open'));
  assert.deepEqual(decodeControl(golden('control-req-udp-open').subarray(5)), open);
  assert.deepEqual(encodeDatagram({ address: '198.18.64.13', port: 7007, data: Buffer.from('ping') }), golden('datagram-198.18.64.13-7007-ping'));
});

const datagramArb: fc.Arbitrary<Datagram> = fc.record({
  address: fc.oneof(fc.ipV4(), fc.ipV6()),
  port: fc.nat({ max: 65535 }),
  data: fc.uint8Array({ maxLength: 2000 }).map((bytes) => Buffer.from(bytes)),
});

test('any datagrams, cut at any points, decode to the same datagrams', () => {
  fc.assert(
    fc.property(fc.array(datagramArb, { maxLength: 20 }), fc.array(fc.nat({ max: 50_000 }), { maxLength: 10 }), (datagrams, cuts) => {
      const stream = Buffer.concat(datagrams.map(encodeDatagram));
      const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
      const decoder = new DatagramDecoder();
      const out: Datagram[] = [];
      let from = 0;
      for (const point of [...points, stream.length]) {
        out.push(...decoder.push(stream.subarray(from, point)));
        from = point;
      }
      const plain = (d: Datagram) => ({ address: d.address, port: d.port, data: Buffer.from(d.data) });
      assert.deepEqual(out.map(plain), datagrams.map(plain));
    }),
  );
});

test('the largest datagram passes; a record larger than any datagram, or an address past its record, is refused', () => {
  const big = { address: '::1', port: 1, data: Buffer.alloc(MAX_DATAGRAM, 7) };
  assert.equal(new DatagramDecoder().push(encodeDatagram(big))[0]!.data.length, MAX_DATAGRAM);
  assert.throws(() => encodeDatagram({ ...big, data: Buffer.alloc(MAX_DATAGRAM + 1) }), ProtocolError);
  const huge = Buffer.from([0x7f, 0xff, 0xff, 0xff]);
  assert.throws(() => new DatagramDecoder().push(huge), (error: unknown) => error instanceof ProtocolError && /record of \d+ bytes/.test(error.message));
  const lying = Buffer.from([0, 0, 0, 4, 0, 53, 200, 1]);
  assert.throws(() => new DatagramDecoder().push(lying), (error: unknown) => error instanceof ProtocolError && /longer than its record/.test(error.message));
});
