// Warm agents on the test cluster: a session that ends cleanly leaves its agent pod waiting agent.ttl, and the next
// `doppel exec` on the same target pod reuses that very pod (same name and uid, no new Job) and says so; two at once
// end with one reusing it and one starting its own; a replaced target pod, a session killed outright and a passed ttl
// leave nothing to reuse, and nothing stays behind after the ttl. A warm session host (exec-warm-session.test.ts)
// takes a parked agent at once; here it is made to give it back, so that the agent waits parked as it does for a CLI
// that comes before a host is up or with another configuration.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runDoppel, startDoppel, type Finished } from '../e2e/run-doppel.ts';
import { adminKubeconfig, apply, createNamespace, deployment, kubectl, needsCluster, poll, rolloutStatus } from './support/cluster.ts';
import { LEFTOVER_GRACE_MS } from './support/doppel-objects.ts';
import { hostGivesBack } from './support/warm-session.ts';

const env = { ...process.env, KUBECONFIG: adminKubeconfig };
const dir = mkdtempSync(path.join(tmpdir(), 'doppel-k8s-warm-'));
after(() => rmSync(dir, { recursive: true, force: true }));
/** Long enough for the next run to start on a loaded machine. */
const TTL = '30';
const reusing = /^doppel: reusing the warm agent (\S+) \(next to (\S+)\)/m;
const starting = /^doppel: starting the agent next to (\S+) on /m;

describe('warm agents on the test cluster', needsCluster('warm agents on Kubernetes'), () => {
  let namespace: Awaited<ReturnType<typeof createNamespace>>;
  let ns = '';

  const args = (app: string, ttl: string, command: string[]) => ['exec', '--target', `deployment/${app}`, '-n', ns, '--agent-ttl', ttl, '--', ...command];
  const exec = (app: string, ttl = TTL, command = ['sh', '-c', 'echo $APP_GREETING']) => runDoppel(args(app, ttl, command), { env, timeoutMs: 120_000 });
  /** The session's host parks the agent again and goes. */
  const parked = (app: string, ttl = TTL) => hostGivesBack(`deployment/${app}`, ['-n', ns, '--agent-ttl', ttl], env);
  const succeeded = (result: Finished) => {
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, 'hello-from-image\n', 'the program got the target\'s environment');
    return result.stderr;
  };
  const targetPod = async (app: string) => {
    const [name, uid] = (await kubectl(['get', 'pods', '-n', ns, '-l', `app=${app}`, '--field-selector=status.phase=Running', '-o', 'jsonpath={.items[0].metadata.name} {.items[0].metadata.uid}'])).split(' ');
    return { name: name!, uid: uid! };
  };
  /** `name uid` of every agent pod (and the count of agent Jobs) made for the target pod with this uid. */
  const agentsOf = async (uid: string) => {
    const selector = `doppel.dev/target-uid=${uid}`;
    const pods = await kubectl(['get', 'pods', '-n', ns, '-l', selector, '-o', 'jsonpath={range .items[*]}{.metadata.name} {.metadata.uid}{"\\n"}{end}']);
    const jobs = await kubectl(['get', 'jobs', '-n', ns, '-l', selector, '-o', 'name']);
    return { pods: pods.split('\n').filter(Boolean).sort(), jobs: jobs.split('\n').filter(Boolean).length };
  };
  const allGone = (uid: string) =>
    poll(`no agent of pod ${uid} left`, async () => {
      const { pods, jobs } = await agentsOf(uid);
      return pods.length + jobs === 0 ? true : undefined;
    }, LEFTOVER_GRACE_MS);

  before(async () => {
    namespace = await createNamespace('warm');
    ns = namespace.name;
    const apps = ['reuse', 'replaced', 'expiry', 'killed'];
    await apply(apps.map((app) => deployment(ns, app, 1)));
    for (const app of apps) await rolloutStatus(`deployment/${app}`, ns);
  });
  after(async () => {
    await namespace?.remove();
  });

  test('the next exec within the ttl reuses the agent pod (same name and uid, no new Job) and says so', async () => {
    const target = await targetPod('reuse');
    assert.match(succeeded(await exec('reuse')), starting);
    await parked('reuse');
    const first = await agentsOf(target.uid);
    assert.equal(first.pods.length, 1, `one agent pod: ${first.pods.join(', ')}`);
    const stderr = succeeded(await exec('reuse'));
    const [, agentPod, nextTo] = reusing.exec(stderr) ?? assert.fail(`no "reusing the warm agent" line in:\n${stderr}`);
    assert.equal(nextTo, target.name);
    assert.equal(`${agentPod} ${first.pods[0]!.split(' ')[1]}`, first.pods[0], 'the agent pod it names is the first run\'s');
    assert.doesNotMatch(stderr, starting);
    assert.deepEqual(await agentsOf(target.uid), first, 'the same agent pod (name and uid) and Job, nothing new');
  });

  test('two execs at once on one parked agent: one reuses it, the other starts its own', async () => {
    const target = await targetPod('reuse');
    await parked('reuse');
    const waiting = (await agentsOf(target.uid)).pods;
    assert.equal(waiting.length, 1, 'the previous test left its agent');
    // Both sessions hold on until both programs run, so neither can park the agent again for the other to take.
    const gate = path.join(dir, 'both-running');
    const program = ['sh', '-c', `echo $APP_GREETING; while [ ! -e ${gate} ]; do sleep 0.1; done`];
    const runs = [0, 1].map(() => startDoppel(args('reuse', TTL, program), { env, timeoutMs: 120_000 }));
    const outputs = runs.map(({ child }) => {
      let out = '';
      child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
      return () => out;
    });
    const ended = Promise.all(runs.map(({ finished }) => finished));
    await Promise.race([poll('both programs to run', async () => (outputs.every((out) => out() !== '') ? true : undefined), 120_000), ended]);
    writeFileSync(gate, '');
    const lines = (await ended).map(succeeded);
    const reused = lines.filter((stderr) => reusing.test(stderr));
    assert.equal(reused.length, 1, `exactly one reused the parked agent:\n${lines.join('\n---\n')}`);
    assert.equal(reusing.exec(reused[0]!)![1], waiting[0]!.split(' ')[0]);
    assert.equal(lines.filter((stderr) => starting.test(stderr)).length, 1, 'the other started a fresh agent');
    assert.equal((await agentsOf(target.uid)).jobs, 2);
  });

  test('a replaced target pod: its parked agent is not reused, and goes with the pod', async () => {
    const old = await targetPod('replaced');
    succeeded(await exec('replaced'));
    assert.equal((await agentsOf(old.uid)).pods.length, 1);
    await kubectl(['delete', 'pod', old.name, '-n', ns, '--wait=true']);
    await rolloutStatus('deployment/replaced', ns);
    // The rollout's status can still count the deleted pod: wait for its replacement to run.
    const replacement = await poll('the replacement pod to run', async () => {
      const pod = await targetPod('replaced').catch(() => undefined);
      return pod && pod.uid !== old.uid ? pod : undefined;
    });
    assert.notEqual(replacement.uid, old.uid);
    const stderr = succeeded(await exec('replaced'));
    assert.doesNotMatch(stderr, reusing);
    assert.equal(starting.exec(stderr)?.[1], replacement.name);
    // Its launcher saw its target process go: the Job ended and removed itself, well before the ttl.
    await allGone(old.uid);
  });

  test('past the ttl nothing is left, and the next exec starts a fresh agent', async () => {
    const target = await targetPod('expiry');
    succeeded(await exec('expiry', '2'));
    const first = (await agentsOf(target.uid)).pods;
    assert.equal(first.length, 1);
    await allGone(target.uid);
    const stderr = succeeded(await exec('expiry', '2'));
    assert.doesNotMatch(stderr, reusing);
    assert.match(stderr, starting);
    assert.ok(!(await agentsOf(target.uid)).pods.some((pod) => first.includes(pod)), 'another agent pod');
    await allGone(target.uid);
  });

  test('a session killed outright (SIGKILL) parks nothing: the next exec starts its own agent', async () => {
    const target = await targetPod('killed');
    const { child, finished } = startDoppel(args('killed', TTL, ['sh', '-c', 'echo $$; exec sleep 60']), { env, timeoutMs: 120_000 });
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const programPid = Number(await poll('the program', async () => (out.includes('\n') ? out.trim() : undefined), 60_000));
    child.kill('SIGKILL');
    process.kill(programPid, 'SIGKILL');
    await finished;
    const killed = (await agentsOf(target.uid)).pods;
    const stderr = succeeded(await exec('killed'));
    assert.doesNotMatch(stderr, reusing);
    assert.match(stderr, starting);
    // The dead session's Job is swept by that start (its CLI on this host is gone).
    await poll('the killed session\'s agent to go', async () => ((await agentsOf(target.uid)).pods.some((pod) => killed.includes(pod)) ? undefined : true), LEFTOVER_GRACE_MS);
  });
});
