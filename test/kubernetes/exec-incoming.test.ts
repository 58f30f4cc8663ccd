// Incoming traffic on the real test cluster: `doppel exec --target deployment/web` with a node program listening on the
// Deployment's port, callers in another pod going through the Service. Every replica is covered, the pods stay Ready
// through a whole steal (the kubelet's probes stay with them), HTTP filters split requests between developers, and no
// rule of ours stays in a pod after the session ends, the CLI is killed, or an agent is killed.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, test } from 'node:test';
import { defaultAgentImage } from '../../src/platform/kubernetes/agent-image.ts';
import { serveWithDoppel, type RunningServer } from '../e2e/serve-under-doppel.ts';
import { grpcPaths, grpcServerCommand } from '../support/grpc-peers.ts';
import { peerServer } from '../support/http-peers.ts';
import { killAll } from '../support/process-alive.ts';
import { adminKubeconfig, apply, createNamespace, deployment, httpdContainer, kubectl, needsCluster, poll, rolloutStatus } from './support/cluster.ts';
import { assertNothingLeft, podStates } from './support/doppel-objects.ts';
import { agentProcesses, doppelRules, podProcesses, redirectedPackets, type PodProcess } from './support/pod-network.ts';

const env = { ...process.env, KUBECONFIG: adminKubeconfig };
/** The repository, mounted at the same path in the test's pods so that they run its gRPC peers and their npm packages. */
const repo = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const repoVolume = { volumes: [{ name: 'repo', hostPath: { path: repo, type: 'Directory' } }] };
const repoMount = { volumeMounts: [{ name: 'repo', mountPath: repo, readOnly: true }] };
const GRPC_PORT = 50051;
const dir = mkdtempSync(path.join(tmpdir(), 'doppel-k8s-incoming-'));
after(() => rmSync(dir, { recursive: true, force: true }));
/** What the test app's httpd answers for /index.html. */
const TARGET_BODY = 'doppel test app\n';

/**
 * Run in the caller pod: `count` GETs of http://web/<path>?n=<i>, each on a new connection (so the Service picks a
 * replica for each), with `headers`; prints the bodies as a JSON array.
 */
const callerScript = `
const http = require('http');
const [count, path, headers] = [Number(process.argv[1]), process.argv[2], JSON.parse(process.argv[3])];
const get = (i) => new Promise((resolve, reject) => {
  const req = http.get({ host: 'web', path: path + '?n=' + i, headers, agent: false, timeout: 5000 }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (chunk) => (body += chunk));
    res.on('end', () => resolve(body));
  });
  req.on('timeout', () => req.destroy(new Error('timed out')));
  req.on('error', reject);
});
(async () => {
  const bodies = [];
  for (let i = 0; i < count; i++) bodies.push(await get(i).catch((error) => 'error: ' + error.message));
  console.log(JSON.stringify(bodies));
})();
`;

/**
 * Run in the caller pod with the paths of grpc-js, proto-loader and echo.proto: calls the rpc Service as alice (x-dev
 * metadata) and as someone else, and prints what answered, as JSON.
 */
const grpcCallerScript = `
const [grpcPath, loaderPath, protoPath] = process.argv.slice(1);
const grpc = require(grpcPath);
const { Echo } = grpc.loadPackageDefinition(require(loaderPath).loadSync(protoPath)).doppel.test;
const meta = (who) => { const m = new grpc.Metadata(); if (who) m.set('x-dev', who); return m; };
const client = () => new Echo('rpc:${GRPC_PORT}', grpc.credentials.createInsecure());
const unary = (who, say) => new Promise((resolve) => { const c = client(); c.Unary(say, meta(who), (error, said) => { c.close(); resolve(error ? error.code + ' ' + error.details : said.text); }); });
const stream = (who) => new Promise((resolve) => { const texts = []; const call = client().ServerStream({ text: 's', count: 3 }, meta(who)); call.on('data', (said) => texts.push(said.text)); call.on('end', () => resolve(texts)); call.on('error', (error) => resolve([String(error.code)])); });
const bidi = (who, texts) => new Promise((resolve) => { const answers = []; const call = client().Bidi(meta(who)); call.on('data', (said) => { answers.push(said.text); const next = texts[answers.length]; if (next === undefined) call.end(); else call.write({ text: next }); }); call.on('end', () => resolve(answers)); call.on('error', (error) => resolve([String(error.code)])); call.write({ text: texts[0] }); });
(async () => {
  const result = { aliceUnary: [], otherUnary: [] };
  for (let i = 0; i < 8; i++) result.aliceUnary.push(await unary('alice', { text: 'hi' }));
  for (let i = 0; i < 4; i++) result.otherUnary.push(await unary(undefined, { text: 'hi' }));
  result.aliceStream = await stream('alice');
  result.aliceBidi = await bidi('alice', ['a', 'b']);
  result.otherBidi = await bidi('bob', ['c']);
  result.aliceRefused = await unary('alice', { text: 'no', fail: true });
  console.log(JSON.stringify(result));
  process.exit(0);
})();
`;

describe('incoming traffic on the test cluster', needsCluster('incoming traffic on Kubernetes'), () => {
  let namespace: Awaited<ReturnType<typeof createNamespace>>;
  let ns = '';
  let pods: PodProcess[] = [];
  let before_ = '';
  const sessions = new Set<RunningServer>();

  /** `count` requests from the caller pod through the Service. */
  async function call(count: number, urlPath = '/index.html', headers: Record<string, string> = {}): Promise<string[]> {
    const out = await kubectl(['exec', '-n', ns, 'caller', '--', 'node', '-e', callerScript, String(count), urlPath, JSON.stringify(headers)]);
    return JSON.parse(out) as string[];
  }

  /** `doppel exec` on the Deployment, with `incoming` as feature.network.incoming, serving a node program as `who`. */
  function serve(who: string, incoming: object): RunningServer & { pid: number } {
    const file = path.join(dir, `${who}-${sessions.size}.json`);
    writeFileSync(file, JSON.stringify({ feature: { network: { incoming } } }));
    const server = serveWithDoppel(['exec', '--target', 'deployment/web', '-n', ns, '-q', '-f', file, '--', 'node', '-e', peerServer, who, '8080'], { env, timeoutMs: 240_000 });
    sessions.add(server);
    return server;
  }

  async function stop(server: RunningServer): Promise<void> {
    sessions.delete(server);
    server.signal('SIGTERM');
    const result = await server.finished;
    assert.ok(result.status === 0 || result.signal === 'SIGTERM', `doppel ended ${result.status}/${result.signal}\n${result.stderr}`);
  }

  /** Waits until no rule of ours is in any replica's namespace and the Service reaches the app again; returns how long that took. */
  async function targetRestored(since = Date.now()): Promise<number> {
    await poll('no doppel rule left in the pods', async () => (pods.every(({ pid }) => doppelRules(pid).length === 0) ? true : undefined), 30_000);
    await poll('the app answering through the Service', async () => ((await call(4)).every((body) => body === TARGET_BODY) ? true : undefined), 30_000);
    return Date.now() - since;
  }

  before(async () => {
    namespace = await createNamespace('incoming');
    ns = namespace.name;
    // Probes every 2 s, failing after 3: a pod whose agent pod is killed outright refuses its port until a new agent
    // mends it (about 2 s), and probes much stricter than Kubernetes' defaults (10 s, 3) would restart it meanwhile.
    const probe = { httpGet: { path: '/', port: 8080 }, periodSeconds: 2, failureThreshold: 3 };
    const app = { ...httpdContainer(), readinessProbe: probe, livenessProbe: probe };
    await apply([
      deployment(ns, 'web', 2, [app]),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: ns }, spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] } },
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'caller', namespace: ns },
        spec: { terminationGracePeriodSeconds: 0, ...repoVolume, containers: [{ name: 'caller', image: defaultAgentImage(), imagePullPolicy: 'Never', command: ['node', '-e', 'setInterval(() => {}, 1 << 30)'], ...repoMount }] },
      },
      // The Echo gRPC service (test/support/grpc-peers.ts) as a Deployment of 2, answering as "target".
      deployment(ns, 'rpc', 2, [{ name: 'rpc', image: defaultAgentImage(), imagePullPolicy: 'Never', command: ['node', ...grpcServerCommand('target', GRPC_PORT).slice(1)], readinessProbe: { tcpSocket: { port: GRPC_PORT }, periodSeconds: 2 }, ...repoMount }], repoVolume),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'rpc', namespace: ns }, spec: { selector: { app: 'rpc' }, ports: [{ port: GRPC_PORT, targetPort: GRPC_PORT }] } },
    ]);
    await rolloutStatus('deployment/web', ns);
    await rolloutStatus('deployment/rpc', ns);
    await kubectl(['wait', '-n', ns, '--for=condition=Ready', 'pod/caller', '--timeout=120s']);
    pods = await podProcesses(ns, 'app=web');
    assert.equal(pods.length, 2);
    before_ = await podStates(ns, 'app=web');
  });
  afterEach(async () => {
    for (const server of sessions) {
      server.signal('SIGKILL');
      await server.finished;
    }
    sessions.clear();
    await targetRestored();
    await assertNothingLeft(ns);
    assert.equal(await podStates(ns, 'app=web'), before_, 'the target pods were restarted or replaced');
  });
  after(async () => {
    await namespace?.remove();
  });

  test('steal: every request through the Service is the program\'s, whichever replica takes it; probes keep the pods Ready', async () => {
    const server = serve('program', { mode: 'steal' });
    await server.line(/^ready /, 120_000);
    const bodies = await call(16);
    assert.deepEqual(bodies, bodies.map((_, i) => `program GET /index.html?n=${i} `));
    for (const pod of pods) assert.ok(redirectedPackets(pod.pid) > 0, `no request reached the agent next to ${pod.pod}`);
    // The kubelet probes every 2 s: seven more seconds of a steal, and the pods are still Ready, never restarted.
    await new Promise((resolve) => setTimeout(resolve, 7000));
    const ready = await kubectl(['get', 'pods', '-n', ns, '-l', 'app=web', '-o', 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}']);
    assert.deepEqual(ready.trim().split('\n'), ['True', 'True']);
    await stop(server);
    assert.deepEqual(pods.flatMap(({ pid }) => doppelRules(pid)), [], 'the session ended: no rule of ours in the pods');
  });

  test('mirror: the app answers every request, and the program gets a copy of each, from both replicas', async () => {
    const server = serve('program', { mode: 'mirror' });
    await server.line(/^ready /, 120_000);
    const bodies = await call(16, '/index.html');
    assert.deepEqual(bodies, bodies.map(() => TARGET_BODY));
    for (const pod of pods) assert.ok(redirectedPackets(pod.pid) > 0, `no request was mirrored from ${pod.pod}`);
    await stop(server);
  });

  test('two developers with disjoint header filters share the Deployment; the rest reach the app; an unfiltered steal is refused', async () => {
    const alice = serve('alice', { mode: 'steal', http_filter: { header_filter: '^x-dev: alice$' } });
    await alice.line(/^ready /, 120_000);
    const bob = serve('bob', { mode: 'steal', http_filter: { header_filter: '^x-dev: bob$' } });
    await bob.line(/^ready /, 120_000);
    assert.deepEqual(new Set(await call(8, '/index.html', { 'x-dev': 'alice' })), new Set(Array.from({ length: 8 }, (_, i) => `alice GET /index.html?n=${i} `)));
    assert.deepEqual(new Set(await call(8, '/index.html', { 'x-dev': 'bob' })), new Set(Array.from({ length: 8 }, (_, i) => `bob GET /index.html?n=${i} `)));
    assert.deepEqual(await call(6), Array(6).fill(TARGET_BODY));

    const greedy = serve('greedy', { mode: 'steal' });
    const refused = await greedy.finished;
    sessions.delete(greedy);
    assert.equal(refused.status, 1, refused.stderr);
    assert.match(refused.stderr, /^doppel: port 8080 is already stolen by \S+ \(doppel pid \d+: node -e .*\); the program was stopped \[E_INCOMING_CONFLICT\]$/m);
    assert.deepEqual(await call(4, '/index.html', { 'x-dev': 'alice' }), Array.from({ length: 4 }, (_, i) => `alice GET /index.html?n=${i} `));
    await stop(alice);
    await stop(bob);
  });

  test('kill -9 of the CLI: no rule stays in the pods and the Service reaches the app again', async (t) => {
    const server = serve('program', { mode: 'steal' });
    await server.line(/^ready /, 120_000);
    assert.deepEqual(await call(2), ['program GET /index.html?n=0 ', 'program GET /index.html?n=1 ']);
    // The program outlives a CLI killed outright (nothing can stop it then); the test stops it once the pods are checked.
    const program = Number(execFileSync('pgrep', ['-P', String(server.pid)], { encoding: 'utf8' }).trim().split('\n')[0]);
    const killed = Date.now();
    server.signal('SIGKILL');
    try {
      t.diagnostic(`the pods served normally again ${await targetRestored(killed)} ms after the kill`);
    } finally {
      process.kill(program, 'SIGKILL');
      await server.finished;
      sessions.delete(server);
    }
  });

  test('gRPC through the Service from a pod: alice\'s unary, server-streaming and bidi calls reach her program on every replica, the rest the app', async () => {
    const file = path.join(dir, 'grpc.json');
    writeFileSync(file, JSON.stringify({ feature: { network: { incoming: { mode: 'steal', http_filter: { header_filter: '^x-dev: alice$' } } } } }));
    const server = serveWithDoppel(['exec', '--target', 'deployment/rpc', '-n', ns, '-q', '-f', file, '--', ...grpcServerCommand('program', GRPC_PORT)], { env, timeoutMs: 240_000 });
    sessions.add(server);
    await server.line(/^ready /, 120_000);
    const out = JSON.parse(await kubectl(['exec', '-n', ns, 'caller', '--', 'node', '-e', grpcCallerScript, ...grpcPaths()])) as Record<string, unknown>;
    assert.deepEqual(out, {
      // Each unary call on a new channel, so that the Service picks a replica for each.
      aliceUnary: Array(8).fill('program unary hi'),
      otherUnary: Array(4).fill('target unary hi'),
      aliceStream: ['program 0 s', 'program 1 s', 'program 2 s'],
      aliceBidi: ['program echo a', 'program echo b'],
      otherBidi: ['target echo c'],
      aliceRefused: '7 program refuses',
    });
    const rpcPods = await podProcesses(ns, 'app=rpc');
    for (const pod of rpcPods) assert.ok(redirectedPackets(pod.pid) > 0, `no call reached the agent next to ${pod.pod}`);
    await stop(server);
    assert.deepEqual(rpcPods.flatMap(({ pid }) => doppelRules(pid)), [], 'the session ended: no rule of ours in the pods');
  });

  for (const what of ['agent', 'agent pod'] as const) {
    test(`kill -9 of one replica's ${what}: its rules go, a new agent takes the pod again, the other replica stays stolen`, async (t) => {
      const server = serve('program', { mode: 'steal' });
      await server.line(/^ready /, 120_000);
      const [victim, other] = pods as [PodProcess, PodProcess];
      const chainsIn = (pod: PodProcess) => [...new Set(doppelRules(pod.pid).flatMap((line) => /DOPPEL-[\w-]+/.exec(line)?.[0] ?? []))];
      const [lost] = chainsIn(victim);
      assert.ok(lost, `${victim.pod} has a chain of ours`);
      const { agents, launchers } = agentProcesses(victim);
      assert.equal(agents.length, 1, `one agent serves ${victim.pod}`);
      const killed = Date.now();
      // The agent alone: its launcher removes its rules. The whole agent pod: the agent that replaces it does.
      killAll(what === 'agent' ? agents : [...launchers, ...agents]);
      await poll(`${lost} gone from ${victim.pod}`, async () => (chainsIn(victim).includes(lost) ? undefined : true), 30_000);
      t.diagnostic(`${victim.pod}'s lost rules were gone ${Date.now() - killed} ms after the kill`);
      assert.ok(chainsIn(other).length > 0, `${other.pod} is still stolen`);
      await poll(`a new agent's chain in ${victim.pod}`, async () => (chainsIn(victim).length === 1 ? true : undefined), 60_000);
      t.diagnostic(`${victim.pod} was taken again ${Date.now() - killed} ms after the kill`);
      await poll('every request through the Service the program\'s again', async () => ((await call(8)).every((body) => body.startsWith('program GET ')) ? true : undefined), 30_000);
      sessions.delete(server);
      server.signal('SIGTERM');
      const { status, stderr } = await server.finished;
      assert.equal(status, 0, stderr);
      assert.match(stderr, new RegExp(`^doppel: warning: the agent in pod ${victim.pod} .*; (the session goes on without it|.* serves the session now)$`, 'm'));
      assert.match(stderr, new RegExp(`^doppel: warning: pod ${victim.pod} \\(agent pod .*\\) joined the session$`, 'm'));
    });
  }
});
