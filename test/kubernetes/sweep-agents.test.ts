// A start removes the agent Jobs that dead sessions left (their CLI on this host is gone), and leaves live sessions' alone.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { hostname } from 'node:os';
import { after, before, describe, test } from 'node:test';
import { runDoppel } from '../e2e/run-doppel.ts';
import { adminKubeconfig, apply, createNamespace, deployment, kubectl, needsCluster, rolloutStatus, sleeperContainer } from './support/cluster.ts';

function agentLikeJob(namespace: string, name: string, clientPid: number): object {
  const labels = { 'app.kubernetes.io/managed-by': 'doppel', 'doppel.dev/session': name };
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name, namespace, labels, annotations: { 'doppel.dev/client': `${hostname()}/${clientPid}` } },
    spec: { backoffLimit: 0, template: { metadata: { labels }, spec: { restartPolicy: 'Never', terminationGracePeriodSeconds: 0, containers: [sleeperContainer('agent')] } } },
  };
}

describe('sweeping dead sessions\' agents', needsCluster('the agent sweep test'), () => {
  let ns: Awaited<ReturnType<typeof createNamespace>>;

  before(async () => {
    ns = await createNamespace('sweep');
    const deadPid = Number(spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim());
    await apply([deployment(ns.name, 'app', 1), agentLikeJob(ns.name, 'doppel-agent-dead', deadPid), agentLikeJob(ns.name, 'doppel-agent-live', process.pid)]);
    await rolloutStatus('deployment/app', ns.name);
  });
  after(async () => {
    await ns?.remove();
  });

  test('a start removes a Job whose CLI is gone and keeps one whose CLI lives', async () => {
    const result = await runDoppel(['exec', '--target', 'deployment/app', '-n', ns.name, '-q', '--', 'true'], { env: { ...process.env, KUBECONFIG: adminKubeconfig }, timeoutMs: 120_000 });
    assert.equal(result.status, 0, result.stderr);
    const jobs = (await kubectl(['get', 'jobs', '-n', ns.name, '-o', 'jsonpath={.items[*].metadata.name}'])).split(' ').filter((name) => name.startsWith('doppel-agent-dead') || name.startsWith('doppel-agent-live'));
    assert.deepEqual(jobs, ['doppel-agent-live']);
  });
});
