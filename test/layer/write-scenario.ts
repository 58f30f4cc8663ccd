// write-hooks.c under doppel in write mode against the test world, its result read from inside the target's mount namespace.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execIn } from '../e2e/run-doppel.ts';
import { targetTree } from '../e2e/target-files.ts';
import type { World } from '../world/world.ts';

const source = fileURLToPath(new URL('write-hooks.c', import.meta.url));

/** Runs the program through every write hook; returns doppel's stderr once the target holds exactly what it wrote. */
export async function writeHooks(world: World, env?: NodeJS.ProcessEnv): Promise<string> {
  const build = mkdtempSync(join(tmpdir(), 'doppel-write-hooks-'));
  try {
    const binary = join(build, 'write-hooks');
    execFileSync('cc', ['-Wall', '-Wextra', '-Werror', '-o', binary, source]);
    // Beside the world's listed directory, which other tests expect unchanged.
    const dir = `/srv/app/hooks-${randomBytes(4).toString('hex')}`;
    const result = await execIn(world.target.pid, [binary, dir], { flags: ['--fs-mode', 'write'], env });
    assert.equal(result.status, 0, `stdout: ${result.stdout}\nstderr: ${result.stderr}`);
    assert.equal(result.stdout, [
      'O_EXCL on an existing file: File exists',
      'create in a missing directory: No such file or directory',
      'rmdir of a directory with entries: Directory not empty',
      'unlink of a missing file: No such file or directory',
      'RENAME_NOREPLACE onto a file: File exists',
      'done',
      '',
    ].join('\n'));
    assert.deepEqual(targetTree(world.target.pid, dir), {
      '.': { mode: 0o755 },
      'at-exit': { mode: 0o644, content: 'never closed\n' },
      shared: { mode: 0o604, content: 'parent 1\nafter the first close\nchild\nparent 2\n' },
      stdio: { mode: 0o600, content: 'LINE one\nline two\n' },
      sub: { mode: 0o750 },
      'sub/deeper': { mode: 0o755 },
      'sub/deeper/renamed-at': { mode: 0o600, content: 'second\nappended\n' },
      'sub/plain': { mode: 0o640, content: 'HELLO world' },
    });
    return result.stderr;
  } finally {
    rmSync(build, { recursive: true, force: true });
  }
}
