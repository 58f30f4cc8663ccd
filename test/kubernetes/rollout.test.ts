// rollout/ targets with the Argo Rollouts CRD installed on the test cluster (the CRD only: no Argo controller runs here).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { DoppelError } from '../../src/errors.ts';
import { loadKubeContext, type KubeContext } from '../../src/platform/kubernetes/kube-context.ts';
import { listTargets } from '../../src/platform/kubernetes/list-targets.ts';
import { resolveTarget } from '../../src/platform/kubernetes/resolve-target.ts';
import { adminKubeconfig, apply, createNamespace, deployment, httpdContainer, kubectl, needsCluster, podTemplate, poll, rolloutStatus } from './support/cluster.ts';

const crdName = 'rollouts.argoproj.io';
const crd = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: crdName },
  spec: {
    group: 'argoproj.io',
    scope: 'Namespaced',
    names: { kind: 'Rollout', listKind: 'RolloutList', plural: 'rollouts', singular: 'rollout', shortNames: ['ro'] },
    versions: [{ name: 'v1alpha1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } } }],
  },
};

describe('rollout targets with Argo Rollouts installed', needsCluster('the Argo Rollouts target tests'), () => {
  let namespace: Awaited<ReturnType<typeof createNamespace>>;
  let kube: KubeContext;
  let installedHere = false;
  let ns = '';

  before(async () => {
    // The cluster is shared: a CRD someone else installed stays theirs.
    installedHere = (await kubectl(['get', 'crd', crdName, '--ignore-not-found', '-o', 'name'])).trim() === '';
    if (installedHere) await apply([crd]);
    await kubectl(['wait', '--for=condition=Established', `crd/${crdName}`, '--timeout=60s']);
    namespace = await createNamespace('rollout');
    ns = namespace.name;
    kube = await loadKubeContext({ kubeconfig: adminKubeconfig, namespace: ns });
    await apply([
      {
        apiVersion: 'argoproj.io/v1alpha1',
        kind: 'Rollout',
        metadata: { name: 'canary', namespace: ns },
        spec: { replicas: 1, selector: { matchLabels: { app: 'canary' } }, template: podTemplate('canary', [httpdContainer()]), strategy: { canary: {} } },
      },
      // Stands in for the ReplicaSet the Argo controller would make from the Rollout's template.
      { apiVersion: 'apps/v1', kind: 'ReplicaSet', metadata: { name: 'canary-stand-in', namespace: ns }, spec: { replicas: 1, selector: { matchLabels: { app: 'canary' } }, template: podTemplate('canary', [httpdContainer()]) } },
      // A Rollout that takes its template and selector from a Deployment.
      deployment(ns, 'referenced', 1),
      { apiVersion: 'argoproj.io/v1alpha1', kind: 'Rollout', metadata: { name: 'by-ref', namespace: ns }, spec: { replicas: 1, workloadRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'referenced' } } },
      { apiVersion: 'argoproj.io/v1alpha1', kind: 'Rollout', metadata: { name: 'paused', namespace: ns }, spec: { replicas: 0, selector: { matchLabels: { app: 'paused' } }, template: podTemplate('paused', [httpdContainer()]) } },
    ]);
    await rolloutStatus('deployment/referenced', ns);
    await poll('the stand-in pod', async () => ((await kubectl(['get', 'pods', '-l', 'app=canary', '-n', ns, '-o', 'name'])).trim() !== '' ? true : undefined));
    await kubectl(['wait', '--for=condition=Ready', 'pod', '-l', 'app=canary', '-n', ns, '--timeout=180s']);
  });

  after(async () => {
    await namespace?.remove();
    if (installedHere) await kubectl(['delete', 'crd', crdName, '--ignore-not-found', '--wait=true', '--timeout=120s']);
  });

  test('rollout/ resolves to the pods its selector selects', async () => {
    const resolved = await resolveTarget(kube, { kind: 'rollout', name: 'canary', container: undefined });
    assert.equal(resolved.selector, 'app=canary');
    assert.equal(resolved.pods.length, 1);
    assert.match(resolved.pods[0]!.name, /^canary-stand-in-/);
  });

  test('a Rollout with a workloadRef takes the Deployment\'s selector', async () => {
    const resolved = await resolveTarget(kube, { kind: 'rollout', name: 'by-ref', container: undefined });
    assert.equal(resolved.selector, 'app=referenced');
    assert.match(resolved.pods[0]!.name, /^referenced-/);
  });

  test('a missing Rollout is "not found" with a suggestion, not "CRD missing"; zero replicas says so', async () => {
    await assert.rejects(resolveTarget(kube, { kind: 'rollout', name: 'canry', container: undefined }), (error: DoppelError) => {
      assert.equal(error.code, 'E_TARGET_NOT_FOUND');
      assert.match(error.hint ?? '', /did you mean rollout\/canary\?/);
      return true;
    });
    await assert.rejects(resolveTarget(kube, { kind: 'rollout', name: 'paused', container: undefined }), (error: DoppelError) => {
      assert.equal(error.code, 'E_TARGET_NOT_READY');
      assert.equal(error.message, `rollout/paused in ${ns} is scaled to zero replicas`);
      return true;
    });
  });

  test('ls lists the Rollouts', async () => {
    const { targets } = await listTargets(kube, { namespace: ns });
    assert.deepEqual(
      targets.map((entry) => entry.target).filter((target) => target.startsWith('rollout/')),
      ['rollout/by-ref', 'rollout/canary', 'rollout/paused'],
    );
  });
});
