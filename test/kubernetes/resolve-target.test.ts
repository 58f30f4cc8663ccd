// Every target kind resolved to the right pods and container on the test cluster, and the one-line reasons when it cannot be.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { V1Pod } from '@kubernetes/client-node';
import { DoppelError } from '../../src/errors.ts';
import { loadKubeContext, type KubeContext } from '../../src/platform/kubernetes/kube-context.ts';
import { resolveTarget, type KubeTarget, type ResolvedTarget } from '../../src/platform/kubernetes/resolve-target.ts';
import { adminKubeconfig, apply, createNamespace, deployment, httpdContainer, kubectl, needsCluster, podTemplate, poll, rolloutStatus, sleeperContainer, testImage } from './support/cluster.ts';

type Namespace = Awaited<ReturnType<typeof createNamespace>>;

describe('resolving Kubernetes targets', needsCluster('the Kubernetes target tests'), () => {
  let main: Namespace;
  let other: Namespace;
  let kube: KubeContext;
  let ns = '';

  const resolve = (kind: KubeTarget['kind'], name: string, container?: string): Promise<ResolvedTarget> => resolveTarget(kube, { kind, name, container });

  async function fails(kind: KubeTarget['kind'], name: string, code: string, message: RegExp, hint?: RegExp, container?: string): Promise<DoppelError> {
    const error = await resolve(kind, name, container).then(
      (resolved) => assert.fail(`expected ${code}, resolved to ${resolved.pods.map((pod) => pod.name).join(', ')}`),
      (caught: unknown) => caught,
    );
    assert.ok(error instanceof DoppelError, String(error));
    assert.equal(error.code, code, `${error.message}\n  hint: ${error.hint}`);
    assert.match(error.message, message);
    assert.doesNotMatch(error.message, /\n/);
    if (hint) assert.match(error.hint ?? '', hint);
    return error;
  }

  async function podsOf(selector: string): Promise<V1Pod[]> {
    return (await kube.core.listNamespacedPod({ namespace: ns, labelSelector: selector })).items;
  }

  before(async () => {
    [main, other] = await Promise.all([createNamespace('resolve'), createNamespace('resolve-other')]);
    ns = main.name;
    kube = await loadKubeContext({ kubeconfig: adminKubeconfig, namespace: ns });
    const labelled = (app: string, spec: Record<string, unknown>) => ({ metadata: { labels: { app } }, spec: { terminationGracePeriodSeconds: 0, ...spec } });
    await apply([
      deployment(ns, 'web', 2),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: ns }, spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] } },
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'manual', namespace: ns }, spec: { ports: [{ port: 80 }] } },
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'two', namespace: ns, annotations: { 'kubectl.kubernetes.io/default-container': 'app' } },
        spec: { terminationGracePeriodSeconds: 0, containers: [sleeperContainer('helper'), httpdContainer('app')] },
      },
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'meshed', namespace: ns }, spec: { terminationGracePeriodSeconds: 0, containers: [sleeperContainer('istio-proxy'), httpdContainer('main')] } },
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'db', namespace: ns }, spec: { clusterIP: 'None', selector: { app: 'db' }, ports: [{ port: 8080 }] } },
      { apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name: 'db', namespace: ns }, spec: { serviceName: 'db', replicas: 1, selector: { matchLabels: { app: 'db' } }, template: podTemplate('db', [httpdContainer()]) } },
      { apiVersion: 'apps/v1', kind: 'ReplicaSet', metadata: { name: 'bare', namespace: ns }, spec: { replicas: 1, selector: { matchLabels: { app: 'bare' } }, template: podTemplate('bare', [httpdContainer()]) } },
      { apiVersion: 'batch/v1', kind: 'Job', metadata: { name: 'worker', namespace: ns }, spec: { backoffLimit: 0, template: labelled('worker', { restartPolicy: 'Never', containers: [sleeperContainer('work')] }) } },
      {
        apiVersion: 'batch/v1',
        kind: 'CronJob',
        metadata: { name: 'nightly', namespace: ns },
        // 1 January at midnight: it never runs on its own during a test.
        spec: { schedule: '0 0 1 1 *', jobTemplate: { spec: { backoffLimit: 0, template: labelled('nightly', { restartPolicy: 'Never', containers: [sleeperContainer('batch')] }) } } },
      },
      deployment(ns, 'pending', 1, [httpdContainer()], { nodeSelector: { 'doppel.test/no-such-node': 'true' } }),
      deployment(ns, 'crasher', 1, [{ name: 'app', image: testImage, imagePullPolicy: 'Never', command: ['sh', '-c', 'echo crashing; exit 3'] }]),
      deployment(ns, 'unpullable', 1, [{ name: 'app', image: 'doppel.test/not-loaded:1', imagePullPolicy: 'Never' }]),
      deployment(ns, 'zero', 0),
      deployment(ns, 'unready', 1, [{ ...httpdContainer(), readinessProbe: { httpGet: { path: '/no-such-page', port: 8080 }, periodSeconds: 1 } }]),
      deployment(other.name, 'elsewhere', 1, [sleeperContainer('app')]),
      {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: { name: 'expr', namespace: ns },
        spec: {
          replicas: 1,
          selector: {
            matchLabels: { app: 'expr' },
            matchExpressions: [
              { key: 'tier', operator: 'In', values: ['a', 'b'] },
              { key: 'tier', operator: 'NotIn', values: ['c'] },
              { key: 'app', operator: 'Exists' },
              { key: 'canary', operator: 'DoesNotExist' },
            ],
          },
          template: { metadata: { labels: { app: 'expr', tier: 'a' } }, spec: { terminationGracePeriodSeconds: 0, containers: [httpdContainer()] } },
        },
      },
      // Ready pods that share a label with it but are not selected by the whole selector.
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'expr-canary', namespace: ns, labels: { app: 'expr', tier: 'a', canary: 'yes' } }, spec: { terminationGracePeriodSeconds: 0, containers: [httpdContainer()] } },
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'expr-tier-c', namespace: ns, labels: { app: 'expr', tier: 'c' } }, spec: { terminationGracePeriodSeconds: 0, containers: [httpdContainer()] } },
    ]);
    await Promise.all(['deployment/web', 'deployment/expr', 'statefulset/db'].map((ref) => rolloutStatus(ref, ns)));
    await kubectl(['wait', '--for=condition=Ready', 'pod/two', 'pod/meshed', 'pod/expr-canary', 'pod/expr-tier-c', '-n', ns, '--timeout=180s']);
    for (const app of ['bare', 'worker']) {
      await poll(`a pod of ${app}`, async () => ((await podsOf(`app=${app}`)).length > 0 ? true : undefined));
      await kubectl(['wait', '--for=condition=Ready', 'pod', '-l', `app=${app}`, '-n', ns, '--timeout=180s']);
    }
  });

  after(async () => {
    await Promise.all([main?.remove(), other?.remove()]);
  });

  test('deployment/ resolves to each ready replica, with node, IP and container id', async () => {
    const resolved = await resolve('deployment', 'web');
    const pods = (await podsOf('app=web')).sort((a, b) => a.metadata!.name!.localeCompare(b.metadata!.name!));
    assert.equal(resolved.description, `deployment/web in ${ns}`);
    assert.equal(resolved.selector, 'app=web');
    assert.deepEqual(
      resolved.pods,
      pods.map((pod) => ({
        name: pod.metadata!.name,
        namespace: ns,
        uid: pod.metadata!.uid,
        nodeName: pod.spec!.nodeName,
        podIP: pod.status!.podIP,
        container: 'app',
        containerId: pod.status!.containerStatuses![0]!.containerID,
      })),
    );
    assert.match(resolved.pods[0]!.containerId, /^containerd:\/\/[0-9a-f]{64}$/);
  });

  test('a selector with every kind of match expression selects exactly the workload\'s pods', async () => {
    const resolved = await resolve('deployment', 'expr');
    assert.equal(resolved.selector, 'app=expr,tier in (a,b),tier notin (c),app,!canary');
    assert.equal(resolved.pods.length, 1);
    assert.match(resolved.pods[0]!.name, /^expr-[a-z0-9]+-[a-z0-9]+$/);
  });

  test('service/ resolves to the pods its selector selects', async () => {
    const service = await resolve('service', 'web');
    const workload = await resolve('deployment', 'web');
    assert.deepEqual(service.pods, workload.pods);
    assert.equal(service.pods.length, 2);
  });

  test('statefulset/, replicaset/ and job/ resolve to their pods', async () => {
    assert.deepEqual((await resolve('statefulset', 'db')).pods.map((pod) => pod.name), ['db-0']);
    const bare = await resolve('replicaset', 'bare');
    assert.equal(bare.pods.length, 1);
    assert.match(bare.pods[0]!.name, /^bare-/);
    const job = await resolve('job', 'worker');
    assert.equal(job.pods.length, 1);
    assert.match(job.pods[0]!.name, /^worker-/);
    assert.equal(job.pods[0]!.container, 'work');
  });

  test('pod/: the default-container annotation wins over the order of containers', async () => {
    const resolved = await resolve('pod', 'two');
    assert.equal(resolved.podName, 'two');
    assert.equal(resolved.selector, undefined);
    assert.equal(resolved.pods[0]!.container, 'app');
  });

  test('pod/: a mesh sidecar listed first is passed over; a named container is taken as named', async () => {
    assert.equal((await resolve('pod', 'meshed')).pods[0]!.container, 'main');
    const named = await resolve('pod', 'meshed', 'istio-proxy');
    assert.equal(named.pods[0]!.container, 'istio-proxy');
    assert.equal(named.container, 'istio-proxy');
    const pod = await kube.core.readNamespacedPod({ namespace: ns, name: 'meshed' });
    assert.equal(named.pods[0]!.containerId, pod.status!.containerStatuses!.find((status) => status.name === 'istio-proxy')!.containerID);
  });

  test('a container that does not exist lists the containers there are', async () => {
    await fails('pod', 'two', 'E_TARGET_CONTAINER', new RegExp(`^pod/two in ${ns} has no container "ap"$`), /its containers: helper, app; did you mean app\?/, 'ap');
    await fails('deployment', 'web', 'E_TARGET_CONTAINER', /deployment\/web in .* has no container "sidecar"/, /its containers: app/, 'sidecar');
  });

  test('a name that does not exist: did you mean, and the namespace where it does exist', async () => {
    await fails('deployment', 'wbe', 'E_TARGET_NOT_FOUND', new RegExp(`^deployment/wbe not found in namespace ${ns}$`), /did you mean deployment\/web\?/);
    await fails('service', 'webb', 'E_TARGET_NOT_FOUND', /service\/webb not found/, /did you mean service\/web\?/);
    await fails('pod', 'tow', 'E_TARGET_NOT_FOUND', /pod\/tow not found/, /did you mean pod\/two\?/);
    await fails('deployment', 'elsewhere', 'E_TARGET_NOT_FOUND', /deployment\/elsewhere not found/, new RegExp(`exists in namespace ${other.name}: pass -n ${other.name}`));
    await fails('statefulset', 'zzzzzz', 'E_TARGET_NOT_FOUND', /statefulset\/zzzzzz not found/, new RegExp(`doppel ls -n ${ns}`));
  });

  test('a namespace that does not exist is named as the problem', async () => {
    const nowhere = await loadKubeContext({ kubeconfig: adminKubeconfig, namespace: `${ns}-missing` });
    const error = await resolveTarget(nowhere, { kind: 'deployment', name: 'web', container: undefined }).catch((caught: unknown) => caught);
    assert.ok(error instanceof DoppelError);
    assert.equal(error.code, 'E_TARGET_NOT_FOUND');
    assert.equal(error.message, `namespace ${ns}-missing does not exist (looking for deployment/web)`);
    // The cluster is shared: other namespaces may hold a deployment/web too.
    assert.match(error.hint ?? '', new RegExp(`deployment/web exists in namespace ([\\w-]+, )*${ns}(, [\\w-]+)*: pass -n [\\w-]+; check the namespace`));
  });

  test('a Pending pod: the scheduler\'s reason', async () => {
    await poll('the scheduler to give up on the pending pod', async () => {
      const [pod] = await podsOf('app=pending');
      return pod?.status?.conditions?.some((c) => c.type === 'PodScheduled' && c.status === 'False') ? true : undefined;
    });
    await fails(
      'deployment',
      'pending',
      'E_TARGET_NOT_READY',
      /deployment\/pending in .* has no ready pod \(1 pod\): pod pending-\S+ is Pending, not scheduled: 0\/1 nodes are available: 1 node\(s\) didn't match Pod's node affinity\/selector/,
      /nodeSelector, affinity, tolerations/,
    );
  });

  test('a crashing container: CrashLoopBackOff with its last exit code', async () => {
    // Between two back-offs the container shows as exited for a moment; ask until the resolver saw the back-off.
    const error = await poll(
      'the resolver to see the crasher in CrashLoopBackOff',
      async () => {
        const caught: unknown = await resolve('deployment', 'crasher').catch((thrown: unknown) => thrown);
        return caught instanceof DoppelError && caught.message.includes('CrashLoopBackOff') ? caught : undefined;
      },
      180_000,
    );
    assert.equal(error.code, 'E_TARGET_NOT_READY');
    assert.match(error.message, /pod crasher-\S+ container app is in CrashLoopBackOff \(last exit code 3, Error\): back-off \d+s restarting failed container/);
    assert.match(error.hint ?? '', /kubectl logs crasher-\S+ -c app --previous -n /);
  });

  test('an image that cannot be pulled: the waiting reason', async () => {
    await poll('the unpullable pod to wait for its image', async () => {
      const reason = (await podsOf('app=unpullable'))[0]?.status?.containerStatuses?.[0]?.state?.waiting?.reason;
      return reason === 'ErrImageNeverPull' ? true : undefined;
    });
    await fails('deployment', 'unpullable', 'E_TARGET_NOT_READY', /cannot pull the image of container app: ErrImageNeverPull: Container image "doppel\.test\/not-loaded:1" is not present/, /check the image name/);
  });

  test('running but never ready: the failing probe, from the pod\'s events', async () => {
    await poll('the readiness probe to fail', async () => {
      const [pod] = await podsOf('app=unready');
      const running = pod?.status?.containerStatuses?.[0]?.state?.running !== undefined;
      const events = running ? (await kube.core.listNamespacedEvent({ namespace: ns, fieldSelector: `involvedObject.name=${pod!.metadata!.name},reason=Unhealthy` })).items : [];
      return events.length > 0 ? true : undefined;
    });
    await fails('deployment', 'unready', 'E_TARGET_NOT_READY', /pod unready-\S+ is running but not ready: containers with unready status: \[app\] \(Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 404\)/, /readiness probe/);
  });

  test('a Deployment scaled to zero says so', async () => {
    await fails('deployment', 'zero', 'E_TARGET_NOT_READY', new RegExp(`^deployment/zero in ${ns} is scaled to zero replicas$`), /kubectl scale deployment\/zero --replicas=1/);
  });

  test('a Service without a selector', async () => {
    await fails('service', 'manual', 'E_TARGET_NOT_READY', /service\/manual in .* has no selector/);
  });

  test('cronjob/: none running is an error; then the pods of its newest running Job', async () => {
    await fails('cronjob', 'nightly', 'E_TARGET_NOT_READY', new RegExp(`^cronjob/nightly in ${ns} has no running Job \\(it has not run yet\\)$`), /schedule "0 0 1 1 \*".*kubectl create job --from=cronjob\/nightly/);
    await kubectl(['create', 'job', '--from=cronjob/nightly', 'nightly-first', '-n', ns]);
    await kubectl(['wait', '--for=condition=Ready', 'pod', '-l', 'job-name=nightly-first', '-n', ns, '--timeout=180s']);
    const first = await resolve('cronjob', 'nightly');
    assert.equal(first.description, `cronjob/nightly in ${ns} (job nightly-first)`);
    assert.match(first.pods[0]!.name, /^nightly-first-/);
    assert.equal(first.pods[0]!.container, 'batch');
    // Creation times have whole seconds: the second Job must be newer by one.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    await kubectl(['create', 'job', '--from=cronjob/nightly', 'nightly-second', '-n', ns]);
    await kubectl(['wait', '--for=condition=Ready', 'pod', '-l', 'job-name=nightly-second', '-n', ns, '--timeout=180s']);
    const newest = await resolve('cronjob', 'nightly');
    assert.equal(newest.pods.length, 1);
    assert.match(newest.pods[0]!.name, /^nightly-second-/);
  });

  test('a Job that has finished says so', async () => {
    await apply([{ apiVersion: 'batch/v1', kind: 'Job', metadata: { name: 'done', namespace: ns }, spec: { backoffLimit: 0, template: { spec: { restartPolicy: 'Never', containers: [{ name: 'once', image: testImage, imagePullPolicy: 'Never', command: ['true'] }] } } } }]);
    await kubectl(['wait', '--for=condition=Complete', 'job/done', '-n', ns, '--timeout=180s']);
    await fails('job', 'done', 'E_TARGET_NOT_READY', /job\/done in .* has no ready pod \(1 pod\): pod done-\S+ has ended: Succeeded/);
  });

  test('rollout/ without Argo Rollouts installed says the CRD is missing', async () => {
    await fails('rollout', 'web', 'E_TARGET_CRD_MISSING', /rollout targets need Argo Rollouts, and the cluster of context \S+ does not serve rollouts\.argoproj\.io/, /install Argo Rollouts/);
  });
});
