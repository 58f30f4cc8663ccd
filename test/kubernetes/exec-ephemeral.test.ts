// The ephemeral-container agent (`-e`) on the test cluster: the agent joins each target pod instead of running as
// a Job; the program sees the target container's environment, files, DNS and network; no Job is made; the
// container stays in the pod's spec, terminated, and the pod is otherwise unchanged; image errors are one line.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runDoppel, startDoppel } from '../e2e/run-doppel.ts';
import { adminKubeconfig, apply, createNamespace, deployment, httpdContainer, kubectl, needsCluster, poll, rolloutStatus, serviceRouted } from './support/cluster.ts';
import { assertOneLineError, doppelObjects, podStates } from './support/doppel-objects.ts';
import { serviceAccountKubeconfigs, type ServiceAccountKubeconfigs } from './support/service-account.ts';

const env = { ...process.env, KUBECONFIG: adminKubeconfig };
const settings = '{"mode":"ephemeral"}\n';

interface EphemeralState {
  name: string;
  target: string;
  state: string;
}

describe('doppel exec -e: the agent as an ephemeral container', needsCluster('the ephemeral-container agent'), () => {
  let namespace: Awaited<ReturnType<typeof createNamespace>>;
  let ns = '';
  let accounts: ServiceAccountKubeconfigs;

  const exec = (target: string, command: string[], flags: string[] = []) => runDoppel(['exec', '-e', '--target', target, '-n', ns, ...flags, '--', ...command], { env, timeoutMs: 120_000 });
  const ephemeralContainers = async (pod: string): Promise<EphemeralState[]> => {
    const out = await kubectl(['get', 'pod', pod, '-n', ns, '-o', 'json']);
    const object = JSON.parse(out) as {
      spec: { ephemeralContainers?: { name: string; targetContainerName: string }[] };
      status: { ephemeralContainerStatuses?: { name: string; state: Record<string, unknown> }[] };
    };
    return (object.spec.ephemeralContainers ?? []).map((container) => ({
      name: container.name,
      target: container.targetContainerName,
      state: Object.keys(object.status.ephemeralContainerStatuses?.find((s) => s.name === container.name)?.state ?? {})[0] ?? 'none',
    }));
  };
  const webPods = async () => (await kubectl(['get', 'pods', '-n', ns, '-l', 'app=web', '-o', 'jsonpath={.items[*].metadata.name}'])).split(' ').sort();

  before(async () => {
    namespace = await createNamespace('ephemeral');
    ns = namespace.name;
    const app = { ...httpdContainer(), env: [{ name: 'GREETING', value: 'hello from web' }], volumeMounts: [{ name: 'config', mountPath: '/etc/web' }] };
    await apply([
      { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'web-config', namespace: ns }, data: { 'settings.json': settings } },
      deployment(ns, 'web', 2, [app], { volumes: [{ name: 'config', configMap: { name: 'web-config' } }] }),
      deployment(ns, 'orders', 1),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'orders', namespace: ns }, spec: { selector: { app: 'orders' }, ports: [{ port: 80, targetPort: 8080 }] } },
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'duo', namespace: ns },
        spec: {
          terminationGracePeriodSeconds: 0,
          containers: [
            { ...httpdContainer('first'), env: [{ name: 'WHO', value: 'first' }] },
            { ...httpdContainer('second'), command: ['/bin/httpd', '-f', '-p', '8081', '-h', '/www'], ports: [], readinessProbe: undefined, env: [{ name: 'WHO', value: 'second' }] },
          ],
        },
      },
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'lonely', namespace: ns }, spec: { terminationGracePeriodSeconds: 0, containers: [httpdContainer()] } },
      // May read the target but not add containers to its pods.
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'reader', namespace: ns } },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'reader', namespace: ns }, rules: [{ apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] }] },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'reader', namespace: ns }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'reader' }, subjects: [{ kind: 'ServiceAccount', name: 'reader', namespace: ns }] },
    ]);
    accounts = await serviceAccountKubeconfigs();
    await rolloutStatus('deployment/web', ns);
    await rolloutStatus('deployment/orders', ns);
    await serviceRouted(ns, 'orders');
    await kubectl(['wait', '--for=condition=Ready', 'pod', '--all', '-n', ns, '--timeout=120s']);
  });
  after(async () => {
    accounts?.remove();
    await namespace?.remove();
  });

  test('every replica gets an ephemeral agent; env, a mounted file, DNS and a Service work; no Job', async () => {
    const before_ = await podStates(ns, 'app=web');
    const { child, finished } = startDoppel(['exec', '-e', '--target', 'deployment/web', '-n', ns, '--', 'sh', '-c', 'echo "$GREETING"; cat /etc/web/settings.json; curl -sS --max-time 10 http://orders/message.txt; sleep 3'], { env, timeoutMs: 120_000 });
    let jobsSeen = 0;
    // While the session runs: its agents live in the target pods, so there is no doppel Job or pod to see.
    const watching = (async () => {
      while (child.exitCode === null) {
        jobsSeen += (await doppelObjects(ns)).length;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    })();
    const result = await finished;
    await watching;
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, `hello from web\n${settings}hello from the doppel test app image\n`);
    assert.match(result.stderr, /starting 2 agents in web-\S+, web-\S+ on doppel-node/);
    assert.equal(jobsSeen, 0, 'no doppel Job or pod while the session ran');

    for (const pod of await webPods()) {
      const containers = await poll(`the agent in ${pod} to end`, async () => {
        const now = await ephemeralContainers(pod);
        return now.every((c) => c.state === 'terminated') ? now : undefined;
      }, 30_000);
      assert.equal(containers.length, 1, `one ephemeral container in ${pod}`);
      assert.match(containers[0]!.name, /^doppel-agent-[0-9a-f]{8}-[0-9a-f]{4}$/);
      assert.equal(containers[0]!.target, 'app');
    }
    assert.equal(await podStates(ns, 'app=web'), before_, 'the target pods changed');
  });

  test('the container a target names: the agent shares that container\'s processes; a second session adds another', async () => {
    const first = await exec('pod/duo/container/first', ['sh', '-c', 'echo "$WHO"']);
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.stdout, 'first\n');
    const second = await exec('pod/duo/container/second', ['sh', '-c', 'echo "$WHO"'], ['-q']);
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.stdout, 'second\n');
    const containers = await ephemeralContainers('duo');
    assert.deepEqual(containers.map((c) => c.target).sort(), ['first', 'second']);
    assert.notEqual(containers[0]!.name, containers[1]!.name);
  });

  test('RBAC: no right to add the agent container: the subresource is named', async () => {
    const result = await runDoppel(['exec', '-e', '--target', 'pod/lonely', '-n', ns, '--', 'true'], { env: { ...process.env, KUBECONFIG: await accounts.forAccount('reader', ns) } });
    assert.equal(result.status, 1);
    assertOneLineError(result.stderr, 'E_KUBE_FORBIDDEN', new RegExp(`not allowed to patch pods/ephemeralcontainers lonely in namespace ${ns} as system:serviceaccount:${ns}:reader \\(403 Forbidden\\)`));
    assert.deepEqual(await ephemeralContainers('lonely'), []);
  });

  test('an agent image that cannot be pulled: one line naming the image and the reason', async () => {
    const result = await exec('pod/lonely', ['true'], ['--agent-image', 'localhost/doppel-agent:does-not-exist']);
    assert.equal(result.status, 1);
    assertOneLineError(result.stderr, 'E_AGENT_IMAGE', /the agent image localhost\/doppel-agent:does-not-exist cannot be pulled on node doppel-node: (ErrImagePull|ImagePullBackOff)/);
    assert.equal((await kubectl(['get', 'pod', 'lonely', '-n', ns, '-o', 'jsonpath={.status.containerStatuses[0].restartCount}'])), '0');
  });
});
