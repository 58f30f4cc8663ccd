// The TypeScript side of the layer wire agrees with layer/include/doppel-wire.h: the C compiler reports the struct sizes.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { ADDR_SIZE, CONNECT_REQ_SIZE, CONNECT_RESP_SIZE, decodeAddr, decodeRequest, DIRENT_SIZE, encodeAddr, encodeAnswer, GAI_REQ_SIZE, Op, REQ_HEADER, RESP_HEADER, STAT_SIZE } from '../../src/proxy/layer-wire.ts';

test('struct sizes match the C header', () => {
  const dir = mkdtempSync(join(tmpdir(), 'doppel-wire-'));
  try {
    const include = fileURLToPath(new URL('../../layer/include/', import.meta.url));
    writeFileSync(join(dir, 'sizes.c'), `#include <stdio.h>
#include "doppel-wire.h"
int main(void) { printf("%zu %zu %zu %zu %zu %zu %zu %zu\\n", sizeof(struct dp_req_hdr), sizeof(struct dp_resp_hdr), sizeof(struct dp_stat), sizeof(struct dp_dirent), sizeof(struct dp_addr), sizeof(struct dp_gai_req), sizeof(struct dp_connect_req), sizeof(struct dp_connect_resp)); return 0; }`);
    execFileSync('cc', ['-I', include, '-o', join(dir, 'sizes'), join(dir, 'sizes.c')]);
    const sizes = execFileSync(join(dir, 'sizes'), { encoding: 'utf8' }).trim().split(' ').map(Number);
    assert.deepEqual(sizes, [REQ_HEADER, RESP_HEADER, STAT_SIZE, DIRENT_SIZE, ADDR_SIZE, GAI_REQ_SIZE, CONNECT_REQ_SIZE, CONNECT_RESP_SIZE]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('addresses round-trip, and IPv4-mapped IPv6 means IPv4', () => {
  assert.deepEqual(decodeAddr(encodeAddr({ family: 4, address: '198.18.64.12', port: 6379 }), 0), { family: 4, address: '198.18.64.12', port: 6379 });
  assert.deepEqual(decodeAddr(encodeAddr({ family: 6, address: '::ffff:198.18.0.1', port: 80 }), 0), { family: 4, address: '198.18.0.1', port: 80 });
  assert.equal(decodeAddr(encodeAddr({ family: 6, address: 'fd00::1', port: 1 }), 0).address, 'fd00:0:0:0:0:0:0:1');
});

test('answers carry errno and EAI codes as glibc numbers', () => {
  const stat = decodeRequest(Op.stat, Buffer.concat([Buffer.from([1, 0, 0, 0]), Buffer.from('/srv/x\0')]));
  assert.deepEqual(stat, { op: 'stat', follow: false, path: '/srv/x' });
  assert.equal(encodeAnswer(stat, { kind: 'error', code: 'ENOENT' }).readInt32LE(4), -2);
  const gai = decodeRequest(Op.getaddrinfo, Buffer.concat([Buffer.alloc(16), Buffer.from('redis\0')]));
  assert.equal(encodeAnswer(gai, { kind: 'error', code: 'EAI_NONAME' }).readInt32LE(4), -2);
  assert.equal(encodeAnswer(gai, { kind: 'error', code: 'EAI_AGAIN' }).readInt32LE(4), -3);
  const local = encodeAnswer(stat, { kind: 'local', path: '/other' });
  assert.equal(local.readInt32LE(4), 1);
  assert.equal(local.subarray(8).toString(), '/other\0');
  assert.throws(() => decodeRequest(Op.open, Buffer.from('no nul')), /payload|NUL/);
});
