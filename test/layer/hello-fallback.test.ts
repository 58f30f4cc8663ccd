// A proxy that does not know the layer's hello (it closes the connection, as an older build's wire decoder does on an
// unknown op): the layer reconnects without it and asks the proxy about every path, so the program runs unchanged.
// The proxy here is a fake: both ship together, so an older proxy cannot be had for real.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Op } from '../../src/proxy/layer-wire.ts';
import { statUnderFakeProxy } from './fake-proxy.ts';

test('a failed hello: the layer falls back to asking the proxy about every path', async () => {
  const { ops, stderr } = await statUnderFakeProxy(['/usr/bin/env', '/usr/bin/env'], { closeOnHello: true });
  assert.doesNotMatch(stderr, /proxy is gone|fast rules/);
  // One hello only; both stats asked, none kept local by rules the layer never got.
  assert.equal(ops.filter(({ op }) => op === Op.hello).length, 1);
  assert.equal(ops.filter(({ op, path }) => op === Op.stat && path === '/usr/bin/env').length, 2);
});
