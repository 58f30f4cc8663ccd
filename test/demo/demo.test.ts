// `doppel demo` as a user runs it: the pod's values appear only in the doppel column, and no way out leaves anything behind.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { createNetns, leftoversAfter, none, podFacts, startDemo, table, tempEntries, waitUntil, type DemoRun, type Leftovers, type Netns } from './demo-run.ts';

const gate = needsRoot('the demo');

describe('doppel demo', gate, () => {
  let netns: Netns;
  before(async () => {
    netns = await createNetns();
  });
  after(async () => {
    await netns?.close();
  });

  const runOf = (demo: DemoRun) => ({ demoPid: demo.child.pid!, marker: demo.marker, ...podFacts(demo.stdout()) });
  const podAndPlainRunDone = (demo: DemoRun) => () => /^The pod is process \d+/m.test(demo.stdout()) && /running the sample program on this machine \(/.test(demo.stderr());

  test('shows the pod\'s variable, file, name and service in the doppel column only, exits 0, and leaves nothing', async () => {
    const temp = tempEntries();
    const demo = startDemo(netns);
    const { status } = await demo.finished;
    assert.equal(status, 0, demo.stderr());
    const run = runOf(demo);
    const rows = table(demo.stdout());
    assert.deepEqual(rows.variable, { plain: '(not set)', doppel: run.podName });
    assert.match(run.podName, /^checkout-/);
    assert.equal(rows.file?.plain, '(no such file)');
    assert.match(rows.file?.doppel ?? '', /^payments = sandbox-[0-9a-f]{6}$/);
    assert.equal(rows.name?.doppel, '198.18.96.20');
    assert.notEqual(rows.name?.plain, '198.18.96.20');
    assert.equal(rows.service?.doppel, `orders: 3 open (served by ${run.answerId})`);
    assert.doesNotMatch(rows.service?.plain ?? '', /orders/);
    assert.deepEqual(await leftoversAfter([netns, run, temp]), none);
  });

  test('a demo killed with SIGKILL takes its pod with it and leaves only its route, which the next demo removes', async () => {
    const temp = tempEntries();
    const killed = startDemo(netns);
    await waitUntil('the pod and the plain run', podAndPlainRunDone(killed));
    killed.child.kill('SIGKILL');
    await killed.finished;
    const killedRun = runOf(killed);
    const gone = (found: Leftovers) => found.processes.length === 0 && found.mounts.length === 0 && found.links.length === 0;
    const afterKill = await leftoversAfter([netns, killedRun, temp], gone);
    assert.deepEqual({ processes: afterKill.processes, mounts: afterKill.mounts, links: afterKill.links }, { processes: [], mounts: [], links: [] });
    assert.equal(afterKill.routes.length, 1, 'a route cannot die with a process: it stays until the next demo');

    const next = startDemo(netns);
    assert.equal((await next.finished).status, 0, next.stderr());
    assert.deepEqual(await leftoversAfter([netns, killedRun, temp]), none);
    assert.deepEqual(await leftoversAfter([netns, runOf(next), temp]), none);
  });

  test('SIGTERM once doppel exec has started ends the demo with status 143 and leaves nothing', async () => {
    const temp = tempEntries();
    const demo = startDemo(netns);
    await waitUntil('the pod and the plain run', podAndPlainRunDone(demo));
    demo.child.kill('SIGTERM');
    assert.deepEqual(await demo.finished, { status: 143, signal: null });
    assert.deepEqual(await leftoversAfter([netns, runOf(demo), temp]), none);
  });

  test('Ctrl-C (SIGINT to the whole process group) ends the demo with status 130 and leaves nothing', async () => {
    const temp = tempEntries();
    const demo = startDemo(netns, { group: true });
    await waitUntil('the pod and the plain run', podAndPlainRunDone(demo));
    process.kill(-demo.child.pid!, 'SIGINT');
    assert.deepEqual(await demo.finished, { status: 130, signal: null });
    assert.deepEqual(await leftoversAfter([netns, runOf(demo), temp]), none);
  });

  test('without root, the demo says in one line that it needs root and exits 1, having made nothing', async () => {
    const demo = startDemo(netns, { uid: 65534 });
    assert.deepEqual(await demo.finished, { status: 1, signal: null });
    assert.match(demo.stderr().split('\n')[0] ?? '', /^doppel: the demo needs root: .* \[E_DEMO_ROOT\]$/);
    assert.equal(demo.stdout(), '');
    assert.deepEqual(netns.run(['ip', 'route', 'show', 'type', 'unreachable']), '');
  });

  test('on a machine without setpriv, the demo names the missing tool and exits 1, having made nothing', async () => {
    // A PATH with everything the demo and bin/doppel use except setpriv.
    const bin = mkdtempSync(join(tmpdir(), 'demo-test-path-'));
    try {
      for (const tool of ['sh', 'dirname', 'readlink', 'ip', 'unshare', 'nsenter', 'mount']) {
        symlinkSync(execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim(), join(bin, tool));
      }
      const demo = startDemo(netns, { path: bin });
      assert.deepEqual(await demo.finished, { status: 1, signal: null });
      assert.match(demo.stderr().split('\n')[0] ?? '', /^doppel: the demo needs `setpriv`, which is not on PATH \[E_DEMO_SETUP\]$/);
      assert.equal(netns.run(['ip', 'route', 'show', 'type', 'unreachable']), '');
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });
});
