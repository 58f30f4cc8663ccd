// The target's /etc/hosts as glibc reads it: whole names, any case, a trailing dot ignored, comments skipped, the
// family asked for, and the first name of the first matching line as the canonical name.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hostsLookup } from '../../src/agent/dns.ts';

const hosts = ['127.0.0.1 localhost', '# 10.0.0.9 db', '10.0.0.1 mydb.internal mydb', '10.0.0.2 DB.Internal db # the database', 'fd00::2 db.internal db', ''].join('\n');

test('a name is found by whole name in any case, in both families, with its line\'s first name as canonical', () => {
  assert.deepEqual(hostsLookup(hosts, 'db', 0), { addresses: [{ address: '10.0.0.2', family: 4 }, { address: 'fd00::2', family: 6 }], canonicalName: 'DB.Internal' });
  assert.deepEqual(hostsLookup(hosts, 'DB.internal.', 4), { addresses: [{ address: '10.0.0.2', family: 4 }], canonicalName: 'DB.Internal' });
  assert.deepEqual(hostsLookup(hosts, 'db', 6), { addresses: [{ address: 'fd00::2', family: 6 }], canonicalName: 'db.internal' });
});

test('part of a name, a commented line or a name in no line is not found', () => {
  assert.equal(hostsLookup(hosts, 'my', 0), undefined);
  assert.equal(hostsLookup(hosts, 'internal', 0), undefined);
  assert.equal(hostsLookup('# 10.0.0.9 cache\n', 'cache', 0), undefined);
  assert.equal(hostsLookup(hosts, 'cache', 0), undefined);
});
