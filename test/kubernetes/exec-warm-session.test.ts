// Warm session hosts of Kubernetes targets on the test cluster: after a session on a deployment, the next `doppel exec`
// of the same target, namespace and kubeconfig within agent.ttl runs in that session (the same host and agent pod, no
// new Job), as the shell's own child, with the pod's environment, files and hostname; another target, namespace,
// kubeconfig or configuration runs the CLI; the host goes after its ttl (its agent with it), when its pod is deleted,
// and, killed, leaves nothing the next start does not sweep; agent.ttl 0 leaves no host. A program in the warm session
// steals the pod's port as in a fresh session, and gives it back when it exits. A user who is not root has their own.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, copyFileSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { warmDirectory } from '../../src/platform/process/warm-agents.ts';
import { doppelBin, runDoppel, startDoppel, type Finished } from '../e2e/run-doppel.ts';
import { warmDir } from '../e2e/warm-host.ts';
import { serveWithDoppel } from '../e2e/serve-under-doppel.ts';
import { adminKubeconfig, apply, createNamespace, deployment, kubectl, needsCluster, poll, rolloutStatus } from './support/cluster.ts';
import { LEFTOVER_GRACE_MS } from './support/doppel-objects.ts';
import { hasLaunchSocket, hostGone, hostOf, isRunning, kubeHosts } from './support/warm-session.ts';

const env = { ...process.env, KUBECONFIG: adminKubeconfig };
const dir = mkdtempSync(path.join(tmpdir(), 'doppel-k8s-warm-session-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const TTL = '30';
const starting = /^doppel: starting the agent next to (\S+) on /m;
/** A program that shows the pod's environment, a file only the pod's image has, the hostname, its own pid and status. */
const probe = ['sh', '-c', 'echo "$APP_GREETING|$(cat /app/message.txt)|$(hostname)|$$"; exit 7'];

describe('warm sessions on the test cluster', needsCluster('warm sessions on Kubernetes'), () => {
  let namespace: Awaited<ReturnType<typeof createNamespace>>;
  let other: Awaited<ReturnType<typeof createNamespace>>;
  let ns = '';

  const target = (app: string) => `deployment/${app}`;
  const args = (app: string, flags: string[], command: string[], namespaceName = ns) => ['exec', '--target', target(app), '-n', namespaceName, ...flags, '--', ...command];
  const exec = (app: string, flags: string[] = ['--agent-ttl', TTL], command = ['sh', '-c', 'echo $APP_GREETING'], options: { namespace?: string; env?: NodeJS.ProcessEnv } = {}) =>
    runDoppel(args(app, flags, command, options.namespace), { env: options.env ?? env, timeoutMs: 120_000 });
  const succeeded = (result: Finished) => {
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, 'hello-from-image\n', 'the program got the target\'s environment');
    return result.stderr;
  };
  const targetPod = async (app: string, namespaceName = ns) => {
    const [name, uid] = (await kubectl(['get', 'pods', '-n', namespaceName, '-l', `app=${app}`, '--field-selector=status.phase=Running', '-o', 'jsonpath={.items[0].metadata.name} {.items[0].metadata.uid}'])).split(' ');
    return { name: name!, uid: uid! };
  };
  /** `name uid` of every agent pod, and the agent Jobs with their client annotation, made for the target pod with this uid. */
  const agentsOf = async (uid: string) => {
    const selector = `doppel.dev/target-uid=${uid}`;
    const pods = await kubectl(['get', 'pods', '-n', ns, '-l', selector, '-o', 'jsonpath={range .items[*]}{.metadata.name} {.metadata.uid}{"\\n"}{end}']);
    const jobs = await kubectl(['get', 'jobs', '-n', ns, '-l', selector, '-o', 'jsonpath={range .items[*]}{.metadata.annotations.doppel\\.dev/client}{"\\n"}{end}']);
    return { pods: pods.split('\n').filter(Boolean).sort(), clients: jobs.split('\n').filter(Boolean) };
  };
  const allGone = (uid: string) =>
    poll(`no agent of pod ${uid} left`, async () => {
      const { pods, clients } = await agentsOf(uid);
      return pods.length + clients.length === 0 ? true : undefined;
    }, LEFTOVER_GRACE_MS);

  before(async () => {
    namespace = await createNamespace('wsession');
    other = await createNamespace('wsession-other');
    ns = namespace.name;
    const apps = ['wsess-reuse', 'wsess-other', 'wsess-expiry', 'wsess-deleted', 'wsess-killed', 'wsess-ttl0', 'wsess-steal', 'wsess-scaled', 'wsess-user', 'wsess-init'];
    await apply([...apps.map((app) => deployment(ns, app, 1)), deployment(other.name, 'wsess-reuse', 1)]);
    for (const app of apps) await rolloutStatus(target(app), ns);
    await rolloutStatus(target('wsess-reuse'), other.name);
  });
  after(async () => {
    for (const app of ['wsess-reuse', 'wsess-other', 'wsess-expiry', 'wsess-deleted', 'wsess-killed', 'wsess-ttl0', 'wsess-steal', 'wsess-scaled', 'wsess-user', 'wsess-init']) for (const host of kubeHosts(target(app))) process.kill(host, 'SIGTERM');
    await Promise.all([namespace?.remove(), other?.remove()]);
  });

  test('the next exec within the ttl runs in the warm session: the same host and agent pod, the pod\'s context, its own pid and status', async () => {
    const pod = await targetPod('wsess-reuse');
    assert.match(succeeded(await exec('wsess-reuse')), starting);
    const host = await hostOf(target('wsess-reuse'));
    const first = await agentsOf(pod.uid);
    assert.equal(first.pods.length, 1, `one agent pod: ${first.pods.join(', ')}`);
    assert.deepEqual(first.clients, [`${hostname()}/${host}`], 'the host holds the agent\'s Job');
    for (let run = 0; run < 3; run++) {
      const { child, finished } = startDoppel(args('wsess-reuse', ['--agent-ttl', TTL], probe), { env, timeoutMs: 60_000 });
      const result = await finished;
      assert.equal(result.status, 7, result.stderr);
      // The program is the process bin/doppel started: no CLI between them.
      assert.equal(result.stdout, `hello-from-image|hello from the doppel test app image|${pod.name}|${child.pid}\n`);
      assert.equal(result.stderr, `doppel: reusing the warm session of deployment/wsess-reuse in ${ns} (host pid ${host})\n`);
    }
    // -q: nothing of ours on stderr.
    const quiet = await exec('wsess-reuse', ['-q', '--agent-ttl', TTL]);
    assert.equal(quiet.stderr, '');
    assert.equal(quiet.stdout, 'hello-from-image\n');
    assert.deepEqual(await agentsOf(pod.uid), first, 'the same agent pod (name and uid) and Job, nothing new');
    assert.deepEqual(kubeHosts(target('wsess-reuse')), [host]);
  });

  test('another target, namespace or kubeconfig runs the CLI and the host stays; another configuration has it give its agent back', async () => {
    const host = await hostOf(target('wsess-reuse'));
    const pod = await targetPod('wsess-reuse');
    const held = await agentsOf(pod.uid);
    const notWarm = (stderr: string) => assert.doesNotMatch(stderr, /warm session/);
    // Another deployment in the same namespace.
    const otherApp = await exec('wsess-other');
    notWarm(succeeded(otherApp));
    assert.equal(starting.exec(otherApp.stderr)?.[1], (await targetPod('wsess-other')).name);
    // The same deployment's name in another namespace: that namespace's pod.
    const elsewhere = await exec('wsess-reuse', ['--agent-ttl', '1'], ['hostname'], { namespace: other.name });
    assert.equal(elsewhere.status, 0, elsewhere.stderr);
    notWarm(elsewhere.stderr);
    assert.equal(elsewhere.stdout, `${(await targetPod('wsess-reuse', other.name)).name}\n`);
    // The same cluster through another kubeconfig file: the CLI's to read.
    const copy = path.join(dir, 'copy.kubeconfig');
    copyFileSync(adminKubeconfig, copy);
    const viaCopy = await exec('wsess-reuse', ['--agent-ttl', '1'], undefined, { env: { ...env, KUBECONFIG: copy } });
    notWarm(succeeded(viaCopy));
    assert.match(viaCopy.stderr, starting);
    // (That run left a host of its own, for its kubeconfig.)
    assert.ok(kubeHosts(target('wsess-reuse')).includes(host), 'the host stayed');
    assert.deepEqual((await agentsOf(pod.uid)).clients.filter((client) => client.endsWith(`/${host}`)), [`${hostname()}/${host}`]);
    // The same target with another configuration: the host parks its agent, goes, and the CLI reuses the agent.
    const otherConfig = await exec('wsess-reuse', ['--agent-ttl', TTL, '--env-exclude', 'SOMETHING_ELSE']);
    succeeded(otherConfig);
    assert.match(otherConfig.stderr, new RegExp(`^doppel: reusing the warm agent ${held.pods[0]!.split(' ')[0]} `, 'm'));
    await hostGone(host);
  });

  test('a CLI that is its PID namespace\'s first process (a container\'s) leaves no host, which would die with it, but its agent warm in its pod', async () => {
    const kubeFiles = () => readdirSync(warmDir).filter((name) => name.startsWith('launch-kube-'));
    const before = kubeFiles();
    const first = await runDoppel(args('wsess-init', ['--agent-ttl', TTL], ['sh', '-c', 'echo $APP_GREETING']), { env, wrap: ['unshare', '--pid', '--fork', '--mount-proc'], timeoutMs: 120_000 });
    const pod = starting.exec(succeeded(first))?.[1];
    assert.deepEqual(kubeHosts(target('wsess-init')), []);
    assert.deepEqual(kubeFiles().filter((name) => !before.includes(name)), [], 'no host nor its marker');
    const next = await exec('wsess-init');
    assert.match(succeeded(next), new RegExp(`^doppel: reusing the warm agent \\S+ \\(next to ${pod}\\)`, 'm'));
  });

  test('after the ttl the host is gone, its launch socket removed, and its agent\'s Job and pod too; the next exec starts afresh', async () => {
    const pod = await targetPod('wsess-expiry');
    succeeded(await exec('wsess-expiry', ['--agent-ttl', '2']));
    const host = await hostOf(target('wsess-expiry'));
    assert.equal((await agentsOf(pod.uid)).pods.length, 1);
    await hostGone(host);
    await allGone(pod.uid);
    const next = await exec('wsess-expiry', ['--agent-ttl', '2']);
    assert.doesNotMatch(succeeded(next), /reusing/);
    assert.match(next.stderr, starting);
    await hostGone(await hostOf(target('wsess-expiry')));
    await allGone(pod.uid);
  });

  test('the target pod deleted while a host waits: the host goes at once, and the next exec runs normally on the new pod', async () => {
    const old = await targetPod('wsess-deleted');
    succeeded(await exec('wsess-deleted'));
    const host = await hostOf(target('wsess-deleted'));
    await kubectl(['delete', 'pod', old.name, '-n', ns, '--wait=false']);
    // Well before its 30 s ttl.
    await hostGone(host, 15_000);
    await rolloutStatus(target('wsess-deleted'), ns);
    const replacement = await targetPod('wsess-deleted');
    assert.notEqual(replacement.uid, old.uid);
    const next = await exec('wsess-deleted', ['--agent-ttl', TTL], ['hostname']);
    assert.equal(next.status, 0, next.stderr);
    assert.equal(next.stdout, `${replacement.name}\n`);
    assert.equal(starting.exec(next.stderr)?.[1], replacement.name);
    await allGone(old.uid);
  });

  test('another pod of the target ready while a host waits: the host parks its agent and goes; the next exec takes it and starts one for the new pod', async () => {
    const first = await targetPod('wsess-scaled');
    succeeded(await exec('wsess-scaled'));
    const host = await hostOf(target('wsess-scaled'));
    const held = (await agentsOf(first.uid)).pods[0]!.split(' ')[0]!;
    await kubectl(['scale', target('wsess-scaled'), '-n', ns, '--replicas=2']);
    await rolloutStatus(target('wsess-scaled'), ns);
    await hostGone(host);
    // The same settings (agent.ttl among them), so that the parked agent is one this session may take.
    const next = await exec('wsess-scaled');
    succeeded(next);
    assert.match(next.stderr, new RegExp(`^doppel: reusing the warm agent and starting the agent next to \\S+ on .*$`, 'm'));
    assert.ok((await agentsOf(first.uid)).pods.some((pod) => pod.startsWith(`${held} `)), 'the parked agent was not the one reused');
    // A session of two agents leaves no host (one started with it goes when told nothing).
    await poll('no host of the two-agent session', async () => (kubeHosts(target('wsess-scaled')).length === 0 ? true : undefined), 10_000);
  });

  test('a host killed outright: the next start removes its launch socket and its agent\'s Job', async () => {
    const pod = await targetPod('wsess-killed');
    succeeded(await exec('wsess-killed'));
    const host = await hostOf(target('wsess-killed'));
    const held = (await agentsOf(pod.uid)).pods;
    process.kill(host, 'SIGKILL');
    await poll('the host to die', async () => (isRunning(host) ? undefined : true));
    assert.ok(hasLaunchSocket(host), 'a host killed outright cannot remove its socket');
    // Any Kubernetes start sweeps; this one's target has no host, so bin/doppel's launch path asks the dead socket in vain.
    const next = await exec('wsess-other', ['--agent-ttl', '1']);
    succeeded(next);
    assert.equal(hasLaunchSocket(host), false, 'the dead host\'s launch socket is still there');
    // Its Job names a CLI on this machine that is gone, and is not parked: the sweep deletes it.
    await poll('the killed host\'s agent to go', async () => ((await agentsOf(pod.uid)).pods.some((agent) => held.includes(agent)) ? undefined : true), LEFTOVER_GRACE_MS);
  });

  test('a program in the warm session steals the pod\'s port; when it exits the pod answers again, and the next one steals it again', async () => {
    const podIP = (await kubectl(['get', 'pods', '-n', ns, '-l', 'app=wsess-steal', '-o', 'jsonpath={.items[0].status.podIP}'])).trim();
    // This machine is the cluster's node: it reaches the pod's address, where the agent's redirect takes the port.
    const get = async () => (await fetch(`http://${podIP}:8080/index.html`, { signal: AbortSignal.timeout(5000) })).text();
    assert.equal(await get(), 'doppel test app\n');
    succeeded(await exec('wsess-steal', ['--agent-ttl', TTL, '--steal']));
    const host = await hostOf(target('wsess-steal'));
    // Answers one caller, then exits without closing its server: its session's end gives the port back.
    const script = `require('http').createServer((q, s) => s.end('local', () => process.exit(0))).listen(8080, () => console.log('ready'))`;
    for (let round = 0; round < 2; round++) {
      const server = serveWithDoppel(args('wsess-steal', ['--agent-ttl', TTL, '--steal'], ['node', '-e', script]), { env, timeoutMs: 60_000 });
      await server.line(/^ready/);
      assert.equal(await get(), 'local');
      const result = await server.finished;
      assert.equal(result.status, 0, result.stderr);
      assert.equal(result.stderr, `doppel: reusing the warm session of deployment/wsess-steal in ${ns} (host pid ${host})\n`);
      await poll('the pod to answer again', async () => ((await get().catch(() => '')) === 'doppel test app\n' ? true : undefined), 15_000);
    }
    assert.deepEqual(kubeHosts(target('wsess-steal')), [host]);
  });

  test('a developer who is not root gets sessions, warm agents and a warm session in a directory of their own, root\'s being closed to them', async () => {
    // Root's warm directory, as any `sudo doppel exec` leaves it: 0700, its own.
    assert.equal(warmDirectory(), warmDir);
    const pod = await targetPod('wsess-user');
    const [uid, gid] = ['-u', '-g'].map((flag) => Number(execFileSync('id', [flag, 'nobody'], { encoding: 'utf8' }))) as [number, number];
    const home = mkdtempSync(path.join(tmpdir(), 'doppel-k8s-user-'));
    const userDir = path.join(tmpdir(), `doppel-warm-${uid}`);
    try {
      chownSync(home, uid, gid);
      // Their own kubeconfig, its certificates inline: the admin one names files only root may read.
      const kubeconfig = path.join(home, 'kubeconfig');
      writeFileSync(kubeconfig, await kubectl(['config', 'view', '--raw', '--flatten']), { mode: 0o600 });
      chownSync(kubeconfig, uid, gid);
      const user = ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups'];
      // Only to reach this clone wherever CI put it (under root's 0700 home, say): it reads and searches directories, and owns nothing.
      const reach = spawnSync(user[0]!, [...user.slice(1), 'test', '-x', doppelBin]).status === 0 ? [] : ['--inh-caps=+dac_read_search', '--ambient-caps=+dac_read_search'];
      const options = { env: { PATH: process.env.PATH, HOME: home, KUBECONFIG: kubeconfig }, cwd: home, wrap: [...user, ...reach], timeoutMs: 120_000 };
      const run = () => runDoppel(args('wsess-user', ['--agent-ttl', TTL], ['sh', '-c', 'echo "$APP_GREETING $(id -u)"']), options);
      const first = await run();
      assert.equal(first.status, 0, first.stderr);
      assert.equal(first.stdout, `hello-from-image ${uid}\n`);
      assert.equal(starting.exec(first.stderr)?.[1], pod.name);
      const host = await hostOf(target('wsess-user'), userDir);
      assert.equal(statSync(`/proc/${host}`).uid, uid, 'the host runs as the user');
      const dir = statSync(userDir);
      assert.deepEqual([dir.uid, dir.mode & 0o777], [uid, 0o700]);
      assert.equal(hasLaunchSocket(host), false, 'the host listens in root\'s directory');
      const next = await run();
      assert.equal(next.status, 0, next.stderr);
      assert.equal(next.stdout, `hello-from-image ${uid}\n`);
      assert.equal(next.stderr, `doppel: reusing the warm session of deployment/wsess-user in ${ns} (host pid ${host})\n`);
      process.kill(host, 'SIGTERM');
      await hostGone(host, 30_000, userDir);
      await allGone(pod.uid);
    } finally {
      rmSync(home, { recursive: true, force: true });
      rmSync(userDir, { recursive: true, force: true });
    }
  });

  test('agent.ttl 0 leaves no host', async () => {
    const pod = await targetPod('wsess-ttl0');
    succeeded(await exec('wsess-ttl0', ['--agent-ttl', '0']));
    assert.deepEqual(kubeHosts(target('wsess-ttl0')), []);
    await allGone(pod.uid);
  });
});
