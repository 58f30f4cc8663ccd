// The layer is fork-safe: a program that forks while its other threads close descriptors never leaves a child hung.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const layer = fileURLToPath(new URL('../../layer/build/libdoppel.so', import.meta.url));
const source = fileURLToPath(new URL('fork-close.c', import.meta.url));

test('fork while other threads close: every child closes and exits', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'doppel-fork-'));
  try {
    const binary = join(dir, 'fork-close');
    execFileSync('cc', ['-Wall', '-Wextra', '-Werror', '-O2', '-pthread', '-o', binary, source]);
    // Its own process group, so that nothing of it outlives a failure.
    const child = spawn(binary, ['2000'], { env: { ...process.env, LD_PRELOAD: layer }, detached: true, stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    // The program kills and reports a child that hangs (without the atfork handlers, one does within 2000 forks).
    const hang = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), 120_000);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('close', (c, s) => resolve([c, s])));
    clearTimeout(hang);
    assert.deepEqual({ code, signal, stdout }, { code: 0, signal: null, stdout: 'forked 2000 times\n' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
