// Where writes go: mode read keeps them local (as mirrord), write sends them to the target except the default-local
// paths, read_write entries are written remotely in any mode but local, and read_only entries are written locally.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createFsPolicy } from '../../src/config/fs-policy.ts';
import { resolveConfig } from '../../src/config/load.ts';

const cwd = mkdtempSync(join(tmpdir(), 'doppel-fs-write-'));
after(() => rmSync(cwd, { recursive: true, force: true }));
const paths = { cwd: '/work/project', home: '/home/dev', tmpdir: '/tmp', executable: '/usr/bin/node' };

/** The policy of a mirrord-style config file with this `feature.fs`, loaded as `doppel exec -f` does. */
async function policy(fs: Record<string, unknown>) {
  writeFileSync(join(cwd, 'config.json'), JSON.stringify({ feature: { fs } }));
  const { config } = await resolveConfig({ cwd, configFile: 'config.json', env: {}, flags: {} });
  return createFsPolicy(config.feature.fs, paths);
}
const write = (p: Awaited<ReturnType<typeof policy>>, path: string) => p.decide(path, { write: true });
const read = (p: Awaited<ReturnType<typeof policy>>, path: string) => p.decide(path, { write: false }).action;

test('mode read: reads from the target, writes stay local', async () => {
  const p = await policy({ mode: 'read' });
  assert.equal(read(p, '/srv/app/data/out'), 'remote');
  assert.equal(write(p, '/srv/app/data/out').action, 'local');
  // The target's identity files are read from it but not written there.
  assert.equal(read(p, '/etc/hosts'), 'remote');
  assert.equal(write(p, '/etc/hosts').action, 'local');
});

test('mode write: writes go to the target, except the default-local paths', async () => {
  const p = await policy({ mode: 'write' });
  assert.equal(write(p, '/srv/app/data/out').action, 'remote');
  assert.equal(write(p, '/var/log/app.log').action, 'remote');
  assert.equal(write(p, '/etc/hosts').action, 'remote');
  for (const local of ['/tmp/scratch', '/work/project/dist/out.js', '/usr/lib/x.so', '/srv/app/node_modules/.cache/x', '/home/dev/.npmrc']) {
    assert.equal(write(p, local).action, 'local', local);
  }
  assert.deepEqual(write(p, '/srv/app/data/../../../etc/passwd'), { action: 'local', path: '/etc/passwd' });
});

test('read_write entries are written on the target in mode read and localwithoverrides too', async () => {
  for (const mode of ['read', 'write', 'localwithoverrides']) {
    const p = await policy({ mode, read_write: ['^/srv/app/uploads', '^/tmp/shared'] });
    assert.equal(write(p, '/srv/app/uploads/a.png').action, 'remote', mode);
    // Even under a default-local root: the user's list comes first.
    assert.equal(write(p, '/tmp/shared/lock').action, 'remote', mode);
    assert.equal(write(p, '/srv/app/other').action, mode === 'write' ? 'remote' : 'local', mode);
  }
  assert.equal(write(await policy({ mode: 'local', read_write: ['^/srv/app/uploads'] }), '/srv/app/uploads/a.png').action, 'local');
});

test('read_only entries are read from the target and written locally, in mode write too', async () => {
  const p = await policy({ mode: 'write', read_only: ['^/srv/app/config'] });
  assert.equal(read(p, '/srv/app/config/settings.json'), 'remote');
  assert.equal(write(p, '/srv/app/config/settings.json').action, 'local');
  assert.equal(write(p, '/srv/app/data/out').action, 'remote');
});

test('not_found comes before read_write, and mapping rewrites the path a write goes to', async () => {
  const p = await policy({ mode: 'write', not_found: ['^/srv/secret'], read_write: ['^/srv/secret'], mapping: { '^/data/(.*)': '/srv/app/data/$1' } });
  assert.equal(write(p, '/srv/secret/key').action, 'not_found');
  assert.deepEqual(write(p, '/data/out'), { action: 'remote', path: '/srv/app/data/out' });
});
