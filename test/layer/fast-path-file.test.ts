// The fast rules a process reads at load from the proxy's `fast-path` file: a local path is decided without asking,
// the process's hello goes out without its answer being waited for, and a file the layer cannot read whole or parse
// means every path is asked. The proxy here is a fake (it answers every request "local" and records it), since a
// real one never writes a damaged file.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeFastPath, Op } from '../../src/proxy/layer-wire.ts';
import { statUnderFakeProxy, type Asked } from './fake-proxy.ts';

const rules = encodeFastPath({ loopbackTcpLocal: true, remoteWrites: false, rules: [{ match: 'prefix', verdict: 'local', text: '/usr/' }] });

/** Runs `stat` on /usr/bin/env and /etc/hostname under the layer with `file` as the proxy's fast-path file. */
const run = (file: Buffer) => statUnderFakeProxy(['/usr/bin/env', '/etc/hostname'], { fastPathFile: file });

const asked = (ops: Asked[], path: string) => ops.some((o) => o.op === Op.stat && o.path === path);

test('rules read from the file: local paths are not asked, and the hello is not waited for', async () => {
  const { ops, stderr } = await run(rules);
  assert.match(stderr, /fast-path: 1 fast rules/);
  assert.ok(!asked(ops, '/usr/bin/env'));
  assert.ok(asked(ops, '/etc/hostname'));
  // One connection, its hello first; the answers after it were told apart from the hello's.
  assert.equal(ops[0]?.op, Op.hello);
  assert.equal(ops.filter(({ op }) => op === Op.hello).length, 1);
  assert.deepEqual(ops.filter(({ op }) => op === Op.stat).map(({ path }) => path), ['/etc/hostname']);
  assert.doesNotMatch(stderr, /dropped the answer/);
});

test('a damaged file: cut inside a rule, or longer than the layer reads, and every path is asked', async () => {
  const cut = await run(rules.subarray(0, rules.length - 2));
  assert.match(cut.stderr, /fast-path: malformed fast rules/);
  assert.ok(asked(cut.ops, '/usr/bin/env') && asked(cut.ops, '/etc/hostname'));
  // Too long to be one: the layer falls back to the hello, whose answer here carries no rules.
  const long = await run(Buffer.concat([rules, Buffer.alloc(64 * 1024)]));
  assert.doesNotMatch(long.stderr, /fast rules/);
  assert.ok(asked(long.ops, '/usr/bin/env') && asked(long.ops, '/etc/hostname'));
});
