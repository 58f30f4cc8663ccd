// feature.hostname end to end: programs under bin/doppel see the target's hostname through gethostname and uname.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { execIn, ok } from './run-doppel.ts';
import { suiteWorld } from './suite-world.ts';

const gate = needsRoot('feature.hostname against a process target');

/** One line per way of asking: hostname(1), uname -n, python's gethostname and platform.node, node's os.hostname, and a child whose environment was emptied. */
const askAll = [
  'hostname',
  'uname -n',
  `python3 -c 'import socket, platform; print(socket.gethostname()); print(platform.node())'`,
  `node -e 'console.log(require("os").hostname())'`,
  'env -i /bin/hostname',
].join(' && ');

describe('feature.hostname', gate, () => {
  const world = suiteWorld();
  let dir: string;
  const pid = () => world().target.pid;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'doppel-hostname-'));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('hostname, uname, python3 and node say the target\'s hostname (the default)', async () => {
    assert.notEqual(world().target.hostname, hostname());
    const out = ok(await execIn(pid(), ['sh', '-c', askAll]));
    assert.deepEqual(out.trim().split('\n'), Array(6).fill(world().target.hostname));
  });

  test('with hostname: false they say the local one', async () => {
    const config = join(dir, 'no-hostname.json');
    writeFileSync(config, JSON.stringify({ feature: { hostname: false } }));
    const out = ok(await execIn(pid(), ['sh', '-c', askAll], { flags: ['-f', config] }));
    assert.deepEqual(out.trim().split('\n'), Array(6).fill(hostname()));
  });
});
