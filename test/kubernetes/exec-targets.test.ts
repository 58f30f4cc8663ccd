// `doppel exec` against each kind of Kubernetes target on the test cluster: the program sees that target's
// environment (the container the target names, else the default-container annotation's), and targetless has none
// but resolves and reaches a Service by its short name from a pod in the namespace. No agent stays behind.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runDoppel } from '../e2e/run-doppel.ts';
import { adminKubeconfig, apply, createNamespace, deployment, httpdContainer, kubectl, needsCluster, podTemplate, rolloutStatus } from './support/cluster.ts';
import { assertNothingLeft, podStates } from './support/doppel-objects.ts';

const env = { ...process.env, KUBECONFIG: adminKubeconfig };

/** An app container that says which target it belongs to in $KIND. */
const app = (kind: string, name = 'app') => ({ ...httpdContainer(name), env: [{ name: 'KIND', value: kind }] });

describe('doppel exec against each target kind', needsCluster('doppel exec target kinds'), () => {
  let namespace: Awaited<ReturnType<typeof createNamespace>>;
  let ns = '';
  let before_ = '';

  const exec = (target: string, command: string[]) => runDoppel(['exec', '--target', target, '-n', ns, '--', ...command], { env, timeoutMs: 120_000 });
  const echoKind = async (target: string) => {
    const result = await exec(target, ['sh', '-c', 'echo "${KIND:-none}"']);
    assert.equal(result.status, 0, result.stderr);
    return { kind: result.stdout.trim(), stderr: result.stderr };
  };

  before(async () => {
    namespace = await createNamespace('targets');
    ns = namespace.name;
    const labelled = (name: string) => ({ selector: { matchLabels: { app: name } }, template: podTemplate(name, [app(name)]) });
    await apply([
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'single', namespace: ns }, spec: { terminationGracePeriodSeconds: 0, containers: [app('pod')] } },
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'duo', namespace: ns, annotations: { 'kubectl.kubernetes.io/default-container': 'second' } },
        spec: { terminationGracePeriodSeconds: 0, containers: [app('first container', 'first'), { ...app('second container', 'second'), command: ['/bin/httpd', '-f', '-p', '8081', '-h', '/www'], ports: [], readinessProbe: undefined }] },
      },
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'db', namespace: ns }, spec: { clusterIP: 'None', selector: { app: 'statefulset' }, ports: [{ port: 8080 }] } },
      { apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name: 'db', namespace: ns }, spec: { serviceName: 'db', replicas: 1, ...labelled('statefulset') } },
      { apiVersion: 'apps/v1', kind: 'ReplicaSet', metadata: { name: 'rs', namespace: ns }, spec: { replicas: 1, ...labelled('replicaset') } },
      { apiVersion: 'batch/v1', kind: 'Job', metadata: { name: 'batch', namespace: ns }, spec: { backoffLimit: 0, template: { spec: { restartPolicy: 'Never', terminationGracePeriodSeconds: 0, containers: [app('job')] } } } },
      // Scheduled far away: its Job is started by hand, as the error for a CronJob with none running suggests.
      {
        apiVersion: 'batch/v1',
        kind: 'CronJob',
        metadata: { name: 'nightly', namespace: ns },
        spec: { schedule: '0 0 1 1 *', jobTemplate: { spec: { backoffLimit: 0, template: { spec: { restartPolicy: 'Never', terminationGracePeriodSeconds: 0, containers: [app('cronjob')] } } } } },
      },
      deployment(ns, 'web', 1, [app('service')]),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'front', namespace: ns }, spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] } },
    ]);
    await kubectl(['create', 'job', '--from=cronjob/nightly', 'nightly-now', '-n', ns]);
    await rolloutStatus('deployment/web', ns);
    await rolloutStatus('statefulset/db', ns);
    await kubectl(['wait', '--for=condition=Ready', 'pod', '--all', '-n', ns, '--timeout=120s']);
    before_ = await podStates(ns);
  });
  after(async () => {
    await namespace?.remove();
  });

  test('pod/NAME', async () => {
    const { kind, stderr } = await echoKind('pod/single');
    assert.equal(kind, 'pod');
    assert.match(stderr, /starting the agent next to single on doppel-node/);
  });

  test('pod/NAME without a container: the default-container annotation chooses', async () => {
    assert.equal((await echoKind('pod/duo')).kind, 'second container');
  });

  test('pod/NAME/container/C: the named container', async () => {
    assert.equal((await echoKind('pod/duo/container/first')).kind, 'first container');
    assert.equal((await echoKind('pod/duo/container/second')).kind, 'second container');
  });

  test('statefulset/, replicaset/, job/', async () => {
    assert.equal((await echoKind('statefulset/db')).kind, 'statefulset');
    assert.equal((await echoKind('replicaset/rs')).kind, 'replicaset');
    assert.equal((await echoKind('job/batch')).kind, 'job');
  });

  test('cronjob/: the pods of its running Job', async () => {
    const { kind, stderr } = await echoKind('cronjob/nightly');
    assert.equal(kind, 'cronjob');
    assert.match(stderr, /starting the agent next to nightly-now-/);
  });

  test('service/: the pods it selects', async () => {
    assert.equal((await echoKind('service/front')).kind, 'service');
  });

  test('targetless: no target environment, but cluster DNS and outgoing from the namespace', async () => {
    const result = await exec('targetless', ['sh', '-c', 'echo "kind=${KIND:-none}"; curl -sS --max-time 10 http://front/message.txt']);
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, 'kind=none\nhello from the doppel test app image\n');
    assert.match(result.stderr, new RegExp(`starting the agent in namespace ${ns}`));
  });

  test('no agent stays behind, and the target pods are unchanged', async () => {
    await assertNothingLeft(ns);
    assert.equal(await podStates(ns), before_);
  });
});
