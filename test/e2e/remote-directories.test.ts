// bash and coreutils on the target's directories under doppel print what they print inside the target itself:
// ls -la, stat, find (fts), du (fts), and cp -r copies a remote tree into a local directory; in write mode,
// mkdir -p and rm -r (which walk by directory descriptor) change the target's tree.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { execIn } from './run-doppel.ts';
import { suiteWorld } from './suite-world.ts';

describe('coreutils on remote directories', needsRoot('doppel exec against a process target'), () => {
  const world = suiteWorld();

  /** The same shell command under doppel and in the target's own mount namespace. */
  async function both(command: string): Promise<{ doppel: string; target: string }> {
    const result = await execIn(world().target.pid, ['bash', '-c', command]);
    assert.equal(result.status, 0, `${command}: ${result.stderr}`);
    const target = execFileSync('nsenter', ['-t', String(world().target.pid), '-m', '--', 'bash', '-c', command], { encoding: 'utf8' });
    return { doppel: result.stdout, target };
  }

  // Listing order is the directory's own (the stand-in's under doppel), so listings are compared sorted.
  const cases: [string, string][] = [
    ['ls -la', 'ls -la /srv/tree /srv/tree/a /srv/tree/a/b'],
    ['stat', "stat -c '%n %s %F %h %u %g %i %Y %A %N' /srv/tree /srv/tree/a /srv/tree/a/one.txt /srv/tree/link"],
    ['find', 'find /srv/tree | sort; find /srv/tree -type f -name "*.txt" | sort; find /srv/tree -mindepth 2 -type d | sort'],
    ['du', 'du -a /srv/tree | sort -k2; du -sb /srv/tree; du -s --inodes /srv/tree'],
  ];
  for (const [name, command] of cases) {
    test(`${name} says what it says in the target`, async () => {
      const { doppel, target } = await both(command);
      assert.ok(doppel.includes('/srv/tree'), doppel);
      assert.equal(doppel, target);
    });
  }

  test('cp -r copies a remote tree into a local directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'doppel-cp-'));
    try {
      const result = await execIn(world().target.pid, ['cp', '-r', world().target.tree, join(dir, 'copy')]);
      assert.equal(result.status, 0, result.stderr);
      const copied = execFileSync('find', [join(dir, 'copy'), '-type', 'f'], { encoding: 'utf8' }).trim().split('\n').sort();
      const expected = Object.keys(world().target.files).filter((path) => path.startsWith(`${world().target.tree}/`));
      assert.deepEqual(copied, expected.map((path) => join(dir, 'copy', relative(world().target.tree, path))).sort());
      for (const path of expected) assert.equal(readFileSync(join(dir, 'copy', relative(world().target.tree, path)), 'utf8'), world().target.files[path]);
      assert.ok(lstatSync(join(dir, 'copy', 'link')).isSymbolicLink());
      assert.equal(readlinkSync(join(dir, 'copy', 'link')), 'a/one.txt');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('in write mode, mkdir -p and rm -r work on the target\'s tree through directory descriptors', async () => {
    const inTarget = (command: string) => execFileSync('nsenter', ['-t', String(world().target.pid), '-m', '--', 'sh', '-c', command], { encoding: 'utf8' });
    const made = await execIn(world().target.pid, ['sh', '-c', 'mkdir -p /srv/made/x/y && echo deep > /srv/made/x/y/file'], { flags: ['--fs-mode', 'write'] });
    assert.equal(made.status, 0, made.stderr);
    assert.equal(inTarget('find /srv/made | sort; cat /srv/made/x/y/file'), '/srv/made\n/srv/made/x\n/srv/made/x/y\n/srv/made/x/y/file\ndeep\n');
    const removed = await execIn(world().target.pid, ['rm', '-r', '/srv/made'], { flags: ['--fs-mode', 'write'] });
    assert.equal(removed.status, 0, removed.stderr);
    assert.equal(inTarget('test -e /srv/made && echo still there || echo gone'), 'gone\n');
  });
});
