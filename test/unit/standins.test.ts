// Stand-ins of remote directories on a real local file system: each open makes the stand-in hold exactly the remote
// entries, of the same kinds, whatever it held before; a linked directory that was opened stays a directory.
import assert from 'node:assert/strict';
import { lstatSync, mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createStandIns } from '../../src/proxy/standins.ts';

const DT_REG = 8;
const DT_DIR = 4;
const DT_LNK = 10;
const scratch = mkdtempSync(join(tmpdir(), 'doppel-standins-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const entry = (name: string, type: number) => ({ name, type, ino: 1 });
const kinds = (dir: string) =>
  Object.fromEntries(readdirSync(dir, { withFileTypes: true }).map((d) => [d.name, d.isDirectory() ? 'dir' : d.isSymbolicLink() ? 'link' : 'file']));

test('a stand-in mirrors the remote entries, and follows them as they change', async () => {
  const root = join(scratch, 'dirs');
  const standIns = createStandIns(root);
  const app = await standIns.mirror('/srv/app', [entry('a.txt', DT_REG), entry('data', DT_DIR), entry('current', DT_LNK), entry('gone', DT_REG)]);
  assert.equal(app, join(root, 'srv/app'));
  assert.deepEqual(kinds(app), { 'a.txt': 'file', data: 'dir', current: 'link', gone: 'file' });
  assert.equal(lstatSync(join(app, 'a.txt')).size, 0);
  // The linked directory is opened: its stand-in replaces the link.
  await standIns.mirror('/srv/app/current', [entry('flags', DT_REG)]);
  // Listed again: `gone` went, `a.txt` became a directory, the opened link stays the directory it became.
  await standIns.mirror('/srv/app/', [entry('a.txt', DT_DIR), entry('data', DT_DIR), entry('current', DT_LNK), entry('new', DT_LNK)]);
  assert.deepEqual(kinds(app), { 'a.txt': 'dir', data: 'dir', current: 'dir', new: 'link' });
  assert.deepEqual(kinds(join(app, 'current')), { flags: 'file' });
  assert.equal(readlinkSync(join(app, 'new')), '.doppel-remote-link');
});

test('names and paths cannot leave the stand-in directory', async () => {
  const root = join(scratch, 'confined');
  const standIns = createStandIns(root);
  const dir = await standIns.mirror('/../../x/../y', [entry('..', DT_DIR), entry('a/b', DT_REG), entry('', DT_REG), entry('ok', DT_REG)]);
  assert.equal(dir, join(root, 'y'));
  assert.deepEqual(kinds(dir), { ok: 'file' });
  assert.deepEqual(readdirSync(scratch).sort(), ['confined', 'dirs']);
});
