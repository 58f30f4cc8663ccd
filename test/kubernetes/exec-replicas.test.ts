// A session follows its workload's replicas on the test cluster: a pod that a scale-up adds gets an agent (a progress
// line, a Job for it), a pod a scale-down removes loses its agent's Job, and when the primary replica goes away the
// program goes on, served by another replica (each pod's name is a file the program reads through doppel).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDoppel } from '../e2e/run-doppel.ts';
import { adminKubeconfig, apply, createNamespace, deployment, httpdContainer, kubectl, needsCluster, poll, rolloutStatus } from './support/cluster.ts';
import { agentTargets, assertNothingLeft } from './support/doppel-objects.ts';

const env = { ...process.env, KUBECONFIG: adminKubeconfig };
const dir = mkdtempSync(path.join(tmpdir(), 'doppel-k8s-replicas-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The pod's own name as a file, through the downward API. */
const podInfo = {
  container: { ...httpdContainer(), volumeMounts: [{ name: 'podinfo', mountPath: '/etc/podinfo' }] },
  volumes: [{ name: 'podinfo', downwardAPI: { items: [{ path: 'name', fieldRef: { fieldPath: 'metadata.name' } }] } }],
};

describe('a session follows the replicas of its workload', needsCluster('following replicas'), () => {
  let namespace: Awaited<ReturnType<typeof createNamespace>>;
  let ns = '';

  const pods = async (app: string) => (await kubectl(['get', 'pods', '-n', ns, '-l', `app=${app}`, '-o', 'jsonpath={range .items[*]}{.metadata.name}{"\\n"}{end}'])).split('\n').filter((name) => name !== '').sort();
  const readyPods = async (app: string) => {
    const out = await kubectl(['get', 'pods', '-n', ns, '-l', `app=${app}`, '-o', 'jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp} {.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}']);
    return out
      .split('\n')
      .map((line) => line.split(' '))
      .filter(([name, deleting, ready]) => name && deleting === '' && ready === 'True')
      .map(([name]) => name!)
      .sort();
  };

  before(async () => {
    namespace = await createNamespace('replicas');
    ns = namespace.name;
    await apply([deployment(ns, 'scaled', 1, [podInfo.container], { volumes: podInfo.volumes }), deployment(ns, 'pair', 2, [podInfo.container], { volumes: podInfo.volumes })]);
    await rolloutStatus('deployment/scaled', ns);
    await rolloutStatus('deployment/pair', ns);
  });
  after(async () => {
    await namespace?.remove();
  });

  test('scaling up adds an agent for the new pod; scaling down removes it', async (t) => {
    const marker = path.join(dir, 'scaled-done');
    // The marker lives under the local temp dir, so the program checks it on this machine.
    const { child, finished } = startDoppel(['exec', '--target', 'deployment/scaled', '-n', ns, '--', 'sh', '-c', `echo started; while [ ! -e ${marker} ]; do sleep 0.2; done`], { env, timeoutMs: 180_000 });
    // A failed assertion must not leave the session running into the next test.
    t.after(() => child.kill('SIGTERM'));
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    let stdout = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    await poll('the program to start', async () => (stdout.includes('started') ? true : undefined), 60_000);
    const [first] = await pods('scaled');
    assert.deepEqual(await agentTargets(ns), [first]);

    await kubectl(['scale', 'deployment/scaled', '--replicas=2', '-n', ns]);
    await rolloutStatus('deployment/scaled', ns);
    const added = (await pods('scaled')).find((name) => name !== first)!;
    await poll('the new pod to join', async () => (stderr.includes(`warning: pod ${added} (agent pod doppel-agent-`) && stderr.includes('joined the session') ? true : undefined), 60_000);
    assert.match(stderr, new RegExp(`doppel: warning: pod ${added} \\(agent pod doppel-agent-\\S+\\) joined the session`));
    assert.deepEqual(await agentTargets(ns), [first, added].sort());

    await kubectl(['scale', 'deployment/scaled', '--replicas=1', '-n', ns]);
    const remaining = await poll('one ready pod', async () => {
      const ready = await readyPods('scaled');
      return ready.length === 1 ? ready : undefined;
    });
    const removed = [first, added].find((name) => !remaining.includes(name!))!;
    await poll('the removed pod\'s agent Job to go', async () => {
      const targets = await agentTargets(ns);
      return targets.length === 1 && targets[0] === remaining[0] ? true : undefined;
    }, 60_000);
    // The removed pod's agent may end (its target's process gone) before the watch reports the pod: its Job then
    // completes first, and the session hears of the pod a moment later (seen on a loaded machine).
    const leftLine = new RegExp(`doppel: warning: pod ${removed} \\(agent pod doppel-agent-\\S+\\) left the session: (is terminating|was deleted)`);
    await poll('the session to say the pod left', async () => (leftLine.test(stderr) ? true : undefined), 60_000);

    writeFileSync(marker, '');
    const result = await finished;
    assert.equal(result.status, 0, result.stderr);
    await assertNothingLeft(ns);
  });

  test('when the primary replica goes away, another serves the session', async () => {
    const replicas = await pods('pair');
    const program = [
      'first=$(cat /etc/podinfo/name); echo "$first"',
      'while :; do now=$(cat /etc/podinfo/name 2>/dev/null); if [ -n "$now" ] && [ "$now" != "$first" ]; then echo "$now"; exit 0; fi; sleep 0.3; done',
    ].join('\n');
    const { child, finished } = startDoppel(['exec', '--target', 'deployment/pair', '-n', ns, '--', 'sh', '-c', program], { env, timeoutMs: 120_000 });
    let stdout = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    const primary = await poll('the program to read its first pod name', async () => (stdout.includes('\n') ? stdout.trim() : undefined), 60_000);
    assert.ok(replicas.includes(primary), `${primary} is one of ${replicas.join(', ')}`);
    const other = replicas.find((name) => name !== primary);

    await kubectl(['delete', 'pod', primary, '-n', ns, '--wait=false']);
    const result = await finished;
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, `${primary}\n${other}\n`);
    // Whichever comes first, the replica leaving or its agent ending, one warning line names the new primary.
    assert.match(result.stderr, new RegExp(`doppel: warning: (pod ${primary} \\(agent pod \\S+\\) left the session: (is terminating|was deleted)|the agent in pod ${primary} .*); pod ${other} \\(agent pod \\S+\\) serves the session now\n`));
    await assertNothingLeft(ns);
  });
});
