// Finding the kubeconfig, context and namespace like kubectl, and the one-line errors for each way that goes wrong,
// against real files, a closed port, and the test cluster with a ServiceAccount that may do nothing; a user whose
// token comes from a credential plugin, as on the clouds' clusters.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DoppelError } from '../../src/errors.ts';
import { loadKubeContext } from '../../src/platform/kubernetes/kube-context.ts';
import { resolveTarget } from '../../src/platform/kubernetes/resolve-target.ts';
import { runDoppel } from '../e2e/run-doppel.ts';
import { adminKubeconfig, apply, createNamespace, deployment, kubectl, needsCluster, rolloutStatus } from './support/cluster.ts';
import { assertNothingLeft } from './support/doppel-objects.ts';
import { hostGone, hostOf } from './support/warm-session.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'doppel-kubeconfig-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function kubeconfigFile(name: string, config: { server: string; contexts: { name: string; namespace?: string }[]; current?: string; user?: Record<string, unknown>; cluster?: Record<string, unknown> }): string {
  const file = path.join(dir, name);
  const document = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: `${name}-cluster`, cluster: { server: config.server, ...config.cluster } }],
    users: [{ name: `${name}-user`, user: config.user ?? { token: 'unused' } }],
    contexts: config.contexts.map((context) => ({ name: context.name, context: { cluster: `${name}-cluster`, user: `${name}-user`, namespace: context.namespace } })),
    'current-context': config.current,
  };
  writeFileSync(file, JSON.stringify(document));
  return file;
}

async function rejects(promise: Promise<unknown>, code: string, message: RegExp, hint?: RegExp): Promise<DoppelError> {
  const error = await promise.then(
    () => assert.fail(`expected ${code}`),
    (caught: unknown) => caught,
  );
  assert.ok(error instanceof DoppelError, `not a DoppelError: ${String(error)}`);
  assert.equal(error.code, code, error.message);
  assert.match(error.message, message);
  assert.doesNotMatch(error.message, /\n/, 'the message is one line');
  if (hint) assert.match(error.hint ?? '', hint);
  return error;
}

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('finding the kubeconfig', () => {
  test('no KUBECONFIG, no ~/.kube/config and not in a pod: says so', async () => {
    const env = { HOME: path.join(dir, 'empty-home') };
    await rejects(loadKubeContext({ env }), 'E_KUBECONFIG_MISSING', /KUBECONFIG is not set and .*empty-home\/\.kube\/config does not exist/, /set KUBECONFIG/);
  });

  test('KUBECONFIG naming only missing files, and an explicit path that is missing', async () => {
    await rejects(loadKubeContext({ env: { KUBECONFIG: `${dir}/a:${dir}/b` } }), 'E_KUBECONFIG_MISSING', /none of the files in KUBECONFIG exists/);
    await rejects(loadKubeContext({ kubeconfig: `${dir}/missing`, env: {} }), 'E_KUBECONFIG_MISSING', /kubeconfig .*missing does not exist/, /`kubeconfig` key/);
  });

  test('~/.kube/config is used when KUBECONFIG is unset; the explicit path wins over KUBECONFIG', async () => {
    const home = path.join(dir, 'home-dir');
    const file = kubeconfigFile('home', { server: 'https://127.0.0.1:1', contexts: [{ name: 'at-home', namespace: 'home-ns' }], current: 'at-home' });
    mkdirSync(path.join(home, '.kube'), { recursive: true });
    writeFileSync(path.join(home, '.kube', 'config'), readFileSync(file));
    const fromHome = await loadKubeContext({ env: { HOME: home } });
    assert.equal(fromHome.contextName, 'at-home');
    assert.equal(fromHome.namespace, 'home-ns');
    const explicit = kubeconfigFile('explicit', { server: 'https://127.0.0.1:2', contexts: [{ name: 'explicit' }], current: 'explicit' });
    const chosen = await loadKubeContext({ kubeconfig: explicit, env: { HOME: home, KUBECONFIG: file } });
    assert.equal(chosen.contextName, 'explicit');
    assert.equal(chosen.server, 'https://127.0.0.1:2');
  });

  test('KUBECONFIG files are merged, the first to set a value wins, and missing ones are skipped', async () => {
    const first = kubeconfigFile('first', { server: 'https://127.0.0.1:11', contexts: [{ name: 'shared', namespace: 'from-first' }], current: 'shared' });
    const second = kubeconfigFile('second', { server: 'https://127.0.0.1:12', contexts: [{ name: 'shared', namespace: 'from-second' }, { name: 'only-second' }], current: 'only-second' });
    const env = { KUBECONFIG: [first, `${dir}/absent`, second].join(':') };
    const merged = await loadKubeContext({ env });
    assert.equal(merged.contextName, 'shared');
    assert.equal(merged.namespace, 'from-first');
    assert.equal(merged.server, 'https://127.0.0.1:11');
    const other = await loadKubeContext({ env, context: 'only-second' });
    assert.equal(other.server, 'https://127.0.0.1:12');
    // No namespace in the context: `default`; an explicit one wins over the context's.
    assert.equal(other.namespace, 'default');
    assert.equal((await loadKubeContext({ env, namespace: 'flag-ns' })).namespace, 'flag-ns');
  });

  test('an unknown context lists the known ones; a kubeconfig without current-context asks for one', async () => {
    const file = kubeconfigFile('contexts', { server: 'https://127.0.0.1:1', contexts: [{ name: 'dev' }, { name: 'prod' }] });
    await rejects(loadKubeContext({ kubeconfig: file, context: 'stage' }), 'E_KUBE_CONTEXT', /no context "stage" in .*contexts/, /known contexts: dev, prod/);
    await rejects(loadKubeContext({ kubeconfig: file }), 'E_KUBE_CONTEXT', /sets no current-context/, /pass --context \(known: dev, prod\)/);
  });

  test('a broken kubeconfig names the file and the problem', async () => {
    const unparsable = path.join(dir, 'unparsable');
    writeFileSync(unparsable, 'clusters: [ {name: x\n  - oops: :\n');
    await rejects(loadKubeContext({ kubeconfig: unparsable }), 'E_KUBECONFIG_INVALID', /cannot use kubeconfig .*unparsable: /, /kubectl config view/);
    const noServer = path.join(dir, 'no-server');
    writeFileSync(noServer, JSON.stringify({ clusters: [{ name: 'c', cluster: {} }], contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }], 'current-context': 'x' }));
    await rejects(loadKubeContext({ kubeconfig: noServer }), 'E_KUBECONFIG_INVALID', /clusters\[0\]\.cluster\.server is missing/);
    const dangling = path.join(dir, 'dangling');
    writeFileSync(dangling, JSON.stringify({ clusters: [], contexts: [{ name: 'x', context: { cluster: 'gone', user: 'u' } }], 'current-context': 'x' }));
    await rejects(loadKubeContext({ kubeconfig: dangling }), 'E_KUBECONFIG_INVALID', /context "x" names cluster "gone", which it does not define/);
    const prose = path.join(dir, 'prose');
    writeFileSync(prose, 'this is not a kubeconfig\n');
    await rejects(loadKubeContext({ kubeconfig: prose }), 'E_KUBECONFIG_INVALID', /holds no clusters, users or contexts/);
  });

  test('an API server nobody listens on: the URL and ECONNREFUSED', async () => {
    const port = await closedPort();
    const file = kubeconfigFile('closed', { server: `https://127.0.0.1:${port}`, contexts: [{ name: 'closed' }], current: 'closed', cluster: { 'insecure-skip-tls-verify': true } });
    const kube = await loadKubeContext({ kubeconfig: file, namespace: 'anywhere' });
    await rejects(
      resolveTarget(kube, { kind: 'deployment', name: 'api', container: undefined }),
      'E_KUBE_UNREACHABLE',
      new RegExp(`cannot reach the API server at https://127\\.0\\.0\\.1:${port} \\(context closed\\): ECONNREFUSED`),
      /kubectl --context closed cluster-info/,
    );
  });

  test('a credential plugin (as EKS, GKE and AKS use) that fails, or is not installed: said as the plugin\'s, with its own words', async () => {
    const plugin = (command: string, args: string[]) => ({ exec: { apiVersion: 'client.authentication.k8s.io/v1beta1', command, args, interactiveMode: 'Never' } });
    const expired = kubeconfigFile('plugin-fails', { server: 'https://127.0.0.1:1', contexts: [{ name: 'cloud' }], current: 'cloud', user: plugin('sh', ['-c', 'echo "error: the SSO session has expired," >&2; echo "run: cloud login" >&2; exit 1']) });
    await rejects(
      loadKubeContext({ kubeconfig: expired }),
      'E_KUBE_CREDENTIALS',
      /^the kubeconfig's credential plugin sh \(context cloud\) failed: error: the SSO session has expired, run: cloud login$/,
      /log in again with your cloud's CLI; `kubectl --context cloud get --raw \/version` runs the same plugin/,
    );
    const missing = kubeconfigFile('plugin-missing', { server: 'https://127.0.0.1:1', contexts: [{ name: 'cloud' }], current: 'cloud', user: plugin('doppel-test-no-such-plugin', []) });
    await rejects(loadKubeContext({ kubeconfig: missing }), 'E_KUBE_CREDENTIALS', /credential plugin doppel-test-no-such-plugin \(context cloud\) is not installed or not on PATH/, /gke-gcloud-auth-plugin/);
  });

  test('a certificate file the kubeconfig names but that does not exist', async () => {
    const port = await closedPort();
    const file = kubeconfigFile('nocert', { server: `https://127.0.0.1:${port}`, contexts: [{ name: 'nocert' }], current: 'nocert', user: { 'client-certificate': 'missing.crt', 'client-key': 'missing.key' } });
    const kube = await loadKubeContext({ kubeconfig: file, namespace: 'x' });
    await rejects(resolveTarget(kube, { kind: 'pod', name: 'p', container: undefined }), 'E_KUBECONFIG_INVALID', /names .*missing\.(crt|key), which does not exist/);
  });
});

describe('credentials and RBAC on the test cluster', needsCluster('the Kubernetes RBAC tests'), () => {
  let namespace: Awaited<ReturnType<typeof createNamespace>>;
  let server = '';
  let caFile = '';

  before(async () => {
    namespace = await createNamespace('rbac');
    const ns = namespace.name;
    await apply([
      deployment(ns, 'api', 1),
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'nobody', namespace: ns } },
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'reader', namespace: ns } },
      // May read Deployments but not list their pods: the error must name the one call that was denied.
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'deployments-only', namespace: ns }, rules: [{ apiGroups: ['apps'], resources: ['deployments'], verbs: ['get'] }] },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: 'reader', namespace: ns },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'deployments-only' },
        subjects: [{ kind: 'ServiceAccount', name: 'reader', namespace: ns }],
      },
    ]);
    const admin = await loadKubeContext({ kubeconfig: adminKubeconfig });
    server = admin.server;
    caFile = admin.config.getCurrentCluster()?.caFile ?? '';
    assert.ok(caFile !== '', 'the admin kubeconfig names its CA by file');
    await rolloutStatus('deployment/api', ns);
  });

  after(async () => {
    await namespace?.remove();
  });

  /** A kubeconfig for a ServiceAccount, with a token from the TokenRequest API. */
  async function serviceAccountKubeconfig(account: string): Promise<string> {
    const token = (await kubectl(['create', 'token', account, '-n', namespace.name, '--duration=10m'])).trim();
    return kubeconfigFile(`sa-${account}`, { server, contexts: [{ name: account, namespace: namespace.name }], current: account, cluster: { 'certificate-authority': caFile }, user: { token } });
  }

  test('a ServiceAccount without rights: which verb on which resource in which namespace, and the can-i line', async () => {
    const kube = await loadKubeContext({ kubeconfig: await serviceAccountKubeconfig('nobody') });
    const ns = namespace.name;
    const error = await rejects(
      resolveTarget(kube, { kind: 'deployment', name: 'api', container: undefined }),
      'E_KUBE_FORBIDDEN',
      new RegExp(`not allowed to get deployments\\.apps api in namespace ${ns} as system:serviceaccount:${ns}:nobody \\(403 Forbidden\\)`),
    );
    assert.equal(error.hint, `check with \`kubectl --context nobody auth can-i get deployments.apps -n ${ns}\`; ask a cluster admin for a Role that allows it`);
    assert.equal(error.category, 'permission');
  });

  test('allowed to read the Deployment but not to list its pods: the pods call is named', async () => {
    const kube = await loadKubeContext({ kubeconfig: await serviceAccountKubeconfig('reader') });
    const error = await rejects(resolveTarget(kube, { kind: 'deployment', name: 'api', container: undefined }), 'E_KUBE_FORBIDDEN', new RegExp(`not allowed to list pods in namespace ${namespace.name}`));
    assert.match(error.hint ?? '', new RegExp(`auth can-i list pods -n ${namespace.name}\``));
  });

  test('the can-i line of the hint agrees with the cluster', async () => {
    const file = await serviceAccountKubeconfig('reader');
    const ask = (verb: string, resource: string) =>
      kubectl(['auth', 'can-i', verb, resource, '-n', namespace.name], { kubeconfig: file }).then(
        (answer) => answer.trim(),
        () => 'no',
      );
    assert.equal(await ask('get', 'deployments.apps'), 'yes');
    assert.equal(await ask('list', 'pods'), 'no');
  });

  test('a token from a credential plugin: doppel exec runs on the Deployment (its API calls and port-forward), the plugin started once by the CLI and once by its warm session', async () => {
    const ns = namespace.name;
    await kubectl(['create', 'rolebinding', 'plugin-user', '--clusterrole=admin', `--serviceaccount=${ns}:plugin-user`, '-n', ns]);
    await kubectl(['create', 'serviceaccount', 'plugin-user', '-n', ns]);
    const token = (await kubectl(['create', 'token', 'plugin-user', '-n', ns, '--duration=10m'])).trim();
    const runs = path.join(dir, 'plugin-runs');
    const credential = JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1beta1', kind: 'ExecCredential', status: { token } });
    const script = path.join(dir, 'plugin.sh');
    writeFileSync(script, `#!/bin/sh\necho run >> '${runs}'\nprintf '%s' '${credential}'\n`, { mode: 0o755 });
    const file = kubeconfigFile('plugin', { server, contexts: [{ name: 'cloud', namespace: ns }], current: 'cloud', cluster: { 'certificate-authority': caFile }, user: { exec: { apiVersion: 'client.authentication.k8s.io/v1beta1', command: script, interactiveMode: 'Never' } } });
    const exec = () => runDoppel(['exec', '--target', 'deploy/api', '--agent-ttl', '30', '--', 'hostname'], { env: { ...process.env, KUBECONFIG: file }, timeoutMs: 120_000 });
    const pod = (await kubectl(['get', 'pods', '-n', ns, '-l', 'app=api', '-o', 'jsonpath={.items[0].metadata.name}'])).trim();
    const first = await exec();
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.stdout, `${pod}\n`);
    assert.match(first.stderr, /^doppel: starting the agent next to /m);
    assert.equal(readFileSync(runs, 'utf8'), 'run\n', 'the CLI ran the plugin once');
    // The warm session's host runs it once for its own calls, and not to compare a request's kubeconfig with its own.
    const host = await hostOf('deploy/api');
    const next = await exec();
    assert.equal(next.stdout, `${pod}\n`);
    assert.equal(next.stderr, `doppel: reusing the warm session of deployment/api in ${ns} (host pid ${host})\n`);
    assert.equal(readFileSync(runs, 'utf8'), 'run\nrun\n');
    process.kill(host, 'SIGTERM');
    await hostGone(host);
    await assertNothingLeft(ns);
  });

  test('a token the API server does not accept: 401 with the context named', async () => {
    const file = kubeconfigFile('bad-token', { server, contexts: [{ name: 'bad-token' }], current: 'bad-token', cluster: { 'certificate-authority': caFile }, user: { token: 'not-a-real-token' } });
    const kube = await loadKubeContext({ kubeconfig: file, namespace: namespace.name });
    await rejects(
      resolveTarget(kube, { kind: 'pod', name: 'x', container: undefined }),
      'E_KUBE_UNAUTHORIZED',
      new RegExp(`the API server at ${server.replace(/\./g, '\\.')} rejected the credentials \\(context bad-token\\) \\(401 Unauthorized\\)`),
      /log in again/,
    );
  });

  test('a CA that did not sign the server certificate', async () => {
    const wrongCa = path.join(dir, 'wrong-ca.crt');
    // A real certificate, just not the cluster's CA: the admin client certificate.
    const admin = await loadKubeContext({ kubeconfig: adminKubeconfig });
    writeFileSync(wrongCa, readFileSync(admin.config.getCurrentUser()?.certFile ?? ''));
    const file = kubeconfigFile('wrong-ca', { server, contexts: [{ name: 'wrong-ca' }], current: 'wrong-ca', cluster: { 'certificate-authority': wrongCa } });
    const kube = await loadKubeContext({ kubeconfig: file, namespace: namespace.name });
    await rejects(resolveTarget(kube, { kind: 'pod', name: 'x', container: undefined }), 'E_KUBE_UNREACHABLE', /cannot trust the API server at .*: [A-Z_]+/, /certificate-authority/);
  });
});
