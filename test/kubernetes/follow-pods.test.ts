// Following a target's pods on the test cluster: scaling, a rollout, a deleted pod, and a stop that lets the process exit.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { after, before, describe, test } from 'node:test';
import { loadKubeContext, type KubeContext } from '../../src/platform/kubernetes/kube-context.ts';
import { followTargetPods } from '../../src/platform/kubernetes/follow-pods.ts';
import { resolveTarget, type TargetPod } from '../../src/platform/kubernetes/resolve-target.ts';
import { adminKubeconfig, apply, createNamespace, deployment, httpdContainer, kubectl, needsCluster, poll, rolloutStatus, testImage } from './support/cluster.ts';

type Event = { type: 'joined' | 'left'; pod: TargetPod; why?: string };

/** Records what the follower reports, and can wait for a condition on it. */
function recorder() {
  const events: Event[] = [];
  const troubles: string[] = [];
  return {
    events,
    troubles,
    handlers: {
      joined: (pod: TargetPod) => events.push({ type: 'joined', pod }),
      left: (pod: TargetPod, why: string) => events.push({ type: 'left', pod, why }),
      trouble: (error: Error) => troubles.push(error.message),
    },
    until: (what: string, check: (events: Event[]) => boolean) => poll(what, async () => (check(events) ? true : undefined), 180_000),
  };
}

describe('following a target\'s pods', needsCluster('the Kubernetes follow tests'), () => {
  let namespace: Awaited<ReturnType<typeof createNamespace>>;
  let kube: KubeContext;
  let ns = '';

  before(async () => {
    namespace = await createNamespace('follow');
    ns = namespace.name;
    kube = await loadKubeContext({ kubeconfig: adminKubeconfig, namespace: ns });
    await apply([
      deployment(ns, 'scaled', 1),
      deployment(ns, 'rolled', 2),
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'solo', namespace: ns }, spec: { terminationGracePeriodSeconds: 0, containers: [httpdContainer()] } },
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'restarting', namespace: ns },
        // Runs for a few seconds, exits, and is restarted by the kubelet with a new container id.
        spec: { terminationGracePeriodSeconds: 0, containers: [{ name: 'app', image: testImage, imagePullPolicy: 'Never', command: ['sh', '-c', 'sleep 4; exit 1'] }] },
      },
    ]);
    await Promise.all([rolloutStatus('deployment/scaled', ns), rolloutStatus('deployment/rolled', ns)]);
    await kubectl(['wait', '--for=condition=Ready', 'pod/solo', '-n', ns, '--timeout=180s']);
  });

  after(async () => {
    await namespace?.remove();
  });

  test('scaling 1 → 2 → 1: the new pod joins, then a pod leaves', async () => {
    const resolved = await resolveTarget(kube, { kind: 'deployment', name: 'scaled', container: undefined });
    assert.equal(resolved.pods.length, 1);
    const record = recorder();
    const follower = followTargetPods(kube, resolved, record.handlers);
    try {
      await kubectl(['scale', 'deployment/scaled', '--replicas=2', '-n', ns]);
      await record.until('a second pod to join', (events) => events.some((event) => event.type === 'joined'));
      const joined = record.events.find((event) => event.type === 'joined')!.pod;
      assert.notEqual(joined.name, resolved.pods[0]!.name);
      assert.equal(joined.container, 'app');
      assert.match(joined.containerId, /^containerd:\/\//);
      assert.ok(joined.podIP !== '' && joined.nodeName !== '');
      await kubectl(['scale', 'deployment/scaled', '--replicas=1', '-n', ns]);
      await record.until('a pod to leave', (events) => events.some((event) => event.type === 'left'));
      const left = record.events.find((event) => event.type === 'left')!;
      assert.ok([resolved.pods[0]!.name, joined.name].includes(left.pod.name));
      assert.match(left.why ?? '', /^(is terminating|was deleted)$/);
      // Settled: exactly one join and one leave, nothing reported twice.
      await new Promise((resolve) => setTimeout(resolve, 2000));
      assert.deepEqual(record.events.map((event) => event.type), ['joined', 'left']);
      assert.deepEqual(record.troubles, []);
    } finally {
      follower.stop();
    }
  });

  test('a rollout (a new pod template): every new pod joins and every old pod leaves', async () => {
    const resolved = await resolveTarget(kube, { kind: 'deployment', name: 'rolled', container: undefined });
    const before = new Set(resolved.pods.map((pod) => pod.name));
    assert.equal(before.size, 2);
    const record = recorder();
    const follower = followTargetPods(kube, resolved, record.handlers);
    try {
      await kubectl(['set', 'env', 'deployment/rolled', 'ROLLED=yes', '-n', ns]);
      await rolloutStatus('deployment/rolled', ns);
      const current = async () => (await resolveTarget(kube, { kind: 'deployment', name: 'rolled', container: undefined })).pods.map((pod) => pod.name).sort();
      const after = await poll('the rollout to settle', async () => {
        const names = await current();
        return names.length === 2 && names.every((name) => !before.has(name)) ? names : undefined;
      });
      await record.until('the follower to agree with the cluster', (events) => {
        const followed = new Set(before);
        for (const event of events) {
          if (event.type === 'joined') followed.add(event.pod.name);
          else followed.delete(event.pod.name);
        }
        return [...followed].sort().join() === after.join();
      });
      const left = record.events.filter((event) => event.type === 'left').map((event) => event.pod.name);
      assert.deepEqual(left.filter((name) => before.has(name)).sort(), [...before].sort());
      assert.deepEqual(record.troubles, []);
    } finally {
      follower.stop();
    }
  });

  test('a pod target: its pod leaves when it is deleted', async () => {
    const resolved = await resolveTarget(kube, { kind: 'pod', name: 'solo', container: undefined });
    const record = recorder();
    const follower = followTargetPods(kube, resolved, record.handlers);
    try {
      await kubectl(['delete', 'pod', 'solo', '-n', ns, '--wait=false']);
      await record.until('the pod to leave', (events) => events.some((event) => event.type === 'left'));
      assert.equal(record.events[0]!.pod.uid, resolved.pods[0]!.uid);
      assert.deepEqual(record.events.map((event) => event.type), ['left']);
    } finally {
      follower.stop();
    }
  });

  test('a restarted container leaves and joins again with its new container id', async () => {
    const resolved = await poll('the restarting pod to run', () => resolveTarget(kube, { kind: 'pod', name: 'restarting', container: undefined }).catch(() => undefined));
    const record = recorder();
    const follower = followTargetPods(kube, resolved, record.handlers);
    try {
      await record.until('the pod to leave and join again', (events) => events.some((event) => event.type === 'joined'));
      const [left, joined] = record.events;
      assert.equal(left?.type, 'left');
      assert.equal(left.pod.containerId, resolved.pods[0]!.containerId);
      assert.match(left.why ?? '', /container app (has exited \(code 1, Error\)|is in CrashLoopBackOff|restarted)|not ready/);
      assert.equal(joined?.type, 'joined');
      assert.equal(joined.pod.uid, resolved.pods[0]!.uid);
      assert.notEqual(joined.pod.containerId, resolved.pods[0]!.containerId);
    } finally {
      follower.stop();
    }
  });

  test('after stop() nothing is reported and nothing keeps the process alive', async () => {
    // A separate Node process that follows, stops, and must then exit on its own.
    const script = [
      `import { loadKubeContext } from ${JSON.stringify(path.resolve('src/platform/kubernetes/kube-context.ts'))};`,
      `import { resolveTarget } from ${JSON.stringify(path.resolve('src/platform/kubernetes/resolve-target.ts'))};`,
      `import { followTargetPods } from ${JSON.stringify(path.resolve('src/platform/kubernetes/follow-pods.ts'))};`,
      `const kube = await loadKubeContext({ kubeconfig: ${JSON.stringify(adminKubeconfig)}, namespace: ${JSON.stringify(ns)} });`,
      "const resolved = await resolveTarget(kube, { kind: 'deployment', name: 'scaled', container: undefined });",
      "const follower = followTargetPods(kube, resolved, { joined: (p) => console.log('joined', p.name), left: (p) => console.log('left', p.name) });",
      // Long enough for the list and the watch to be open.
      "setTimeout(() => { follower.stop(); console.log('stopped'); }, 1500);",
    ].join('\n');
    const started = performance.now();
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.on('exit', (exitCode) => {
        clearTimeout(timer);
        resolve(exitCode);
      });
    });
    assert.equal(code, 0, output);
    assert.equal(output, 'stopped\n');
    assert.ok(performance.now() - started < 15_000, 'the process lingered after stop()');
  });
});

test('an API server that cannot be reached: trouble is reported and retried until stop()', async () => {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const dir = mkdtempSync(path.join(tmpdir(), 'doppel-follow-'));
  try {
    const file = path.join(dir, 'kubeconfig');
    writeFileSync(
      file,
      JSON.stringify({
        clusters: [{ name: 'closed', cluster: { server: `https://127.0.0.1:${port}`, 'insecure-skip-tls-verify': true } }],
        users: [{ name: 'u', user: { token: 'unused' } }],
        contexts: [{ name: 'closed', context: { cluster: 'closed', user: 'u' } }],
        'current-context': 'closed',
      }),
    );
    const kube = await loadKubeContext({ kubeconfig: file, namespace: 'anywhere' });
    const record = recorder();
    const follower = followTargetPods(kube, { kind: 'deployment', name: 'api', namespace: 'anywhere', description: 'deployment/api in anywhere', selector: 'app=api', pods: [] }, record.handlers);
    // Retries back off (1 s, then 2 s, ...): a handful of failures in 2.5 s, never a busy loop.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    follower.stop();
    assert.ok(record.troubles.length >= 1 && record.troubles.length <= 3, record.troubles.join('\n'));
    assert.match(record.troubles[0]!, new RegExp(`cannot reach the API server at https://127\\.0\\.0\\.1:${port} \\(context closed\\): ECONNREFUSED`));
    assert.deepEqual(record.events, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
