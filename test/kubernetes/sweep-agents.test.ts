// A start removes the agent Jobs that dead sessions left (their CLI on this host is gone) and parked ones past their
// ttl, and leaves live sessions' and parked ones within their ttl alone.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { hostname } from 'node:os';
import { after, before, describe, test } from 'node:test';
import { runDoppel } from '../e2e/run-doppel.ts';
import { adminKubeconfig, apply, createNamespace, deployment, kubectl, needsCluster, rolloutStatus, sleeperContainer } from './support/cluster.ts';

function agentLikeJob(namespace: string, name: string, clientPid: number, parkedUntil?: number): object {
  const labels = { 'app.kubernetes.io/managed-by': 'doppel', 'doppel.dev/session': name };
  const parked = parkedUntil === undefined ? {} : { 'doppel.dev/parked-until': String(parkedUntil) };
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name, namespace, labels, annotations: { 'doppel.dev/client': `${hostname()}/${clientPid}`, ...parked } },
    spec: { backoffLimit: 0, template: { metadata: { labels }, spec: { restartPolicy: 'Never', terminationGracePeriodSeconds: 0, containers: [sleeperContainer('agent')] } } },
  };
}

describe('sweeping dead sessions\' agents', needsCluster('the agent sweep test'), () => {
  let ns: Awaited<ReturnType<typeof createNamespace>>;

  before(async () => {
    ns = await createNamespace('sweep');
    const deadPid = Number(spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim());
    // Parked Jobs' CLIs are gone by design: the ttl alone decides.
    await apply([
      deployment(ns.name, 'app', 1),
      agentLikeJob(ns.name, 'doppel-agent-dead', deadPid),
      agentLikeJob(ns.name, 'doppel-agent-live', process.pid),
      agentLikeJob(ns.name, 'doppel-agent-parked', deadPid, Date.now() + 3600_000),
      agentLikeJob(ns.name, 'doppel-agent-expired', deadPid, Date.now() - 1000),
    ]);
    await rolloutStatus('deployment/app', ns.name);
  });
  after(async () => {
    await ns?.remove();
  });

  test('a start removes a Job whose CLI is gone and a parked one past its ttl, and keeps one whose CLI lives and a parked one within its ttl', async () => {
    const result = await runDoppel(['exec', '--target', 'deployment/app', '-n', ns.name, '-q', '--', 'true'], { env: { ...process.env, KUBECONFIG: adminKubeconfig }, timeoutMs: 120_000 });
    assert.equal(result.status, 0, result.stderr);
    const ours = ['doppel-agent-dead', 'doppel-agent-live', 'doppel-agent-parked', 'doppel-agent-expired'];
    const jobs = (await kubectl(['get', 'jobs', '-n', ns.name, '-o', 'jsonpath={.items[*].metadata.name}'])).split(' ').filter((name) => ours.includes(name));
    assert.deepEqual(jobs.sort(), ['doppel-agent-live', 'doppel-agent-parked']);
  });
});
