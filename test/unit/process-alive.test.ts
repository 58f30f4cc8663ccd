// isAlive: a running process is alive, one that has exited is not, even while no parent has reaped it yet (a zombie of
// a parent that never waits). childExit: such a child's end, read in one look.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import { test } from 'node:test';
import { childExit, isAlive } from '../../src/process-alive.ts';
import { until } from '../support/until.ts';

/**
 * A parent that never waits, with one child that runs and one that exits with 3. Python's, not a shell's: a shell may
 * reap a background job before it execs, as one CI run showed.
 */
async function neverWaits(): Promise<{ parent: ChildProcess; runs: number; exited: number; end(): void }> {
  const script = ['import os, time', 'running = os.fork()', 'if running == 0:', '    time.sleep(30)', '    os._exit(0)', 'exited = os.fork()', 'if exited == 0:', '    os._exit(3)', 'print(running, exited, flush=True)', 'time.sleep(30)'];
  const parent = spawn('python3', ['-c', script.join('\n')], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  parent.stdout!.on('data', (chunk: Buffer) => (out += chunk));
  // The line may come in more than one piece.
  const [runs, exited] = await until('both pids', () => (out.endsWith('\n') ? out.trim().split(' ').map(Number) : undefined), 5000);
  return {
    parent,
    runs: runs!,
    exited: exited!,
    end() {
      parent.kill('SIGKILL');
      process.kill(runs!, 'SIGKILL');
    },
  };
}

test('a running process is alive; an exited one is not, reaped or not', async () => {
  assert.equal(isAlive(process.pid), true);
  const { parent, exited, end } = await neverWaits();
  try {
    const state = () => {
      const stat = readFileSync(`/proc/${exited}/stat`, 'latin1');
      return stat[stat.lastIndexOf(')') + 2];
    };
    await until('the child to exit unreaped', () => (state() === 'Z' ? true : undefined), 5000);
    assert.equal(isAlive(exited), false);
    assert.equal(isAlive(parent.pid!), true);
  } finally {
    end();
  }
  await once(parent, 'exit');
  assert.equal(isAlive(parent.pid!), false);
});

test('childExit: nothing while the child runs; once it exited, its status as waitpid has it; once reaped elsewhere, none', async () => {
  const { runs, exited, end } = await neverWaits();
  try {
    await until('the child to exit unreaped', () => childExit(exited), 5000);
    assert.deepEqual(childExit(exited), { status: 3 << 8 });
    assert.equal(childExit(runs), undefined);
  } finally {
    end();
  }
  // Its parent gone, init reaps it: the status is nobody's to read.
  await until('the orphan to be reaped', () => (childExit(exited)?.status === undefined ? true : undefined), 5000);
  assert.deepEqual(childExit(exited), { status: undefined });
});
