// How `doppel exec` fails on the test cluster: RBAC denials at each step, a missing target, an agent image that
// cannot be pulled, an agent killed or deleted mid-session, Ctrl-C while the agent starts, and the CLI killed outright.
// Each failure is one line with its code and a non-zero exit; afterwards no agent Job or pod remains and the target pod
// is unchanged.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runDoppel, startDoppel } from '../e2e/run-doppel.ts';
import { alive, killAll } from '../support/process-alive.ts';
import { needsRoot } from '../support/root.ts';
import { adminKubeconfig, apply, createNamespace, deployment, kubectl, kubectlPath, needsCluster, poll, rolloutStatus } from './support/cluster.ts';
import { assertNothingLeft, assertOneLineError, doppelJobs, doppelObjects, LEFTOVER_GRACE_MS, podStates } from './support/doppel-objects.ts';
import { serviceAccountKubeconfigs, type ServiceAccountKubeconfigs } from './support/service-account.ts';

const adminEnv = { ...process.env, KUBECONFIG: adminKubeconfig };
const dir = mkdtempSync(path.join(tmpdir(), 'doppel-k8s-failures-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Reads what a running doppel printed so far. */
function collect(stream: NodeJS.ReadableStream): () => string {
  let text = '';
  stream.on('data', (chunk: Buffer) => (text += chunk.toString()));
  return () => text;
}

/** The PIDs of a container's processes on this machine (the test cluster's only node), found by the id in their cgroup. */
async function containerProcesses(containerId: string): Promise<number[]> {
  const id = containerId.replace(/^[a-z]+:\/\//, '');
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cgroup`, 'utf8').includes(id)) pids.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return pids;
}

describe('doppel exec failures on the test cluster', needsCluster('doppel exec failures on Kubernetes'), () => {
  let namespace: Awaited<ReturnType<typeof createNamespace>>;
  let ns = '';
  let accounts: ServiceAccountKubeconfigs;
  let targetBefore = '';

  const exec = (command: string[], flags: string[] = [], env: NodeJS.ProcessEnv = adminEnv) => runDoppel(['exec', '--target', 'deployment/web', '-n', ns, ...flags, '--', ...command], { env, timeoutMs: 120_000 });
  const start = (command: string[]) => startDoppel(['exec', '--target', 'deployment/web', '-n', ns, '--', ...command], { env: adminEnv, timeoutMs: 120_000 });
  const asAccount = async (account: string) => ({ ...process.env, KUBECONFIG: await accounts.forAccount(account, ns) });
  const agentPod = async () => poll('the agent pod to run', async () => {
    // The program may start before the kubelet reports the agent's pod Running: the list can still be empty.
    const out = await kubectl(['get', 'pods', '-n', ns, '-l', 'app.kubernetes.io/managed-by=doppel', '--field-selector=status.phase=Running', '-o', 'jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].containerID}{"\\n"}{end}']);
    const [name, id] = (out.split('\n')[0] ?? '').trim().split(' ');
    return name && id ? { name, id } : undefined;
  });

  before(async () => {
    namespace = await createNamespace('failures');
    ns = namespace.name;
    accounts = await serviceAccountKubeconfigs();
    const role = (name: string, rules: object[]) => [
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace: ns } },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name, namespace: ns }, rules },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name, namespace: ns }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name }, subjects: [{ kind: 'ServiceAccount', name, namespace: ns }] },
    ];
    const manageJobs = { apiGroups: ['batch'], resources: ['jobs'], verbs: ['create', 'delete', 'get', 'list'] };
    const readTargets = [
      { apiGroups: ['apps'], resources: ['deployments'], verbs: ['get', 'list'] },
      { apiGroups: [''], resources: ['pods', 'events'], verbs: ['get', 'list', 'watch'] },
    ];
    await apply([
      deployment(ns, 'web', 1),
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'nobody', namespace: ns } },
      // May see the target but not start an agent.
      ...role('no-jobs', readTargets),
      // May start the agent but not watch it start, or not reach it: the Job it made must not stay.
      ...role('no-watch', [{ apiGroups: ['apps'], resources: ['deployments'], verbs: ['get', 'list'] }, { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list'] }, manageJobs]),
      ...role('no-forward', [...readTargets, manageJobs]),
    ]);
    await rolloutStatus('deployment/web', ns);
    targetBefore = await podStates(ns, 'app=web');
  });
  after(async () => {
    accounts?.remove();
    await namespace?.remove();
  });

  test('RBAC: no right to read the target', async () => {
    const result = await exec(['true'], [], await asAccount('nobody'));
    assert.equal(result.status, 1);
    assertOneLineError(result.stderr, 'E_KUBE_FORBIDDEN', new RegExp(`not allowed to get deployments\\.apps web in namespace ${ns} as system:serviceaccount:${ns}:nobody \\(403 Forbidden\\)`));
    assert.match(result.stderr, new RegExp(`hint: check with \`kubectl --context nobody auth can-i get deployments\\.apps -n ${ns}\``));
  });

  test('RBAC: no right to create the agent Job', async () => {
    const result = await exec(['true'], [], await asAccount('no-jobs'));
    assert.equal(result.status, 1);
    assertOneLineError(result.stderr, 'E_KUBE_FORBIDDEN', new RegExp(`not allowed to create jobs\\.batch in namespace ${ns} as system:serviceaccount:${ns}:no-jobs`));
    assert.deepEqual(await doppelObjects(ns), []);
  });

  test('RBAC: no right to watch the agent\'s pod start: the Job it made is removed', async () => {
    const result = await exec(['true'], [], await asAccount('no-watch'));
    assert.equal(result.status, 1);
    assertOneLineError(result.stderr, 'E_KUBE_FORBIDDEN', new RegExp(`not allowed to watch pods in namespace ${ns} \\(403 Forbidden\\)`));
    await assertNothingLeft(ns);
  });

  test('RBAC: no right to port-forward to the agent: said at once, and the Job it made is removed', async () => {
    const started = Date.now();
    const result = await exec(['true'], [], await asAccount('no-forward'));
    assert.equal(result.status, 1);
    assertOneLineError(result.stderr, 'E_KUBE_FORBIDDEN', new RegExp(`not allowed to create pods/portforward doppel-agent-\\S+ in namespace ${ns} \\(403 Forbidden\\)`));
    assert.match(result.stderr, /auth can-i create pods\/portforward/);
    assert.ok(Date.now() - started < 30_000, 'not after the startup timeout');
    await assertNothingLeft(ns);
  });

  test('a missing target: one line, and a suggestion', async () => {
    const result = await runDoppel(['exec', '--target', 'deployment/wbe', '-n', ns, '--', 'true'], { env: adminEnv });
    assert.equal(result.status, 1);
    assertOneLineError(result.stderr, 'E_TARGET_NOT_FOUND', new RegExp(`deployment/wbe not found in namespace ${ns}`));
    assert.match(result.stderr, /hint: did you mean deployment\/web\?/);
    assert.deepEqual(await doppelObjects(ns), []);
  });

  test('an agent image that cannot be pulled, with pull policies IfNotPresent and Never', async () => {
    const image = ['--agent-image', 'localhost/doppel-agent:does-not-exist'];
    const ifNotPresent = await exec(['true'], image);
    assert.equal(ifNotPresent.status, 1);
    assertOneLineError(ifNotPresent.stderr, 'E_AGENT_IMAGE', /the agent image localhost\/doppel-agent:does-not-exist cannot be pulled on node doppel-node: (ErrImagePull|ImagePullBackOff) /);
    const config = path.join(dir, 'never-pull.json');
    writeFileSync(config, JSON.stringify({ agent: { image_pull_policy: 'Never' } }));
    const never = await exec(['true'], [...image, '-f', config]);
    assert.equal(never.status, 1);
    assertOneLineError(never.stderr, 'E_AGENT_IMAGE', /cannot be pulled on node doppel-node: ErrImageNeverPull \(Container image "localhost\/doppel-agent:does-not-exist" is not present with pull policy of Never\)/);
    await assertNothingLeft(ns);
  });

  test('Pod Security refuses the agent (baseline level): said at once, for the Job and for -e', async () => {
    const guarded = await createNamespace('baseline');
    try {
      await apply([deployment(guarded.name, 'web', 1)]);
      await rolloutStatus('deployment/web', guarded.name);
      await kubectl(['label', 'namespace', guarded.name, 'pod-security.kubernetes.io/enforce=baseline']);
      const before_ = await podStates(guarded.name);
      const started = Date.now();
      const job = await runDoppel(['exec', '--target', 'deployment/web', '-n', guarded.name, '--', 'true'], { env: adminEnv, timeoutMs: 120_000 });
      assert.equal(job.status, 1);
      assertOneLineError(job.stderr, 'E_AGENT_REFUSED', /the cluster refused the agent's pod: .*violates PodSecurity "baseline:latest": non-default capabilities .*, host namespaces \(hostPID=true\)/);
      assert.ok(Date.now() - started < 30_000, 'not after the startup timeout');
      const ephemeral = await runDoppel(['exec', '-e', '--target', 'deployment/web', '-n', guarded.name, '--', 'true'], { env: adminEnv, timeoutMs: 120_000 });
      assert.equal(ephemeral.status, 1);
      assertOneLineError(ephemeral.stderr, 'E_AGENT_REFUSED', /the cluster refused the agent container in pod web-\S+: .*violates PodSecurity "baseline:latest": non-default capabilities/);
      await assertNothingLeft(guarded.name);
      assert.equal(await podStates(guarded.name), before_);
    } finally {
      await guarded.remove();
    }
  });

  test('an agent killed mid-session (SIGKILL to its processes): the program is stopped, E_AGENT_LOST', needsRoot('killing the agent\'s processes on the node'), async () => {
    const { child, finished } = start(['sh', '-c', 'echo $$; exec sleep 60']);
    const out = collect(child.stdout!);
    const programPid = Number(await poll('the program', async () => (out().includes('\n') ? out().trim() : undefined), 60_000));
    const agent = await agentPod();
    const pids = await containerProcesses(agent.id);
    assert.ok(pids.length >= 2, `the launcher and its agent run on this node: ${pids.join(' ')}`);
    killAll(pids);
    const result = await finished;
    assert.equal(result.status, 1);
    assertOneLineError(result.stderr, 'E_AGENT_LOST', new RegExp(`the agent in pod web-\\S+ \\(agent pod ${agent.name}\\) was killed \\(exit code 137\\) while the program ran; the program was stopped`));
    assert.equal(alive(programPid), false, 'the program was stopped');
    await assertNothingLeft(ns);
    assert.equal(await podStates(ns, 'app=web'), targetBefore, 'the target pod changed');
  });

  test('an agent pod deleted mid-session: the program is stopped, E_AGENT_LOST', async () => {
    const { child, finished } = start(['sh', '-c', 'echo $$; exec sleep 60']);
    const out = collect(child.stdout!);
    const programPid = Number(await poll('the program', async () => (out().includes('\n') ? out().trim() : undefined), 60_000));
    const agent = await agentPod();
    await kubectl(['delete', 'pod', agent.name, '-n', ns, '--wait=false']);
    const result = await finished;
    assert.equal(result.status, 1);
    assertOneLineError(result.stderr, 'E_AGENT_LOST', new RegExp(`the agent in pod web-\\S+ \\(agent pod ${agent.name}\\) went away: pod ${agent.name} was deleted while the program ran; the program was stopped`));
    assert.equal(alive(programPid), false, 'the program was stopped');
    await assertNothingLeft(ns);
    assert.equal(await podStates(ns, 'app=web'), targetBefore, 'the target pod changed');
  });

  test('Ctrl-C (SIGINT) while the agent starts: exit 130 with one line, the Job it made removed before the exit', async () => {
    // kubectl's watch (its list first, if it starts late) says at once that a Job was made; the agent in it needs most
    // of a second more to answer.
    const watch = spawn(kubectlPath, [`--kubeconfig=${adminKubeconfig}`, 'get', 'jobs', '-n', ns, '-l', 'app.kubernetes.io/managed-by=doppel', '--watch', '-o', 'name']);
    try {
      const made = new Promise<void>((resolve) => watch.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes('job.batch/') && resolve()));
      const { child, finished } = start(['sleep', '60']);
      await made;
      child.kill('SIGINT');
      const result = await finished;
      assert.equal(result.status, 130, result.stderr);
      assert.match(result.stderr, /^doppel: SIGINT while the session started: stopped, with nothing of it left on the target \[E_INTERRUPTED\]$/m);
      assert.deepEqual(await doppelJobs(ns), [], 'a Job outlived the CLI');
      await assertNothingLeft(ns);
      assert.equal(await podStates(ns, 'app=web'), targetBefore, 'the target pod changed');
    } finally {
      watch.kill();
    }
  });

  test('kill -9 of the CLI: no agent Job or pod remains within agent.ttl + 30 s; the target pod is untouched', async () => {
    const { child, finished } = start(['sh', '-c', 'echo $$; exec sleep 60']);
    const out = collect(child.stdout!);
    const programPid = Number(await poll('the program', async () => (out().includes('\n') ? out().trim() : undefined), 60_000));
    const agent = await agentPod();
    child.kill('SIGKILL');
    // The program is the killed CLI's child and outlives it, as with any parent killed outright.
    process.kill(programPid, 'SIGKILL');
    await finished;
    const killed = Date.now();
    await assertNothingLeft(ns);
    const took = Date.now() - killed;
    assert.ok(took < LEFTOVER_GRACE_MS, `gone after ${took} ms`);
    assert.deepEqual(await doppelObjects(ns), [], `agent pod ${agent.name} and its Job are gone`);
    assert.equal(await podStates(ns, 'app=web'), targetBefore, 'the target pod changed');
  });
});
