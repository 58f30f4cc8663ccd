// The link to a Kubernetes agent moves from the port-forward to a TCP connection to the agent's pod, where this machine
// reaches it (here: the test cluster's node is this machine): the move is traced with the pod's address, and a
// program's relayed connections, HTTP requests, files and lookups work on the moved link; `agent.direct_link = false` keeps the
// port-forward. (Sessions from a machine that reaches only the API server stay on the port-forward: see
// exec-layer-features.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultAgentImage } from '../../src/platform/kubernetes/agent-image.ts';
import { ok, runDoppel } from '../e2e/run-doppel.ts';
import { adminKubeconfig, apply, createNamespace, deployment, httpdContainer, kubectl, needsCluster, rolloutStatus, serviceRouted } from './support/cluster.ts';
import { assertNothingLeft } from './support/doppel-objects.ts';

const env = { ...process.env, KUBECONFIG: adminKubeconfig };
const appImageBody = 'hello from the doppel test app image\n';

/** Two exchanges on one connection to the echo Service, a moment apart, a GET to the orders Service, a ConfigMap file and a lookup. */
const program = `
  const net = require('net'), fs = require('fs'), dns = require('dns').promises;
  const exchange = (socket, text) => new Promise((resolve) => {
    let got = '';
    const onData = (chunk) => {
      got += chunk;
      if (got.length >= text.length) { socket.off('data', onData); resolve(got); }
    };
    socket.on('data', onData);
    socket.write(text);
  });
  const socket = net.connect(7000, 'echo', async () => {
    socket.setEncoding('utf8');
    const first = await exchange(socket, 'one');
    await new Promise((resolve) => setTimeout(resolve, 500));
    const second = await exchange(socket, 'two');
    socket.end();
    const body = await (await fetch('http://orders/message.txt')).text();
    const { address } = await dns.lookup('orders');
    console.log(JSON.stringify({ first, second, body, file: fs.readFileSync('/etc/app/a.txt', 'utf8'), resolved: address !== undefined }));
  });`;

/** A TCP echo in Node (the agent image has it; the test app image is busybox). */
const tcpEcho = "require('net').createServer((s) => s.pipe(s)).listen(7000)";

const traced = (stderr: string) => stderr.split('\n').map((line) => /^doppel: trace +\d+\.\d+ ms {2}(.*)$/.exec(line)?.[1]).filter((what) => what !== undefined);

describe('the link to a Kubernetes agent moves to its pod where this machine reaches it', needsCluster('doppel exec on Kubernetes'), () => {
  let ns: Awaited<ReturnType<typeof createNamespace>>;
  let configs: string;
  const exec = (flags: string[]) => runDoppel(['exec', '--target', 'deployment/web', '--target-namespace', ns.name, '-q', '--trace', ...flags, '--', 'node', '-e', program], { env, timeoutMs: 120_000 });
  const expected = { first: 'one', second: 'two', body: appImageBody, file: 'alpha\n', resolved: true };

  before(async () => {
    ns = await createNamespace('direct');
    const namespace = ns.name;
    configs = mkdtempSync(path.join(tmpdir(), 'doppel-k8s-direct-'));
    await apply([
      { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'app-config', namespace }, data: { 'a.txt': 'alpha\n' } },
      deployment(namespace, 'web', 1, [{ ...httpdContainer(), volumeMounts: [{ name: 'config', mountPath: '/etc/app' }] }], { volumes: [{ name: 'config', configMap: { name: 'app-config' } }] }),
      deployment(namespace, 'orders', 1),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'orders', namespace }, spec: { selector: { app: 'orders' }, ports: [{ port: 80, targetPort: 8080 }] } },
      deployment(namespace, 'echo', 1, [{ name: 'echo', image: defaultAgentImage(), imagePullPolicy: 'Never', command: ['/usr/local/bin/node', '-e', tcpEcho] }]),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'echo', namespace }, spec: { selector: { app: 'echo' }, ports: [{ port: 7000 }] } },
    ]);
    for (const name of ['web', 'orders', 'echo']) await rolloutStatus(`deployment/${name}`, namespace);
    await serviceRouted(namespace, 'orders', 'echo');
  });
  after(async () => {
    rmSync(configs, { recursive: true, force: true });
    await ns?.remove();
  });

  test('the session moves to the agent pod\'s address, and its connections, files and lookups go on there', async () => {
    const result = await exec(['--agent-ttl', '0']);
    assert.deepEqual(JSON.parse(ok(result)), expected);
    const lines = traced(result.stderr);
    const moved = lines.map((what) => /^kubernetes: the link to (doppel-agent-\S+) moved to a direct connection to (\S+):(\d+) in [\d.]+ ms$/.exec(what)).find((match) => match);
    assert.ok(moved, `no move in:\n${result.stderr}`);
    const [, agentPod, address] = moved;
    // The agent's pod is gone with the session (--agent-ttl 0); its address was in the pod's network, not the node's.
    assert.ok(!address!.startsWith('127.'), address);
    assert.ok(lines.some((what) => what.startsWith(`kubernetes: the agent's launcher in ${agentPod} admitted the session`)), result.stderr);
    await assertNothingLeft(ns.name);
  });

  test('agent.direct_link = false keeps the session on the port-forward', async () => {
    const config = path.join(configs, 'no-direct.toml');
    writeFileSync(config, '[agent]\ndirect_link = false\n');
    const result = await exec(['--agent-ttl', '0', '-f', config]);
    assert.deepEqual(JSON.parse(ok(result)), expected);
    const lines = traced(result.stderr);
    assert.ok(lines.some((what) => /^kubernetes: port-forward to doppel-agent-\S+:\d+ opened/.test(what)), result.stderr);
    assert.ok(!lines.some((what) => /moved to a direct connection|did not move from the port-forward/.test(what)), result.stderr);
    await assertNothingLeft(ns.name);
  });
});
