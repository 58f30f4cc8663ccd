// The target's pids (root_pid, network_pid) only while the very process the proxy named lives: the layer opens a
// remote file in the target's root itself while it does, and asks the proxy once it exited (a Kubernetes replica can
// end during a session), was dead already when the program started, or is another process that took its PID. The
// proxy here is a fake that names a process of the test's: a real one never names a wrong process, and PID reuse, the
// fault a wrong start time stands for, cannot be caused on demand. The target is a process with a file only it sees
// (a tmpfs in its own mount namespace), so a read that succeeds came from its root.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { encodeFastPath, Op } from '../../src/proxy/layer-wire.ts';
import { needsRoot } from '../support/root.ts';
import { until } from '../support/until.ts';
import { runUnderFakeProxy, startFakeProxy, type Asked, type FakeProxy } from './fake-proxy.ts';
import { sanitizedEnv, sanitizerReport } from './sanitized.ts';

const file = '/mnt/only-there';

interface Target {
  pid: number;
  start: bigint;
  /** SIGKILL, and resolves once it is gone (reaped). */
  kill(): Promise<void>;
}

const targets = new Set<Target>();

/** A process in its own mount namespace whose /mnt holds `file` ("hi"), which this machine's /mnt does not. */
async function startTarget(): Promise<Target> {
  const child = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs none /mnt && echo hi > ${file} && exec sleep 600`], { stdio: 'ignore' });
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const pid = child.pid!;
  const target: Target = {
    pid,
    start: 0n,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await gone;
      targets.delete(target);
    },
  };
  targets.add(target);
  await until(`${file} in process ${pid}'s root`, () => (existsSync(`/proc/${pid}/root${file}`) ? true : undefined));
  // Field 22 of /proc/PID/stat, counted after the name's closing parenthesis (field 2).
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  target.start = BigInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!);
  return target;
}

/** The fast-path file naming pid (root and network) with that start time, and /mnt/ read from the target. */
const fastPath = (pid: number, start: bigint) =>
  encodeFastPath({ loopbackTcpLocal: true, remoteWrites: false, rootPid: pid, networkPid: pid, targetStart: start, rules: [{ match: 'prefix', verdict: 'remote', text: '/mnt/' }] });

const asked = (ops: Asked[]) => ops.filter((o) => o.path === file).map((o) => o.op);

/** Reads `file` once, and once more after a line on stdin: each read's content, or "missing" (the fake proxy says "local"). */
const readTwice = [
  'import sys',
  'def read():',
  '    try:',
  `        with open("${file}") as f: return f.read().strip()`,
  '    except FileNotFoundError: return "missing"',
  'print(read(), flush=True)',
  'sys.stdin.readline()',
  'print(read(), flush=True)',
].join('\n');

describe('the target\'s pids are used only while the process named lives', needsRoot('a target in its own mount namespace'), () => {
  let python: string;
  let sanitized: NodeJS.ProcessEnv;

  before(() => {
    // The interpreter itself, not a version manager's shim that would run a shell and more under the layer first.
    python = execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
    sanitized = sanitizedEnv();
  });
  after(async () => {
    await Promise.all([...targets].map((t) => t.kill()));
  });

  for (const [variant, layerEnv] of [['', () => ({})], [' (ASan/UBSan)', () => ({ ...sanitized, LD_PRELOAD: `${sanitized.LD_PRELOAD}:${sanitized.DOPPEL_LAYER_LIBRARY}` })]] as const) {
    /** A fake proxy with pid's fast-path file, and its environment with this variant's layer. */
    const proxyFor = async (pid: number, start: bigint): Promise<{ proxy: FakeProxy; env: NodeJS.ProcessEnv }> => {
      const proxy = await startFakeProxy({ fastPathFile: fastPath(pid, start) });
      return { proxy, env: { ...proxy.env, ...layerEnv() } };
    };

    test(`the named process, alive: its file is read from its root without asking${variant}`, async (t) => {
      const target = await startTarget();
      const { proxy, env } = await proxyFor(target.pid, target.start);
      t.after(() => proxy.close());
      const { status, stdout, stderr } = await runUnderFakeProxy(proxy, 'cat', [file], env);
      assert.doesNotMatch(stderr, sanitizerReport);
      assert.equal(status, 0, stderr);
      assert.equal(stdout, 'hi\n');
      assert.deepEqual(asked(proxy.ops), []);
      assert.match(stderr, /open \/mnt\/only-there: the target's file, in its root/);
      await target.kill();
    });

    test(`another process at the PID (a different start time): the proxy is asked${variant}`, async (t) => {
      const target = await startTarget();
      const { proxy, env } = await proxyFor(target.pid, target.start + 1n);
      t.after(() => proxy.close());
      const { stderr } = await runUnderFakeProxy(proxy, 'cat', [file], env);
      assert.doesNotMatch(stderr, sanitizerReport);
      assert.deepEqual(asked(proxy.ops), [Op.open]);
      assert.match(stderr, new RegExp(`process ${target.pid} is not the target \\(start time differs\\)`));
      await target.kill();
    });

    test(`the target exits while the program runs: read from its root before, asked after${variant}`, async (t) => {
      const target = await startTarget();
      const { proxy, env } = await proxyFor(target.pid, target.start);
      t.after(() => proxy.close());
      const child = spawn(python, ['-c', readTwice], { env });
      t.after(() => child.kill('SIGKILL'));
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (data: string) => (stdout += data));
      child.stderr.setEncoding('utf8').on('data', (data: string) => (stderr += data));
      const status = new Promise<number | null>((resolve) => child.on('close', resolve));
      await until('the first read', () => (stdout.includes('\n') ? true : undefined));
      assert.equal(stdout, 'hi\n', stderr);
      assert.deepEqual(asked(proxy.ops), []);
      await target.kill();
      child.stdin.end('\n');
      assert.equal(await status, 0, stderr);
      assert.doesNotMatch(stderr, sanitizerReport);
      assert.equal(stdout, 'hi\nmissing\n');
      assert.deepEqual(asked(proxy.ops), [Op.open]);
      assert.match(stderr, new RegExp(`target process ${target.pid} exited; asking the proxy from now on`));
    });

    test(`the target dead before the program starts: the proxy is asked${variant}`, async (t) => {
      const target = await startTarget();
      await target.kill();
      const { proxy, env } = await proxyFor(target.pid, target.start);
      t.after(() => proxy.close());
      const { stdout, stderr } = await runUnderFakeProxy(proxy, 'cat', [file], env);
      assert.doesNotMatch(stderr, sanitizerReport);
      assert.equal(stdout, '');
      assert.deepEqual(asked(proxy.ops), [Op.open]);
      assert.match(stderr, new RegExp(`target process ${target.pid} exited; asking the proxy from now on`));
    });
  }
});
