// doppel exec when things go wrong: bad input, a dying agent, a killed CLI, Ctrl-C — one clear line, the right status, nothing left behind.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, test } from 'node:test';
import { warmPath } from '../../src/platform/process/warm-path.ts';
import { needsRoot } from '../support/root.ts';
import { until } from '../support/until.ts';
import { createWorld, type World } from '../world/world.ts';
import { agentProcesses, leftoversAfter } from './leftovers.ts';
import { doppelBin, execIn, ok, runDoppel, startDoppel } from './run-doppel.ts';

const gate = needsRoot('doppel exec failure paths');
const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));

const alive = (pid: number) => spawnSync('kill', ['-0', String(pid)]).status === 0;

describe('doppel exec failure paths', gate, () => {
  let world: World;
  const pid = () => world.target.pid;

  before(async () => {
    world = await createWorld();
  });
  after(async () => {
    await world?.destroy();
  });
  afterEach(async () => {
    assert.deepEqual(await leftoversAfter(pid()), { agents: [], dirs: [] });
  });

  test('an unknown target kind is one clear line and exit 1', async () => {
    const result = await runDoppel(['exec', '--target', 'vm/api', '--', 'true']);
    assert.equal(result.status, 1);
    assert.match(result.stderr, /^doppel: unknown target kind "vm" in "vm\/api" \[E_TARGET_KIND\]\n  hint: known kinds: process, container, pod/);
  });

  test('a PID that does not exist', async () => {
    const gone = spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim();
    const result = await runDoppel(['exec', '--target', `process/${gone}`, '--', 'true']);
    assert.equal(result.status, 1);
    assert.match(result.stderr, new RegExp(`^doppel: process ${gone} does not exist .*\\[E_TARGET_NOT_FOUND\\]`));
  });

  test('a process that exists but cannot be inspected is told apart from a missing one', async () => {
    // Real refusal: doppel runs as root without CAP_SYS_PTRACE, the target as another user, so the kernel denies /proc/PID/ns/net.
    const other = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'sleep', '30'], { stdio: 'ignore' });
    try {
      await until('the other user\'s process', () => (alive(other.pid!) ? true : undefined));
      const result = spawnSync('setpriv', ['--bounding-set=-sys_ptrace', '--inh-caps=-sys_ptrace', doppelBin, 'exec', '--target', `process/${other.pid}`, '--', 'true'], { encoding: 'utf8' });
      assert.equal(result.status, 1, result.stderr);
      assert.match(result.stderr, new RegExp(`^doppel: not permitted to inspect process ${other.pid} \\(its /proc entries are not readable: /proc/${other.pid}/ns/net: EACCES\\) \\[E_TARGET_ACCESS\\]\n  hint: the process exists`));
    } finally {
      other.kill('SIGKILL');
    }
  });

  test('a failed start still sweeps what dead sessions left', async () => {
    const dead = Number(spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim());
    const stale = mkdtempSync(join(tmpdir(), `doppel-${dead}-`));
    writeFileSync(join(stale, 'layer.sock'), '');
    const result = await runDoppel(['exec', '--target', 'vm/api', '--', 'true']);
    assert.equal(result.status, 1);
    assert.equal(existsSync(stale), false, `${stale} outlived a later doppel start`);
  });

  test('not root', async () => {
    const result = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', doppelBin, 'exec', '--target', `process/${pid()}`, '--', 'true'], { encoding: 'utf8' });
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, /needs root.*\[E_PERMISSION_ROOT\]\n  hint: run doppel with sudo/);
  });

  test('a TMPDIR that does not exist is one clear line', async () => {
    const result = await execIn(pid(), ['true'], { env: { ...process.env, TMPDIR: '/nonexistent/doppel-tmp' } });
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, /^doppel: cannot make the session's directory in \/nonexistent\/doppel-tmp: ENOENT \[E_TMPDIR\]\n  hint: set TMPDIR/m);
  });

  test('a /proc of another PID namespace (unshare --pid without --mount-proc) is one clear line, not a wait without end', async () => {
    const result = await runDoppel(['exec', '--target', `process/${pid()}`, '--', 'true'], { wrap: ['unshare', '--pid', '--fork'], timeoutMs: 30_000 });
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, /^doppel: \/proc shows another PID namespace than doppel's \(doppel is process 1 in its own\) \[E_PROC_FOREIGN\]\n  hint: mount a \/proc for this PID namespace/);
    // The agent bin/doppel started for it (named by the CLI's pid there, 1) is gone with its files.
    assert.deepEqual(readdirSync(warmPath()).filter((name) => /^early-1[-.]/.test(name)), []);
  });

  test('an invalid config file names each bad key path', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'doppel-config-test-'));
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ feature: { fs: { mode: 'raed' } }, agnt: {} }));
    const result = await runDoppel(['exec', '-f', file, '--target', `process/${pid()}`, '--', 'true']);
    assert.equal(result.status, 1);
    assert.match(result.stderr, /invalid configuration in .*bad\.json/);
    assert.match(result.stderr, /feature\.fs\.mode: expected one of "read"\|"write"\|"local"\|"localwithoverrides"/);
    assert.match(result.stderr, /agnt: unknown key/);
    execFileSync('rm', ['-rf', dir]);
  });

  test('a command that does not exist exits 127, with an agent to park or not, also while it is still starting (fault injection: an nsenter that waits 1.5 s)', async () => {
    const slow = { ...process.env, PATH: `${join(fixtures, 'slow-nsenter')}:${process.env.PATH}`, DOPPEL_TEST_NSENTER_DELAY: '1.5' };
    for (const [env, flags] of [[process.env, []], [process.env, ['--agent-ttl', '0']], [slow, ['--agent-ttl', '0']]] as const) {
      // Nothing else holds the CLI while its session ends: the error must still be told.
      const result = await execIn(pid(), ['no-such-command-here'], { env, flags: [...flags] });
      assert.equal(result.status, 127, result.stderr);
      assert.match(result.stderr, /command not found: no-such-command-here \[E_COMMAND_NOT_FOUND\]/);
    }
  });

  test('an agent that cannot start (fault injection: a failing nsenter) is one clear line', async () => {
    const env = { ...process.env, PATH: `${join(fixtures, 'failing-nsenter')}:${process.env.PATH}` };
    const result = await execIn(pid(), ['true'], { env });
    assert.equal(result.status, 1);
    assert.match(result.stderr, /the agent in process \d+ exited with code 1 before it was ready: nsenter: reassociate .* \[E_AGENT_START\]/);
  });

  test('a program that started before its agent failed to (fault injection: an nsenter failing after 1.5 s) is stopped, and the failure is one clear line', async () => {
    const env = { ...process.env, PATH: `${join(fixtures, 'failing-nsenter')}:${process.env.PATH}`, DOPPEL_TEST_NSENTER_DELAY: '1.5' };
    const result = await execIn(pid(), ['sh', '-c', 'echo $$; exec sleep 30'], { env });
    assert.equal(result.status, 1);
    assert.match(result.stderr, /the agent in process \d+ exited with code 1 before it was ready: nsenter: reassociate .* \[E_AGENT_START\]/);
    // It ran (its environment needs no agent on a process target) and was stopped.
    const programPid = Number(result.stdout.trim());
    assert.ok(programPid > 0, `the program did not start: ${result.stdout}`);
    assert.equal(alive(programPid), false);
  });

  test('an agent killed mid-session stops the program and fails clearly', async () => {
    // The program starts before the agent answers; its lookup waits for the answer, so the agent is killed mid-session.
    const lookup = `getent hosts ${world.services.redis.name} > /dev/null`;
    const { child, finished } = startDoppel(['exec', '--target', `process/${pid()}`, '-q', '--', 'sh', '-c', `${lookup}; echo $$; exec sleep 30`]);
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk));
    const programPid = Number(await until('the program', () => (out.includes('\n') ? out.trim() : undefined)));
    const agent = await until('the agent', () => agentProcesses(pid())[0]);
    process.kill(Number(agent.split(' ')[0]), 'SIGKILL');
    const result = await finished;
    assert.equal(result.status, 1);
    assert.match(result.stderr, /the agent in process \d+ was killed by SIGKILL while the program ran; the program was stopped \[E_AGENT_LOST\]/);
    assert.equal(alive(programPid), false);
  });

  test('a CLI killed outright takes its agent with it', async () => {
    const { child, finished } = startDoppel(['exec', '--target', `process/${pid()}`, '-q', '--', 'sh', '-c', 'echo $$; exec sleep 30']);
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk));
    const programPid = Number(await until('the program', () => (out.includes('\n') ? out.trim() : undefined)));
    await until('the agent', () => agentProcesses(pid())[0]);
    child.kill('SIGKILL');
    process.kill(programPid, 'SIGKILL');
    await finished;
    assert.deepEqual(await leftoversAfter(pid(), 5000).then((l) => l.agents), []);
    // The next session sweeps the socket directory the killed one could not remove.
    assert.equal((await execIn(pid(), ['true'])).status, 0);
  });

  test('Ctrl-C on a terminal reaches the program, not doppel or the agent', async () => {
    const program = 'import signal,sys,time\nsignal.signal(signal.SIGINT, lambda *a: (print("got SIGINT", flush=True), sys.exit(42)))\nprint("ready", flush=True)\ntime.sleep(30)';
    const result = spawnSync('python3', [join(fixtures, 'pty-run.py'), doppelBin, 'exec', '--target', `process/${pid()}`, '-q', '--', 'python3', '-c', program], { encoding: 'utf8', timeout: 60_000 });
    assert.match(result.stdout, /got SIGINT/);
    assert.equal(result.status, 42, result.stdout + result.stderr);
  });

  test('a statically linked program gets a warning', async () => {
    const result = await execIn(pid(), ['/sbin/ldconfig', '--version']);
    assert.equal(result.status, 0);
    assert.match(result.stderr, /ldconfig is statically linked: the layer cannot reach it/);
  });

  test('a statically linked program a program of the session runs gets the layer\'s warning; a dynamic one none', async () => {
    const result = await execIn(pid(), ['sh', '-c', '/sbin/ldconfig --version > /dev/null; /bin/true; echo done']);
    assert.equal(ok(result), 'done\n');
    assert.deepEqual(result.stderr.split('\n').filter((line) => line.startsWith('doppel: warning:')), [
      'doppel: warning: /sbin/ldconfig is statically linked; doppel cannot follow it, so it runs with the local context only',
    ]);
  });

  test('--help exits 0', async () => {
    const result = spawnSync(doppelBin, ['exec', '--help'], { encoding: 'utf8' });
    assert.equal(result.status, 0);
    assert.match(result.stdout, /--target <target>/);
  });
});
