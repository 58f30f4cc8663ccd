// The agent's path walk stays inside the target's root: `..`, absolute and relative symlinks, and loops cannot leave it.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createFiles } from '../../src/agent/files.ts';
import { resolveInRoot } from '../../src/agent/root-path.ts';

const made: string[] = [];
after(() => made.forEach((d) => rmSync(d, { recursive: true, force: true })));

function makeRoot(): string {
  const outside = mkdtempSync(join(tmpdir(), 'doppel-outside-'));
  made.push(outside);
  writeFileSync(join(outside, 'host-secret'), 'host');
  const root = join(outside, 'root');
  mkdirSync(join(root, 'etc'), { recursive: true });
  mkdirSync(join(root, 'app'));
  writeFileSync(join(root, 'etc', 'passwd'), 'target passwd\n');
  writeFileSync(join(root, 'host-secret'), 'target copy\n');
  symlinkSync('/etc/passwd', join(root, 'app', 'abs-link'));
  symlinkSync('../../../host-secret', join(root, 'app', 'rel-escape'));
  symlinkSync('/app/loop-b', join(root, 'app', 'loop-a'));
  symlinkSync('/app/loop-a', join(root, 'app', 'loop-b'));
  return root;
}

test('.. and symlinks resolve inside the root, never above it', async () => {
  const root = makeRoot();
  assert.equal((await resolveInRoot(root, '/../../../etc/passwd', true)).host, `${root}/etc/passwd`);
  assert.equal((await resolveInRoot(root, '/app/abs-link', true)).inside, '/etc/passwd');
  assert.equal((await resolveInRoot(root, '/app/rel-escape', true)).inside, '/host-secret');
  assert.equal((await resolveInRoot(root, '/app/abs-link', false)).inside, '/app/abs-link');
  const files = createFiles(root);
  const read = await files.read({ path: '/app/rel-escape', offset: 0, length: 1024 });
  assert.equal(Buffer.from(read.data).toString(), 'target copy\n');
  assert.equal((await files.realpath({ path: '/app/../app/abs-link' })).path, '/etc/passwd');
  assert.equal((await files.readlink({ path: '/app/abs-link' })).target, '/etc/passwd');
});

test('symlink loops are ELOOP and missing paths ENOENT', async () => {
  const root = makeRoot();
  const files = createFiles(root);
  await assert.rejects(files.stat({ path: '/app/loop-a', follow: true }), { code: 'ELOOP' });
  await assert.rejects(files.stat({ path: '/app/missing', follow: true }), { code: 'ENOENT' });
  await assert.rejects(files.stat({ path: '/app/missing/deeper', follow: true }), { code: 'ENOENT' });
  assert.equal((await files.stat({ path: '/app/loop-a', follow: false })).mode & 0o170000, 0o120000);
});
