// `doppel ls` through bin/doppel (run `npm run build:ts` first) against real workloads on the test cluster.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { after, before, describe, test } from 'node:test';
import { loadKubeContext } from '../../src/platform/kubernetes/kube-context.ts';
import { adminKubeconfig, apply, createNamespace, deployment, httpdContainer, kubectl, needsCluster, podTemplate, poll, rolloutStatus, sleeperContainer } from './support/cluster.ts';

const bin = path.resolve(import.meta.dirname, '../../bin/doppel');

function doppel(args: string[], env: NodeJS.ProcessEnv = {}, cwd = process.cwd()): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(bin, args, { cwd, env: { PATH: process.env.PATH, HOME: process.env.HOME, KUBECONFIG: adminKubeconfig, ...env }, encoding: 'utf8', timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('doppel ls', needsCluster('the doppel ls tests'), () => {
  let main: Awaited<ReturnType<typeof createNamespace>>;
  let other: Awaited<ReturnType<typeof createNamespace>>;
  let ns = '';
  const dir = mkdtempSync(path.join(tmpdir(), 'doppel-ls-'));
  let expected: string[] = [];

  before(async () => {
    [main, other] = await Promise.all([createNamespace('ls'), createNamespace('ls-other')]);
    ns = main.name;
    const job = (name: string, app: string) => ({ backoffLimit: 0, template: { metadata: { labels: { app } }, spec: { terminationGracePeriodSeconds: 0, restartPolicy: 'Never', containers: [sleeperContainer(name)] } } });
    await apply([
      deployment(ns, 'web', 2),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: ns }, spec: { selector: { app: 'web' }, ports: [{ port: 80 }] } },
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'manual', namespace: ns }, spec: { ports: [{ port: 80 }] } },
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'two', namespace: ns }, spec: { terminationGracePeriodSeconds: 0, containers: [sleeperContainer('helper'), httpdContainer('app')] } },
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'stuck', namespace: ns }, spec: { terminationGracePeriodSeconds: 0, nodeSelector: { 'doppel.test/no-such-node': 'true' }, containers: [httpdContainer()] } },
      { apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name: 'db', namespace: ns }, spec: { serviceName: 'db', replicas: 1, selector: { matchLabels: { app: 'db' } }, template: podTemplate('db', [httpdContainer()]) } },
      { apiVersion: 'apps/v1', kind: 'ReplicaSet', metadata: { name: 'bare', namespace: ns }, spec: { replicas: 0, selector: { matchLabels: { app: 'bare' } }, template: podTemplate('bare', [httpdContainer()]) } },
      { apiVersion: 'batch/v1', kind: 'Job', metadata: { name: 'worker', namespace: ns }, spec: job('work', 'worker') },
      { apiVersion: 'batch/v1', kind: 'CronJob', metadata: { name: 'nightly', namespace: ns }, spec: { schedule: '0 0 1 1 *', jobTemplate: { spec: job('batch', 'nightly') } } },
      deployment(other.name, 'elsewhere', 1, [sleeperContainer('app')]),
    ]);
    await kubectl(['create', 'job', '--from=cronjob/nightly', 'nightly-manual', '-n', ns]);
    await Promise.all([rolloutStatus('deployment/web', ns), rolloutStatus('statefulset/db', ns), rolloutStatus('deployment/elsewhere', other.name)]);
    await kubectl(['wait', '--for=condition=Ready', 'pod/two', '-n', ns, '--timeout=180s']);
    for (const app of ['worker', 'nightly']) {
      await poll(`a pod of ${app}`, async () => ((await kubectl(['get', 'pods', '-l', `app=${app}`, '-n', ns, '-o', 'name'])).trim() !== '' ? true : undefined));
      await kubectl(['wait', '--for=condition=Ready', 'pod', '-l', `app=${app}`, '-n', ns, '--timeout=180s']);
    }
    const running = (await kubectl(['get', 'pods', '-n', ns, '--field-selector=status.phase=Running', '-o', 'jsonpath={range .items[*]}{.metadata.name}{"\\n"}{end}'])).trim().split('\n');
    const pods = running.flatMap((pod) => (pod === 'two' ? ['pod/two/container/app', 'pod/two/container/helper'] : [`pod/${pod}/container/${/^worker-/.test(pod) ? 'work' : /^nightly-/.test(pod) ? 'batch' : 'app'}`]));
    assert.equal(pods.length, 7, `running pods: ${running.join(' ')}`);
    // nightly-manual belongs to the CronJob and the web ReplicaSet to its Deployment: only their owners are listed.
    expected = [...pods, 'cronjob/nightly', 'deployment/web', 'job/worker', 'replicaset/bare', 'service/web', 'statefulset/db'].sort();
  });

  after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await Promise.all([main?.remove(), other?.remove()]);
  });

  test('lists every target of a namespace, sorted, one per line, with progress on stderr', async () => {
    const result = await doppel(['ls', '-n', ns]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(result.stdout.trimEnd().split('\n'), expected);
    assert.match(result.stderr, new RegExp(`^doppel: listing targets in namespace ${ns} \\(context doppel-test\\) \\(\\d+\\.\\d+s, \\d+\\.\\d+s total\\)$`, 'm'));
    // Each one is accepted by --target's parser and resolves.
    const kube = await loadKubeContext({ kubeconfig: adminKubeconfig, namespace: ns });
    const { parseTarget } = await import('../../src/config/target.ts');
    const { resolveTarget } = await import('../../src/platform/kubernetes/resolve-target.ts');
    for (const line of expected.filter((entry) => !entry.startsWith('cronjob/') && !entry.startsWith('replicaset/'))) {
      const target = parseTarget(line);
      assert.ok(target.kind !== 'process' && target.kind !== 'container' && target.kind !== 'targetless');
      const resolved = await resolveTarget(kube, target);
      assert.ok(resolved.pods.length > 0, line);
    }
  });

  test('--json prints an array of strings; -A --json objects with the namespace', async () => {
    const json = await doppel(['ls', '-n', ns, '--json', '-q']);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), expected);
    assert.equal(json.stderr, '');
    const all = await doppel(['ls', '-A', '--json', '-q']);
    assert.equal(all.code, 0, all.stderr);
    const entries = JSON.parse(all.stdout) as { namespace: string; target: string }[];
    assert.deepEqual(entries.filter((entry) => entry.namespace === ns).map((entry) => entry.target), expected);
    assert.deepEqual(entries.filter((entry) => entry.namespace === other.name).map((entry) => entry.target).filter((t) => !t.startsWith('pod/')), ['deployment/elsewhere']);
    assert.ok(entries.some((entry) => entry.namespace === 'kube-system' && entry.target === 'deployment/coredns'));
  });

  test('-A as text: namespace and target in columns', async () => {
    const result = await doppel(['ls', '-A', '-q']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`^${other.name} +deployment/elsewhere$`, 'm'));
    assert.match(result.stdout, /^kube-system +deployment\/coredns$/m);
  });

  test('the namespace comes from the config file and the context\'s, the kubeconfig from the `kubeconfig` key', async () => {
    const config = path.join(dir, 'doppel.json');
    writeFileSync(config, JSON.stringify({ target: { namespace: ns }, kubeconfig: adminKubeconfig }));
    const result = await doppel(['ls', '-f', config, '--json', '-q'], { KUBECONFIG: path.join(dir, 'none') });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(JSON.parse(result.stdout), expected);
    // No -n and no config: the context has no namespace, so `default`.
    const fallback = await doppel(['ls']);
    assert.match(fallback.stderr, /listing targets in namespace default /);
  });

  test('an unknown context, and a missing kubeconfig: one line and a hint, exit 1', async () => {
    const unknown = await doppel(['ls', '--context', 'nope']);
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stderr, `doppel: no context "nope" in ${adminKubeconfig} [E_KUBE_CONTEXT]\n  hint: known contexts: doppel-test\n`);
    const missing = await doppel(['ls'], { KUBECONFIG: path.join(dir, 'none') });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^doppel: no kubeconfig: none of the files in KUBECONFIG exists .* \[E_KUBECONFIG_MISSING\]\n  hint: /);
  });

  test('RBAC: no rights is an error naming the denied call; partial rights list what is allowed and warn once', async () => {
    const admin = await loadKubeContext({ kubeconfig: adminKubeconfig });
    await apply([
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'nobody', namespace: ns } },
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'pods-only', namespace: ns } },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'list-pods', namespace: ns }, rules: [{ apiGroups: [''], resources: ['pods'], verbs: ['list'] }] },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: 'pods-only', namespace: ns },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'list-pods' },
        subjects: [{ kind: 'ServiceAccount', name: 'pods-only', namespace: ns }],
      },
    ]);
    const kubeconfigFor = async (account: string) => {
      const token = (await kubectl(['create', 'token', account, '-n', ns, '--duration=10m'])).trim();
      const file = path.join(dir, `${account}.kubeconfig`);
      writeFileSync(
        file,
        JSON.stringify({
          apiVersion: 'v1',
          kind: 'Config',
          clusters: [{ name: 'c', cluster: { server: admin.server, 'certificate-authority': admin.config.getCurrentCluster()?.caFile } }],
          users: [{ name: account, user: { token } }],
          contexts: [{ name: account, context: { cluster: 'c', user: account, namespace: ns } }],
          'current-context': account,
        }),
      );
      return file;
    };
    const none = await doppel(['ls'], { KUBECONFIG: await kubeconfigFor('nobody') });
    assert.equal(none.code, 1);
    assert.match(none.stderr, new RegExp(`^doppel: not allowed to list \\S+ in namespace ${ns} as system:serviceaccount:${ns}:nobody \\(403 Forbidden\\) \\[E_KUBE_FORBIDDEN\\]\\n  hint: check with \`kubectl --context nobody auth can-i list \\S+ -n ${ns}\``));
    const some = await doppel(['ls', '--json'], { KUBECONFIG: await kubeconfigFor('pods-only') });
    assert.equal(some.code, 0, some.stderr);
    assert.deepEqual(JSON.parse(some.stdout), expected.filter((entry) => entry.startsWith('pod/')));
    assert.match(
      some.stderr,
      new RegExp(`^doppel: warning: not allowed to list cronjobs\\.batch, deployments\\.apps, jobs\\.batch, replicasets\\.apps, rollouts\\.argoproj\\.io, services, statefulsets\\.apps in namespace ${ns}; those targets are left out \\(check with \`kubectl --context pods-only auth can-i list cronjobs\\.batch -n ${ns}\`\\)$`, 'm'),
    );
  });
});
