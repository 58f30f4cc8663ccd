// skip_processes and skip_build_tools end to end: the layer stays inactive in the processes they name (their calls
// are the developer machine's), while the children those processes start are served again.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { execIn, ok } from './run-doppel.ts';
import { suiteWorld } from './suite-world.ts';

const gate = needsRoot('skip_processes against a process target');

describe('skip_processes and build tools', gate, () => {
  const world = suiteWorld();
  let dir: string;
  const pid = () => world().target.pid;
  const remoteFile = '/srv/app/data/a.txt';
  const config = (name: string, content: object) => {
    const path = join(dir, name);
    writeFileSync(path, JSON.stringify(content));
    return path;
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'doppel-skip-'));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('a skipped shell sees the local files, and its cat child the target\'s', async () => {
    const skipSh = config('skip-sh.json', { skip_processes: ['sh'] });
    // The shell's own stat (a builtin test) against its child's read.
    const script = `if [ -e ${remoteFile} ]; then echo sh-sees-it; else echo sh-does-not; fi; cat ${remoteFile}`;
    assert.deepEqual(ok(await execIn(pid(), ['sh', '-c', script], { flags: ['-f', skipSh] })).split('\n'), ['sh-does-not', 'alpha', '']);
    assert.deepEqual(ok(await execIn(pid(), ['sh', '-c', script])).split('\n'), ['sh-sees-it', 'alpha', '']);
  });

  test('python3 is skipped by its executable\'s name as well as the name it was started as', async () => {
    const script = `import os; print(os.path.exists("${remoteFile}"))`;
    assert.equal(ok(await execIn(pid(), ['python3', '-c', script], { flags: ['-f', config('skip-python.json', { skip_processes: ['python3'] })] })).trim(), 'False');
    const exe = ok(await execIn(pid(), ['python3', '-c', 'import os, sys; sys.stdout.write(os.path.basename(os.path.realpath("/proc/self/exe")))']));
    assert.equal(ok(await execIn(pid(), ['python3', '-c', script], { flags: ['-f', config('skip-exe.json', { skip_processes: [exe] })] })).trim(), 'False');
    assert.equal(ok(await execIn(pid(), ['python3', '-c', script])).trim(), 'True');
    // A script naming python3 by its path (#!): the kernel executes the script, and the interpreter is the process.
    const interpreter = ok(await execIn(pid(), ['python3', '-c', 'import sys; sys.stdout.write(sys.executable)']));
    const viaShebang = join(dir, 'check.py');
    writeFileSync(viaShebang, `#!${interpreter}\n${script.replaceAll('; ', '\n')}\n`, { mode: 0o755 });
    assert.equal(ok(await execIn(pid(), [viaShebang], { flags: ['-f', config('skip-exe.json', { skip_processes: [exe] })] })).trim(), 'False');
    assert.equal(ok(await execIn(pid(), [viaShebang])).trim(), 'True');
  });

  test('build tools are left alone by default (the C compiler reads local files), and served with skip_build_tools: false', async () => {
    const compile = ['cc', '-x', 'c', '-E', '-P', remoteFile];
    const skipped = await execIn(pid(), compile);
    assert.notEqual(skipped.status, 0, skipped.stdout);
    assert.match(skipped.stderr, /No such file or directory/);
    assert.equal(ok(await execIn(pid(), compile, { flags: ['-f', config('build-tools.json', { skip_build_tools: false })] })).trim(), 'alpha');
  });

  test('a name with a directory in skip_processes is one clear line', async () => {
    const result = await execIn(pid(), ['true'], { flags: ['-f', config('bad-skip.json', { skip_processes: ['/bin/sh'] })] });
    assert.notEqual(result.status, 0, result.stderr);
    assert.match(result.stderr, /skip_processes: "\/bin\/sh" is not a process name/);
  });
});
