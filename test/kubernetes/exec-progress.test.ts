// Progress on the test cluster: a slow step says what it waits for, with the time so far, and the line changes when
// the wait does. An agent pod no node accepts (targetless, with a node selector nothing matches) stays Pending.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runDoppel } from '../e2e/run-doppel.ts';
import { adminKubeconfig, createNamespace, needsCluster } from './support/cluster.ts';
import { assertNothingLeft, assertOneLineError } from './support/doppel-objects.ts';

const env = { ...process.env, KUBECONFIG: adminKubeconfig };
const dir = mkdtempSync(path.join(tmpdir(), 'doppel-k8s-progress-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('progress while the agent starts', needsCluster('progress on Kubernetes'), () => {
  let namespace: Awaited<ReturnType<typeof createNamespace>>;

  before(async () => {
    namespace = await createNamespace('progress');
  });
  after(async () => {
    await namespace?.remove();
  });

  test('a Pending agent pod: the line says so and why, with the time so far; the timeout names it too', async () => {
    const config = path.join(dir, 'nowhere.json');
    writeFileSync(config, JSON.stringify({ agent: { node_selector: { 'doppel.test/no-such-node': 'yes' }, startup_timeout: 4 } }));
    const result = await runDoppel(['exec', '--target', 'targetless', '-n', namespace.name, '-f', config, '--', 'true'], { env, timeoutMs: 60_000 });
    assert.equal(result.status, 1);
    assert.match(result.stderr, /^doppel: starting the agent in namespace \S+ \(image \S+\): pod doppel-agent-\S+ is Pending, not scheduled: 0\/1 nodes are available: 1 node\(s\) didn't match Pod's node affinity\/selector.* \(\d\.\d\ds\)$/m);
    assertOneLineError(result.stderr, 'E_AGENT_TIMEOUT', /the agent's pod did not run within 4s: Pending, Unschedulable 0\/1 nodes are available/);
    await assertNothingLeft(namespace.name);
  });
});
