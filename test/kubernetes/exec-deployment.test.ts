// The seed's scenario on the real test cluster: `doppel exec --target deployment/...` gives node, python3 and curl a
// Deployment's environment (from a ConfigMap and a Secret), its mounted files (an app path and one under /etc),
// cluster DNS by short name and the cluster-only Service; every replica gets an agent; nothing stays behind.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runDoppel } from '../e2e/run-doppel.ts';
import { adminKubeconfig, apply, deployment, httpdContainer, kubectl, poll, rolloutStatus, serviceRouted } from './support/cluster.ts';
import { needsCluster } from './support/cluster.ts';

const namespace = 'devops-team';
const target = 'deployment/foo-app-deployment';
const settings = '{"feature":"checkout","limit":42}\n';
const env = { ...process.env, KUBECONFIG: adminKubeconfig };

const exec = (command: string[], flags: string[] = []) => runDoppel(['exec', '--target', target, '--target-namespace', namespace, ...flags, '--', ...command], { env, timeoutMs: 120_000 });

async function doppelObjects(): Promise<string> {
  return (await kubectl(['get', 'jobs,pods', '-n', namespace, '-l', 'app.kubernetes.io/managed-by=doppel', '-o', 'name'])).trim();
}

describe('doppel exec --target deployment/... on the test cluster', needsCluster('doppel exec on Kubernetes'), () => {
  let appPods: string;

  before(async () => {
    await kubectl(['delete', 'namespace', namespace, '--ignore-not-found', '--wait=true', '--timeout=180s']);
    await kubectl(['create', 'namespace', namespace]);
    const app = httpdContainer();
    await apply([
      { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'foo-config', namespace }, data: { GREETING: 'hello from the configmap', 'settings.json': settings } },
      { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'foo-secret', namespace }, stringData: { API_TOKEN: 's3cr3t-token' } },
      deployment(namespace, 'foo-app-deployment', 2, [
        {
          ...app,
          envFrom: [{ configMapRef: { name: 'foo-config' } }, { secretRef: { name: 'foo-secret' } }],
          volumeMounts: [
            { name: 'config', mountPath: '/app/config' },
            { name: 'config', mountPath: '/etc/foo' },
          ],
        },
      ], { volumes: [{ name: 'config', configMap: { name: 'foo-config' } }] }),
      deployment(namespace, 'orders', 1),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'orders', namespace }, spec: { selector: { app: 'orders' }, ports: [{ port: 80, targetPort: 8080 }] } },
    ]);
    await rolloutStatus('deployment/foo-app-deployment', namespace);
    await rolloutStatus('deployment/orders', namespace);
    await serviceRouted(namespace, 'orders');
    appPods = await kubectl(['get', 'pods', '-n', namespace, '-l', 'app=foo-app-deployment', '-o', 'jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].restartCount}{"\\n"}{end}']);
  });
  after(async () => {
    await kubectl(['delete', 'namespace', namespace, '--ignore-not-found', '--wait=false']);
  });

  test('node sees the variables, both mounted files, the short name and the Service', async () => {
    const program = `
      const fs = require('fs'), dns = require('dns').promises;
      (async () => {
        const { address } = await dns.lookup('orders');
        const body = await (await fetch('http://orders/message.txt')).text();
        console.log(JSON.stringify({ greeting: process.env.GREETING, token: process.env.API_TOKEN, app: fs.readFileSync('/app/config/settings.json', 'utf8'), etc: fs.readFileSync('/etc/foo/settings.json', 'utf8'), address, body }));
      })();`;
    const result = await exec(['node', '-e', program]);
    assert.equal(result.status, 0, result.stderr);
    const seen = JSON.parse(result.stdout) as Record<string, string>;
    const clusterIP = (await kubectl(['get', 'service', 'orders', '-n', namespace, '-o', 'jsonpath={.spec.clusterIP}'])).trim();
    assert.deepEqual(seen, { greeting: 'hello from the configmap', token: 's3cr3t-token', app: settings, etc: settings, address: clusterIP, body: 'hello from the doppel test app image\n' });
    assert.match(result.stderr, /starting 2 agents next to foo-app-deployment-/);
  });

  test('python3 and curl see the same', async () => {
    const python = "import os, json, socket, urllib.request\nprint(json.dumps([os.environ['GREETING'], open('/etc/foo/settings.json').read(), urllib.request.urlopen('http://orders/message.txt').read().decode()]))";
    const py = await exec(['python3', '-c', python], ['-q']);
    assert.equal(py.status, 0, py.stderr);
    assert.deepEqual(JSON.parse(py.stdout), ['hello from the configmap', settings, 'hello from the doppel test app image\n']);
    const curl = await exec(['sh', '-c', 'echo "$API_TOKEN"; curl -sS http://orders.devops-team.svc.cluster.local/message.txt; cat /app/config/settings.json'], ['-q']);
    assert.equal(curl.status, 0, curl.stderr);
    assert.equal(curl.stdout, `s3cr3t-token\nhello from the doppel test app image\n${settings}`);
  });

  test('every replica gets an agent while the session runs, and none remains after it', async () => {
    const running = exec(['sh', '-c', 'echo ready; sleep 8'], ['-q']);
    const jobs = await poll('two agent Jobs', async () => {
      const names = (await doppelObjects()).split('\n').filter((line) => line.startsWith('job'));
      return names.length === 2 ? names : undefined;
    }, 60_000);
    assert.equal(jobs.length, 2);
    assert.equal((await running).status, 0);
    await poll('no doppel Job or pod left', async () => ((await doppelObjects()) === '' ? true : undefined), 40_000);
    const now = await kubectl(['get', 'pods', '-n', namespace, '-l', 'app=foo-app-deployment', '-o', 'jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].restartCount}{"\\n"}{end}']);
    assert.equal(now, appPods, 'the target pods changed');
  });

  test('--one-replica attaches to one pod of the two', async () => {
    const result = await exec(['sh', '-c', 'sleep 3; echo "$GREETING"'], ['--one-replica']);
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, 'hello from the configmap\n');
    assert.match(result.stderr, /starting the agent next to foo-app-deployment-\S+ on /);
  });
});
