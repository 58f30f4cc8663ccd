// Where a Kubernetes target's pod runs on the CLI's own machine (here: the test cluster's node is this machine, and
// the CLI is root), the agent's hello places the target's process and the program reaches it itself, as on the
// process platform: the layer opens the pod's files in its root and makes its connections in its network, with no
// agent in the way, and asks the agent for lookups on a socket of its session's directory, not the proxy; the proxy
// reads and writes the pod's files itself. When that replica goes while a program runs, the program's next reads come from the replica that
// serves the session now. (From a machine that sees none of the node's processes everything goes through the agent:
// see exec-layer-features.test.ts, whose developer machine has a PID namespace of its own.)
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { defaultAgentImage } from '../../src/platform/kubernetes/agent-image.ts';
import { ok, runDoppel, startDoppel } from '../e2e/run-doppel.ts';
import { adminKubeconfig, apply, createNamespace, deployment, httpdContainer, kubectl, needsCluster, poll, rolloutStatus, serviceRouted } from './support/cluster.ts';
import { assertNothingLeft } from './support/doppel-objects.ts';
import { podProcesses } from './support/pod-network.ts';

const env = { ...process.env, KUBECONFIG: adminKubeconfig };
const appImageBody = 'hello from the doppel test app image\n';

/** A ConfigMap file, an exchange with the echo Service, a GET to the orders Service and a lookup. */
const program = `
  const net = require('net'), fs = require('fs'), dns = require('dns').promises;
  const socket = net.connect(7000, 'echo', () => {
    let got = '';
    socket.setEncoding('utf8');
    socket.on('data', async (chunk) => {
      got += chunk;
      if (got.length < 3) return;
      socket.end();
      const body = await (await fetch('http://orders/message.txt')).text();
      const { address } = await dns.lookup('orders');
      console.log(JSON.stringify({ echoed: got, body, file: fs.readFileSync('/etc/app/a.txt', 'utf8'), resolved: address !== undefined }));
    });
    socket.write('one');
  });`;

/** Reads its pod's name, then again every 100 ms until another pod's name comes; one Node.js process throughout. */
const watcher = `
  const fs = require('fs');
  const read = () => { try { return fs.readFileSync('/etc/podinfo/name', 'utf8'); } catch { return undefined; } };
  const first = read();
  console.log(first);
  const timer = setInterval(() => {
    const now = read();
    if (now !== undefined && now !== first) { console.log(now); clearInterval(timer); }
  }, 100);`;

/** A TCP echo in Node (the agent image has it; the test app image is busybox). */
const tcpEcho = "require('net').createServer((s) => s.pipe(s)).listen(7000)";

const traced = (stderr: string) => stderr.split('\n').map((line) => /^doppel: trace +\d+\.\d+ ms {2}(.*)$/.exec(line)?.[1]).filter((what) => what !== undefined);

/** The pod's own name as a file, through the downward API. */
const podInfo = {
  container: { ...httpdContainer(), volumeMounts: [{ name: 'podinfo', mountPath: '/etc/podinfo' }] },
  volumes: [{ name: 'podinfo', downwardAPI: { items: [{ path: 'name', fieldRef: { fieldPath: 'metadata.name' } }] } }],
};

describe('a Kubernetes target whose pod runs on this machine is reached directly', needsCluster('doppel exec on Kubernetes'), () => {
  let ns: Awaited<ReturnType<typeof createNamespace>>;

  before(async () => {
    ns = await createNamespace('samenode');
    const namespace = ns.name;
    await apply([
      { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'app-config', namespace }, data: { 'a.txt': 'alpha\n' } },
      deployment(namespace, 'web', 1, [{ ...httpdContainer(), volumeMounts: [{ name: 'config', mountPath: '/etc/app' }, { name: 'data', mountPath: '/data' }] }], {
        volumes: [{ name: 'config', configMap: { name: 'app-config' } }, { name: 'data', emptyDir: {} }],
      }),
      deployment(namespace, 'pair', 2, [podInfo.container], { volumes: podInfo.volumes }),
      deployment(namespace, 'orders', 1),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'orders', namespace }, spec: { selector: { app: 'orders' }, ports: [{ port: 80, targetPort: 8080 }] } },
      deployment(namespace, 'echo', 1, [{ name: 'echo', image: defaultAgentImage(), imagePullPolicy: 'Never', command: ['/usr/local/bin/node', '-e', tcpEcho] }]),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'echo', namespace }, spec: { selector: { app: 'echo' }, ports: [{ port: 7000 }] } },
    ]);
    for (const name of ['web', 'pair', 'orders', 'echo']) await rolloutStatus(`deployment/${name}`, namespace);
    await serviceRouted(namespace, 'orders', 'echo');
  });
  after(async () => {
    await ns?.remove();
  });

  test('the layer opens the pod\'s files and makes its connections itself', async () => {
    const [web] = await podProcesses(ns.name, 'app=web');
    const echoIP = (await kubectl(['get', 'service', 'echo', '-n', ns.name, '-o', 'jsonpath={.spec.clusterIP}'])).trim();
    const result = await runDoppel(['exec', '--target', 'deployment/web', '--target-namespace', ns.name, '-q', '--trace', '--agent-ttl', '0', '--', 'node', '-e', program], { env, timeoutMs: 120_000 });
    assert.deepEqual(JSON.parse(ok(result)), { echoed: 'one', body: appImageBody, file: 'alpha\n', resolved: true });
    const lines = traced(result.stderr);
    const placed = `: its target is process ${web!.pid} of this machine, whose files and network the program reaches itself`;
    assert.ok(lines.some((what) => what.startsWith(`pod ${web!.pod} `) && what.endsWith(placed)), result.stderr);
    // Settled by the layer, timed by it and told to the proxy: no agent round trip.
    const byLayer = (call: string, subject: string) => lines.some((what) => what.startsWith(`call ${call} ${JSON.stringify(subject)} -> remote: layer `));
    assert.ok(byLayer('open', '/etc/app/a.txt'), result.stderr);
    assert.ok(byLayer('connect', `${echoIP}:7000`), result.stderr);
    await assertNothingLeft(ns.name);
  });

  test('the agent answers the layer\'s lookups itself, on a socket in the session\'s directory', async () => {
    const ordersIP = (await kubectl(['get', 'service', 'orders', '-n', ns.name, '-o', 'jsonpath={.spec.clusterIP}'])).trim();
    const result = await runDoppel(['exec', '--target', 'deployment/web', '--target-namespace', ns.name, '-q', '--agent-ttl', '0', '--', 'getent', 'ahostsv4', 'orders'], {
      env: { ...env, DOPPEL_LAYER_LOG: 'debug' },
      timeoutMs: 120_000,
    });
    assert.match(ok(result), new RegExp(`^${ordersIP.replaceAll('.', '\\.')} `));
    // getaddrinfo's request to the agent's socket, not to the proxy.
    assert.ok(result.stderr.split('\n').some((line) => line.endsWith(': op 7: asked the agent')), result.stderr);
    assert.doesNotMatch(result.stderr, /the agent's socket cannot be reached/);
    await assertNothingLeft(ns.name);
  });

  test('write mode: the proxy writes the pod\'s files itself', async () => {
    const [web] = await podProcesses(ns.name, 'app=web');
    const script = 'echo one > /data/f && echo two >> /data/f && mkdir /data/d && mv /data/f /data/d/g && cat /data/d/g';
    const result = await runDoppel(['exec', '--target', 'deployment/web', '--target-namespace', ns.name, '-q', '--trace', '--agent-ttl', '0', '--fs-mode', 'write', '--', 'sh', '-c', script], { env, timeoutMs: 120_000 });
    assert.equal(ok(result), 'one\ntwo\n');
    assert.equal(await kubectl(['exec', '-n', ns.name, web!.pod, '-c', 'app', '--', 'cat', '/data/d/g']), 'one\ntwo\n');
    // Served in the CLI under the pod's root, not asked of the agent.
    const lines = traced(result.stderr);
    assert.ok(lines.some((what) => /^call open "\/data\/f" -> remote: .*fs\.open \(local\)/.test(what)), result.stderr);
    assert.ok(!lines.some((what) => /\| fs\.(open|write|mkdir|rename) link/.test(what)), result.stderr);
    await assertNothingLeft(ns.name);
  });

  test('a program that outlives its replica reads from the replica that serves the session next', async (t) => {
    const replicas = (await podProcesses(ns.name, 'app=pair')).map(({ pod }) => pod);
    const { child, finished } = startDoppel(['exec', '--target', 'deployment/pair', '-n', ns.name, '--trace', '--', 'node', '-e', watcher], { env, timeoutMs: 120_000 });
    t.after(() => child.kill('SIGTERM'));
    let stdout = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    const primary = await poll('the program to read its first pod name', async () => (stdout.includes('\n') ? stdout.trim() : undefined), 60_000);
    assert.ok(replicas.includes(primary), `${primary} is one of ${replicas.join(', ')}`);
    const other = replicas.find((name) => name !== primary);

    await kubectl(['delete', 'pod', primary, '-n', ns.name, '--wait=false']);
    const result = await finished;
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, `${primary}\n${other}\n`);
    // The first read was the layer's own, in the first replica's root (the pod's process having gone, its root would
    // have shown the program no podinfo at all, and no other pod's name).
    assert.ok(traced(result.stderr).some((what) => what.startsWith('call open "/etc/podinfo/name" -> remote: layer ')), result.stderr);
    await assertNothingLeft(ns.name);
  });
});
