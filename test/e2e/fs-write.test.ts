// Write mode end to end: real programs (sh, coreutils, python3, node) under bin/doppel change the target's files, which
// are read back from inside the target's mount namespace; mode read changes nothing there.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { leftoversAfter } from './leftovers.ts';
import { execIn, ok } from './run-doppel.ts';
import { inTarget, targetTree } from './target-files.ts';

/** Waits until `pid` runs as `uid` (setpriv has exec'd). */
async function waitForUser(pid: number, uid: number): Promise<void> {
  for (let tries = 0; tries < 100; tries++) {
    const status = existsSync(`/proc/${pid}/status`) ? readFileSync(`/proc/${pid}/status`, 'utf8') : '';
    if (new RegExp(`^Uid:\\s+${uid}\\s`, 'm').test(status) && /^Name:\s+sleep$/m.test(status)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`process ${pid} never ran as uid ${uid}`);
}

describe('write mode (--fs-mode write)', needsRoot('doppel exec against a process target'), () => {
  let world: World;
  let pid: number;
  let dir: string;
  const write = (command: string[], flags: string[] = []) => execIn(pid, command, { flags: ['--fs-mode', 'write', ...flags] });
  const inside = (...command: string[]) => inTarget(pid, command);

  before(async () => {
    world = await createWorld();
    pid = world.target.pid;
  });
  after(async () => {
    await world?.destroy();
  });
  afterEach(async () => {
    if (!world) return;
    assert.deepEqual(await leftoversAfter(pid), { agents: [], dirs: [] }, 'a session left an agent process or a socket directory behind');
  });

  /** A fresh directory in the target, made there directly, for one test. */
  function fresh(): string {
    dir = `/srv/app/w-${randomBytes(4).toString('hex')}`;
    inside('mkdir', dir);
    return dir;
  }

  test('sh redirections create, truncate and append; cp, mv, chmod, rm and rmdir change the target', async () => {
    const d = fresh();
    ok(await write(['sh', '-c', [
      `echo x > ${d}/out`, `echo y >> ${d}/out`, `cat /srv/app/config/feature-flags > ${d}/flags`,
      `cp /srv/app/data/a.txt ${d}/copy`, `mkdir ${d}/sub`, `mv ${d}/copy ${d}/sub/moved`, `chmod 600 ${d}/sub/moved`,
      `echo gone > ${d}/gone`, `rm ${d}/gone`, `mkdir ${d}/empty`, `rm -r ${d}/empty`, `cat ${d}/out`,
    ].join(' && ')]));
    assert.deepEqual(targetTree(pid, d), {
      '.': { mode: 0o755 },
      out: { mode: 0o644, content: 'x\ny\n' },
      flags: { mode: 0o644, content: world.target.files['/srv/app/config/feature-flags'] },
      sub: { mode: 0o755 },
      'sub/moved': { mode: 0o600, content: 'alpha\n' },
    });
  });

  test('python3: open(..., "w"), os.rename, os.makedirs, and the target\'s EEXIST and ENOENT', async () => {
    const d = fresh();
    const out = ok(await write(['python3', '-c', `
import errno, os
with open("${d}/py.txt", "w") as f:
    f.write("from python\\n")
os.rename("${d}/py.txt", "${d}/renamed.txt")
os.makedirs("${d}/a/b/c")
try:
    os.open("${d}/renamed.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
except FileExistsError as e:
    print(errno.errorcode[e.errno])
try:
    open("${d}/missing/x", "w")
except FileNotFoundError as e:
    print(errno.errorcode[e.errno])
`]));
    assert.equal(out, 'EEXIST\nENOENT\n');
    assert.deepEqual(targetTree(pid, d), {
      '.': { mode: 0o755 },
      'renamed.txt': { mode: 0o644, content: 'from python\n' },
      a: { mode: 0o755 },
      'a/b': { mode: 0o755 },
      'a/b/c': { mode: 0o755 },
    });
  });

  test('node: fs.writeFileSync, appendFileSync, mkdirSync recursive, fs.promises.rename and unlink', async () => {
    const d = fresh();
    ok(await write(['node', '-e', `
const fs = require('fs');
fs.writeFileSync('${d}/n.json', JSON.stringify({ written: 'by node' }));
fs.appendFileSync('${d}/log', 'one\\n');
fs.appendFileSync('${d}/log', 'two\\n');
fs.mkdirSync('${d}/x/y', { recursive: true });
fs.writeFileSync('${d}/tmp', 'temporary');
(async () => {
  await fs.promises.rename('${d}/n.json', '${d}/x/y/final.json');
  await fs.promises.unlink('${d}/tmp');
})();
`]));
    assert.deepEqual(targetTree(pid, d), {
      '.': { mode: 0o755 },
      log: { mode: 0o644, content: 'one\ntwo\n' },
      x: { mode: 0o755 },
      'x/y': { mode: 0o755 },
      'x/y/final.json': { mode: 0o644, content: '{"written":"by node"}' },
    });
  });

  test('a full file system on the target: close returns its ENOSPC, and fsync too', async () => {
    const d = fresh();
    // A real 64 KiB tmpfs in the target's mount namespace; it goes with the world.
    inside('mount', '-t', 'tmpfs', '-o', 'size=64k', 'doppel-full', d);
    try {
      const out = ok(await write(['python3', '-c', `
import errno, os
f = open("${d}/big", "wb")
f.write(b"x" * 1048576)
try:
    f.close()
except OSError as e:
    print("close", errno.errorcode[e.errno])
fd = os.open("${d}/other", os.O_WRONLY | os.O_CREAT)
os.write(fd, b"y" * 1048576)
try:
    os.fsync(fd)
except OSError as e:
    print("fsync", errno.errorcode[e.errno])
os.unlink("${d}/big")
os.ftruncate(fd, 10)
os.fsync(fd)
print("after ftruncate", os.fstat(fd).st_size)
`]));
      assert.equal(out, 'close ENOSPC\nfsync ENOSPC\nafter ftruncate 10\n');
      assert.equal(inside('stat', '-c', '%s', `${d}/other`), '10\n');
    } finally {
      inside('umount', d);
    }
  });

  test('a write through .. or a symlink that climbs out stays inside the target\'s root', async () => {
    const d = fresh();
    const name = `escaped-${randomBytes(4).toString('hex')}`;
    inside('ln', '-s', '../../../../../../../../srv', `${d}/up`);
    ok(await write(['sh', '-c', `echo dots > ${d}/../../../../../../srv/${name} && echo link > ${d}/up/${name}.link`]));
    // The target's /srv is its own tmpfs: the host's /srv is another directory, and must not have them.
    assert.equal(inside('cat', `/srv/${name}`, `/srv/${name}.link`), 'dots\nlink\n');
    assert.deepEqual([`/srv/${name}`, `/srv/${name}.link`].filter((path) => existsSync(path)), []);
  });

  test('mode read writes locally and leaves the target untouched', async () => {
    const d = fresh();
    const hostDir = `/srv/doppel-read-${randomBytes(4).toString('hex')}`;
    mkdirSync(hostDir);
    try {
      const result = await execIn(pid, ['sh', '-c', `echo local > ${hostDir}/out; mkdir ${hostDir}/made; echo remote > ${d}/out; mkdir ${d}/made; rm -f /srv/app/data/a.txt; echo status $?`]);
      assert.match(result.stderr, new RegExp(`${d}/out: (Directory nonexistent|No such file or directory)`));
      assert.equal(result.stdout, 'status 0\n');
      assert.equal(readFileSync(`${hostDir}/out`, 'utf8'), 'local\n');
      assert.ok(existsSync(`${hostDir}/made`));
      assert.deepEqual(targetTree(pid, d), { '.': { mode: 0o755 } });
      assert.equal(inside('cat', '/srv/app/data/a.txt'), 'alpha\n');
      assert.equal(inside('sh', '-c', `ls ${hostDir} 2>&1 || true`).includes('No such file'), true);
    } finally {
      rmSync(hostDir, { recursive: true, force: true });
    }
  });

  test('read_write entries are written on the target in mode read, read_only ones locally in mode write', async () => {
    const d = fresh();
    const hostDir = `/srv/doppel-ro-${randomBytes(4).toString('hex')}`;
    const config = join(tmpdir(), `doppel-fs-${randomBytes(4).toString('hex')}.json`);
    mkdirSync(hostDir);
    const withFs = (fs: object) => {
      writeFileSync(config, JSON.stringify({ feature: { fs } }));
      return ['-f', config];
    };
    try {
      ok(await execIn(pid, ['sh', '-c', `mkdir ${d}/rw && echo remote > ${d}/rw/file`], { flags: withFs({ mode: 'read', read_write: [`^${d}/rw`] }) }));
      assert.equal(inside('cat', `${d}/rw/file`), 'remote\n');
      ok(await execIn(pid, ['sh', '-c', `echo local > ${hostDir}/file`], { flags: withFs({ mode: 'write', read_only: [`^${hostDir}`] }) }));
      assert.equal(readFileSync(`${hostDir}/file`, 'utf8'), 'local\n');
    } finally {
      rmSync(hostDir, { recursive: true, force: true });
      rmSync(config, { force: true });
    }
  });

  describe('as a non-root target', () => {
    let nobody: ChildProcess;
    before(() => {
      // A second process in the target's namespaces, running as nobody: its files are checked as its own.
      nobody = spawn('nsenter', ['-t', String(world.target.pid), '-m', '-n', '--', 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'sleep', 'infinity'], { stdio: 'ignore' });
    });
    after(() => {
      nobody?.kill('SIGKILL');
    });

    test('EACCES on a read-only file and directory reaches the program; its own directory is writable', async () => {
      const d = fresh();
      inside('sh', '-c', `echo keep > ${d}/readonly && mkdir ${d}/mine && chown 65534:65534 ${d}/mine`);
      await waitForUser(nobody.pid!, 65534);
      const result = await execIn(nobody.pid!, ['python3', '-c', `
import errno
for path in ["${d}/readonly", "${d}/new"]:
    try:
        open(path, "w")
    except PermissionError as e:
        print(errno.errorcode[e.errno])
with open("${d}/mine/file", "w") as f:
    f.write("nobody's\\n")
`], { flags: ['--fs-mode', 'write'] });
      assert.equal(ok(result), 'EACCES\nEACCES\n');
      assert.equal(inside('cat', `${d}/readonly`), 'keep\n');
      assert.equal(inside('stat', '-c', '%u:%g %a %n', `${d}/mine/file`), `65534:65534 644 ${d}/mine/file\n`);
      assert.equal(inside('cat', `${d}/mine/file`), 'nobody\'s\n');
    });
  });
});
