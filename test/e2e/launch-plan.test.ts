// Launch plans (src/cli/exec/launch-plan.ts, layer/src/plan.c): a fresh `doppel exec` on a process target writes down
// what it decided; the next start of that program (its arguments may differ) starts from that in bin/doppel's
// trampoline, before the CLI has loaded, and the CLI beside it decides again. Seen from outside: the same program
// output, exit status and signals, the program a child of the CLI as ever, nothing left behind; a changed input is a
// new decision; a plan that no longer holds stops the program it started.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { getPriority, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isAlive } from '../../src/process-alive.ts';
import { decodePlan, encodePlan } from '../../src/warm/launch-wire.ts';
import { needsRoot } from '../support/root.ts';
import { until } from '../support/until.ts';
import { execIn, ok, runDoppel, startDoppel, startedDoppels, type Finished } from './run-doppel.ts';
import { suiteWorld } from './suite-world.ts';
import { inTarget } from './target-files.ts';
import { noHostOf, warmDir } from './warm-host.ts';

const gate = needsRoot('programs started from launch plans on a process target');

const written = (run: Finished) => /plan written: (\S+)/.exec(run.stderr)?.[1];
const fromPlan = (run: Finished) => /program \d+ started from the plan (\S+)/.exec(run.stderr)?.[1];

describe('launch plans', gate, () => {
  const world = suiteWorld();
  // A warm session host of this target (an earlier suite's) is asked first, and bin/doppel then starts no agent of its
  // own, which plans need (src/warm/).
  before(() => noHostOf(() => world().target.pid));
  const cwd = mkdtempSync(join(tmpdir(), 'doppel-plan-test-'));
  after(() => rmSync(cwd, { recursive: true, force: true }));
  /** Runs of one test share a variable of their own: their own request, so their own plan. */
  const runner = (extra: Record<string, string> = {}) => {
    const env = { ...process.env, ...extra, NODE_DEBUG: 'doppel-plan', DOPPEL_TEST_RUN: randomUUID() };
    return (command: string[]) => execIn(world().target.pid, command, { env, cwd, flags: ['--agent-ttl', '0'] });
  };

  test('the second identical start runs from the first one\'s plan: the same environment, files, parent and exit status', async () => {
    const { env, files } = world().target;
    const [path, content] = Object.entries(files)[0]!;
    const run = runner();
    // $PPID: the program is the CLI's child either way (bin/doppel's process became the CLI).
    const command = ['sh', '-c', `echo "$DOPPEL_TEST_SECRET"; cat ${path}; echo "parent $PPID"; exit 3`];
    const first = await run(command);
    const second = await run(command);
    const third = await run(command);
    for (const [i, result] of [first, second, third].entries()) {
      assert.equal(result.status, 3, `run ${i + 1}: ${result.stderr}`);
      assert.equal(result.stdout.split('\n').slice(0, -2).join('\n'), `${env.DOPPEL_TEST_SECRET}\n${content.trimEnd()}`, `run ${i + 1}`);
    }
    const plan = written(first);
    assert.ok(plan, first.stderr);
    // Its environment is the program's: no one else reads it.
    for (const path of [plan, dirname(plan)]) assert.equal(statSync(path).mode & 0o077, 0, path);
    assert.equal(fromPlan(first), undefined);
    assert.equal(fromPlan(second), plan, second.stderr);
    assert.equal(fromPlan(third), plan, third.stderr);
    assert.equal(written(second), undefined, 'a start from a plan writes none');
    const pids = startedDoppels().slice(-3);
    for (const [i, result] of [first, second, third].entries()) assert.match(result.stdout, new RegExp(`parent ${pids[i]}\\n$`), `run ${i + 1}`);
  });

  test('a start of the same program with other arguments runs from its plan, with its own arguments; another program is another request', async () => {
    const { files } = world().target;
    const [path, content] = Object.entries(files)[0]!;
    const run = runner();
    const first = await run(['sh', '-c', 'echo "first $#"', 'sh']);
    assert.equal(ok(first), 'first 0\n');
    const plan = written(first);
    assert.ok(plan, first.stderr);
    // The plan holds the program's word; the arguments are each start's own, a `--` or a doppel flag among them too.
    assert.deepEqual(decodePlan(readFileSync(plan)).argv, ['sh']);
    const other = await run(['sh', '-c', 'printf "[%s]" "$@"; echo; cat "$0"; exit 4', path, 'a b', '--', '--agent-ttl', '-q']);
    assert.equal(fromPlan(other), plan, other.stderr);
    assert.equal(other.status, 4, other.stderr);
    assert.equal(other.stdout, `[a b][--][--agent-ttl][-q]\n${content}`);
    const another = await run(['cat', path]);
    assert.equal(ok(another), content);
    assert.equal(fromPlan(another), undefined, another.stderr);
    assert.ok(written(another), another.stderr);
    assert.notEqual(written(another), plan);
  });

  test('a command given without --, its program\'s own options after it, has a plan of its own and runs from it', async () => {
    const env = { ...process.env, NODE_DEBUG: 'doppel-plan', DOPPEL_TEST_RUN: randomUUID() };
    const run = (args: string[]) => runDoppel(['exec', '-q', '--target', `process/${world().target.pid}`, '--agent-ttl', '0', ...args], { env, cwd });
    const first = await run(['sh', '-c', 'echo "$POD_NAME $*"', 'sh', '-t', 'process/1']);
    assert.equal(ok(first), `${world().target.env.POD_NAME} -t process/1\n`);
    const plan = written(first);
    assert.ok(plan, first.stderr);
    assert.deepEqual(decodePlan(readFileSync(plan)).argv, ['sh']);
    const next = await run(['sh', '-c', 'echo "$POD_NAME $*"', 'sh', '--steal']);
    assert.equal(fromPlan(next), plan, next.stderr);
    assert.equal(ok(next), `${world().target.env.POD_NAME} --steal\n`);
  });

  test('a configuration file made, changed (a link too) or removed since is a new decision, and a plan of it is made', async () => {
    const run = runner();
    const command = ['sh', '-c', 'echo "[${DOPPEL_PLAN_TEST-}]"'];
    const config = join(cwd, '.doppel', 'config.json');
    try {
      ok(await run(command));
      assert.ok(fromPlan(await run(command)));
      mkdirSync(join(cwd, '.doppel'));
      writeFileSync(config, JSON.stringify({ feature: { env: { override: { DOPPEL_PLAN_TEST: 'one' } } } }));
      const made = await run(command);
      assert.equal(ok(made), '[one]\n');
      assert.equal(fromPlan(made), undefined, made.stderr);
      const again = await run(command);
      assert.equal(ok(again), '[one]\n');
      assert.ok(fromPlan(again), again.stderr);
      writeFileSync(config, JSON.stringify({ feature: { env: { override: { DOPPEL_PLAN_TEST: 'two' } } } }));
      const changed = await run(command);
      assert.equal(ok(changed), '[two]\n');
      assert.equal(fromPlan(changed), undefined, changed.stderr);
      // A configuration file that is a link (a dotfiles repository's) is read through it, by the CLI and the checks.
      const linked = join(cwd, 'linked.json');
      writeFileSync(linked, JSON.stringify({ feature: { env: { override: { DOPPEL_PLAN_TEST: 'linked' } } } }));
      rmSync(config);
      symlinkSync(linked, config);
      assert.equal(ok(await run(command)), '[linked]\n');
      const throughLink = await run(command);
      assert.equal(ok(throughLink), '[linked]\n');
      assert.ok(fromPlan(throughLink), throughLink.stderr);
      rmSync(config);
      rmSync(linked);
      const removed = await run(command);
      assert.equal(ok(removed), '[]\n');
      assert.equal(fromPlan(removed), undefined, removed.stderr);
    } finally {
      rmSync(join(cwd, '.doppel'), { recursive: true, force: true });
    }
  });

  test('a mount made in the target since is a new decision: its files are the target\'s, and the program is not stopped', async () => {
    const { pid } = world().target;
    const run = runner();
    // Under the CLI's working directory (a local root), a file comes from here, until the target mounts something there.
    const point = mkdtempSync(join(cwd, 'mounted-'));
    writeFileSync(join(point, 'where'), 'here\n');
    const command = ['cat', join(point, 'where')];
    assert.equal(ok(await run(command)), 'here\n');
    assert.ok(fromPlan(await run(command)));
    inTarget(pid, ['mkdir', '-p', point]);
    inTarget(pid, ['mount', '-t', 'tmpfs', '-o', 'size=64k', 'doppel-plan-test', point]);
    try {
      inTarget(pid, ['sh', '-c', `echo there > ${point}/where`]);
      const mounted = await run(command);
      assert.equal(ok(mounted), 'there\n');
      assert.equal(fromPlan(mounted), undefined, mounted.stderr);
    } finally {
      inTarget(pid, ['umount', point]);
    }
  });

  test('a planned program\'s lookups are answered by the agent bin/doppel started, from that agent\'s start, without waiting for the CLI', async () => {
    const { redis } = world().services;
    // The layer says which way each lookup went.
    const run = runner({ DOPPEL_LAYER_LOG: 'debug' });
    const command = ['getent', 'hosts', redis.name];
    const first = await run(command);
    const planned = await run(command);
    for (const result of [first, planned]) assert.deepEqual(ok(result).trim().split(/\s+/), [redis.address, redis.name]);
    assert.ok(fromPlan(planned), planned.stderr);
    // getent asks at once, some 40 ms before that agent's Node.js listens: the layer waited for it, not for the proxy.
    assert.match(planned.stderr, /op 7: asked the agent/);
    assert.doesNotMatch(planned.stderr, /asking the proxy/);
    for (const cli of startedDoppels().slice(-2)) assert.deepEqual(readdirSync(warmDir).filter((name) => name.startsWith(`early-${cli}-`)), [], 'the early agent\'s sockets are gone');
  });

  test('a CLI that started its program from a plan takes its priority back, on every thread, once it has its session', async () => {
    const env = { ...process.env, NODE_DEBUG: 'doppel-plan', DOPPEL_TEST_RUN: randomUUID() };
    const command = ['exec', '--target', `process/${world().target.pid}`, '-q', '--agent-ttl', '0', '--', 'sh', '-c', 'echo "ready $(cut -d" " -f19 /proc/self/stat)"; sleep 3'];
    ok(await startDoppel(command, { env, cwd }).finished);
    const { child, finished } = startDoppel(command, { env, cwd });
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk));
    // The trampoline lowered it by 10 before its Node.js made any thread (test/layer/launch-plan.test.ts); the program
    // never was.
    const priorities = () => readdirSync(`/proc/${child.pid}/task`).map((thread) => Number(readFileSync(`/proc/${child.pid}/task/${thread}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]));
    const mine = getPriority();
    await until('the CLI to take its priority back', () => (out.includes('ready') && priorities().every((priority) => priority === mine) ? true : undefined), 10_000);
    const result = await finished;
    assert.ok(fromPlan(result), result.stderr);
    assert.equal(ok(result), `ready ${mine}\n`);
  });

  test('a plan that no longer holds stops the program it started, says so, and goes', async () => {
    const run = runner();
    const command = ['sh', '-c', 'echo "[$DOPPEL_TEST_SECRET]"; sleep 2; echo late'];
    const first = await run(command);
    const file = written(first);
    assert.ok(file, first.stderr);
    // A fake: the plan is edited here, as the stand-in for an input the trampoline cannot check having changed.
    const plan = decodePlan(readFileSync(file));
    plan.env = plan.env.map((entry) => (entry.startsWith('DOPPEL_TEST_SECRET=') ? 'DOPPEL_TEST_SECRET=stale' : entry));
    writeFileSync(file, encodePlan(plan));
    const stopped = await run(command);
    assert.equal(fromPlan(stopped), file, stopped.stderr);
    assert.equal(stopped.status, 1, stopped.stderr);
    assert.equal(stopped.stdout, '[stale]\n');
    assert.match(stopped.stderr, /this run's session differs \(its variable DOPPEL_TEST_SECRET differs\), so it was stopped/);
    assert.equal(existsSync(file), false, 'the plan is removed');
  });

  test('signals reach a program started from a plan as they reach any other, and one that comes before the CLI has loaded leaves nothing running', async () => {
    const script = 'trap "echo got TERM; exit 7" TERM; echo "ready $$"; while :; do sleep 0.05; done';
    const env = { ...process.env, NODE_DEBUG: 'doppel-plan', DOPPEL_TEST_RUN: randomUUID() };
    const start = () => {
      const started = startDoppel(['exec', '--target', `process/${world().target.pid}`, '-q', '--agent-ttl', '0', '--', 'sh', '-c', script], { env, cwd });
      const seen = { out: '', err: '' };
      started.child.stdout!.on('data', (chunk: Buffer) => (seen.out += chunk));
      started.child.stderr!.on('data', (chunk: Buffer) => (seen.err += chunk));
      return { ...started, seen, program: () => Number(/ready (\d+)/.exec(seen.out)?.[1]) || undefined };
    };
    // The first run makes the plan; the next ones start from it. The CLI relays once it runs (its stderr says it took
    // the program, and its signal handlers are set by then).
    for (const planned of [false, true]) {
      const { child, finished, seen } = start();
      await until('the CLI to run the program', () => (seen.out.includes('ready') && (!planned || /started from the plan/.test(seen.err)) ? true : undefined), 30_000);
      child.kill('SIGTERM');
      const result = await finished;
      assert.equal(result.status, 7, result.stderr);
      assert.match(result.stdout, /got TERM/);
      assert.equal(fromPlan(result) !== undefined, planned, result.stderr);
    }
    // A SIGTERM as soon as the program runs, while the CLI's Node.js may still be loading: the program goes either way.
    const early = start();
    await until('the program to start', () => early.program(), 30_000);
    early.child.kill('SIGTERM');
    const result = await early.finished;
    assert.ok(result.status === 7 || result.signal === 'SIGTERM', `${result.status} ${result.signal} ${result.stderr}`);
    await until('the program to end', () => (isAlive(early.program()!) ? undefined : true), 5000);
    // The directory of a CLI killed outright is the next session's to sweep, as for any start (exec-failures.test.ts).
    ok(await execIn(world().target.pid, ['true']));
  });
});
