// isAlive: a running process is alive, one that has exited is not, even while no parent has reaped it yet (a zombie:
// `sh` starts a child and becomes `sleep`, which never waits for it).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import { test } from 'node:test';
import { isAlive } from '../../src/process-alive.ts';
import { until } from '../support/until.ts';

test('a running process is alive; an exited one is not, reaped or not', async () => {
  assert.equal(isAlive(process.pid), true);
  const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const [line] = (await once(parent.stdout!, 'data')) as [Buffer];
    const child = Number(line.toString().trim());
    const state = () => {
      const stat = readFileSync(`/proc/${child}/stat`, 'latin1');
      return stat[stat.lastIndexOf(')') + 2];
    };
    await until('the child to exit unreaped', () => (state() === 'Z' ? true : undefined), 5000);
    assert.equal(isAlive(child), false);
    assert.equal(isAlive(parent.pid!), true);
  } finally {
    parent.kill('SIGKILL');
  }
  await once(parent, 'exit');
  assert.equal(isAlive(parent.pid!), false);
});
