// The proxy's memory of which names the program's lookups gave which addresses.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createResolvedNames, normalAddress } from '../../src/proxy/resolved-names.ts';

test('names are found by address, whatever spelling the address comes in', () => {
  const names = createResolvedNames();
  names.record('DB.shop.svc.cluster.local.', ['198.18.64.13', 'fd00:198:18::13'], 'remote');
  names.record('db-local', ['198.18.64.13'], 'local');
  assert.deepEqual(names.namesOf('::ffff:198.18.64.13'), ['db.shop.svc.cluster.local', 'db-local']);
  assert.deepEqual(names.namesOf('fd00:198:18:0:0:0:0:13'), ['db.shop.svc.cluster.local']);
  assert.equal(names.remoteNameOf('198.18.64.13'), 'db.shop.svc.cluster.local');
  assert.equal(names.remoteNameOf('198.18.64.14'), undefined);
  assert.deepEqual(names.namesOf('198.18.64.14'), []);
});

test('the latest remote lookup names an address; old addresses are forgotten past the bound', () => {
  const names = createResolvedNames();
  names.record('a.example', ['10.0.0.1'], 'remote');
  names.record('b.example', ['10.0.0.1'], 'remote');
  assert.equal(names.remoteNameOf('10.0.0.1'), 'b.example');
  for (let i = 0; i < 5000; i++) names.record(`n${i}`, [`10.1.${i >> 8}.${i & 255}`], 'remote');
  assert.deepEqual(names.namesOf('10.0.0.1'), []);
  assert.deepEqual(names.namesOf('10.1.19.135'), ['n4999']);
});

test('normalAddress: one spelling per address', () => {
  assert.equal(normalAddress('::FFFF:1.2.3.4'), '1.2.3.4');
  assert.equal(normalAddress('::ffff:102:304'), '1.2.3.4');
  assert.equal(normalAddress('FD00:0198:0018:0:0:0:0:1'), 'fd00:198:18::1');
  assert.equal(normalAddress('198.18.0.1'), '198.18.0.1');
});
