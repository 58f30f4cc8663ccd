// The layer's fast path under bin/doppel against the test world: local paths and loopback connections are decided in
// the layer without reaching the proxy (its debug log says which paths it asked about), with the same answers as
// before, and every path it kept local is one the fs policy calls local, for the defaults and for a user's lists.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, test } from 'node:test';
import { createFsPolicy } from '../../src/config/fs-policy.ts';
import { resolveConfig } from '../../src/config/load.ts';
import { whichSync } from '../../src/cli/exec/static-binary.ts';
import { targetMounts } from '../../src/platform/process/target-mounts.ts';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { leftoversAfter } from './leftovers.ts';
import { execIn, ok, type Finished } from './run-doppel.ts';

const gate = needsRoot('the layer\'s fast path against a process target');
const repo = fileURLToPath(new URL('../../', import.meta.url));

// Stats every path of argv[1], reads every one of argv[2], reports errors by errno name, and connects to argv[3].
const script = `
import errno, json, os, socket, sys
def attempt(fn):
    try:
        return fn()
    except OSError as e:
        return errno.errorcode[e.errno]
stats = {p: attempt(lambda p=p: (lambda s: [s.st_ino, s.st_size, s.st_mode])(os.stat(p))) for p in sys.argv[1].split(',') if p}
reads = {p: attempt(lambda p=p: open(p).read()) for p in sys.argv[2].split(',') if p}
port = int(sys.argv[3])
answer = None
if port:
    with socket.create_connection(('127.0.0.1', port)) as s:
        answer = s.recv(100).decode()
print(json.dumps({'stats': stats, 'reads': reads, 'loopback': answer}))
`;

interface Outcome {
  stats: Record<string, number[] | string>;
  reads: Record<string, string>;
  loopback: string | null;
}

function parse(result: Finished): { out: Outcome; log: string[] } {
  assert.equal(result.status, 0, `doppel exited ${result.status}\nstdout: ${result.stdout}\nstderr: ${result.stderr.slice(-3000)}`);
  return { out: JSON.parse(result.stdout) as Outcome, log: result.stderr.split('\n') };
}

const asked = (log: string[], path: string) => log.some((line) => new RegExp(`: ask op \\d+: ${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`).test(line));
const localByRule = (log: string[]) => log.flatMap((line) => /: local by rule: (.*)$/.exec(line)?.[1] ?? []);
/** How many times the layer opened (stat'ed) the target's file itself, in the target's root, without asking. */
const openedInRoot = (log: string[], path: string) => log.filter((line) => line.endsWith(`: open ${path}: the target's file, in its root`)).length;
const statedInRoot = (log: string[], path: string) => log.filter((line) => line.includes(`: stat of ${path}: in the target's root`)).length;
const checkedInRoot = (log: string[], path: string) => log.filter((line) => line.endsWith(`: access of ${path}: in the target's root`)).length;
const linkReadInRoot = (log: string[], path: string) => log.filter((line) => line.endsWith(`: readlink of ${path}: in the target's root`)).length;
const hostStat = (path: string) => {
  const s = statSync(path);
  return [s.ino, s.size, s.mode];
};

describe('the layer\'s fast path', gate, () => {
  let world: World;
  let server: Server;
  let port = 0;
  const scratch = mkdtempSync(join(tmpdir(), 'doppel-fast-path-'));
  const scriptFile = join(scratch, 'probe.py');
  writeFileSync(scriptFile, script);

  before(async () => {
    world = await createWorld();
    server = createServer((socket) => socket.end('from the developer machine'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server?.close();
    await world?.destroy();
    rmSync(scratch, { recursive: true, force: true });
  });
  afterEach(async () => {
    if (!world) return;
    assert.deepEqual(await leftoversAfter(world.target.pid), { agents: [], dirs: [] });
  });

  /** Runs the probe from `/` (the root is no project, so the project rule does not hide the others). */
  const probe = (stats: string[], reads: string[], connect: boolean, flags: string[] = []) =>
    execIn(world.target.pid, ['python3', scriptFile, stats.join(','), reads.join(','), String(connect ? port : 0)], { cwd: '/', flags, env: { ...process.env, DOPPEL_LAYER_LOG: 'debug' } });

  /** Every path the layer kept local on its own is one the policy, given the same session, calls local. */
  async function assertPolicyAgrees(log: string[], configFile?: string) {
    const { config } = await resolveConfig({ cwd: '/', env: {}, flags: {}, configFile });
    const policy = createFsPolicy(config.feature.fs, { cwd: '/', home: homedir(), tmpdir: tmpdir(), executable: whichSync('python3', process.env.PATH, existsSync), path: process.env.PATH, previousCwd: process.env.OLDPWD, targetMounts: await targetMounts(world.target.pid) });
    const kept = localByRule(log);
    assert.ok(kept.length > 0, 'nothing was decided by the fast rules');
    for (const path of kept) assert.equal(policy.decide(path, { write: false }).action, 'local', `the layer kept ${path} local`);
  }

  test('local stats under /usr, /proc and node_modules and a loopback connection do not reach the proxy; the target\'s files are opened and stat\'ed in its root', async () => {
    // A last "." component is dropped as the policy's normalize drops it (shells stat "$PWD/.").
    const local = ['/usr/bin/env', '/proc/version', join(repo, 'node_modules/yaml/LICENSE'), '/usr/bin/.', '/usr/bin/../bin/env'];
    const remote = ['/etc/resolv.conf', '/etc/hosts', '/opt/app/mounted.conf', '/srv/app/config/settings.json'];
    // Under a remote default (/etc/ssl/certs) with a local suffix (.sh): the earlier rule, the remote one, decides.
    const certScript = '/etc/ssl/certs/doppel-probe.sh';
    const { out, log } = parse(await probe([...local, certScript], remote, true));
    // The rules come from the proxy's file as the process loads, so its first call is decided by them too.
    const loaded = log.findIndex((line) => /fast-path: [1-9]\d* fast rules/.test(line));
    assert.ok(loaded >= 0 && log.findIndex((line) => /: (ask op \d+|local by rule): /.test(line)) > loaded, 'a path was decided before the rules were loaded');
    for (const path of local.slice(0, 4)) {
      assert.deepEqual(out.stats[path], hostStat(path), path);
      assert.ok(localByRule(log).includes(path) && !asked(log, path), `${path} should be decided in the layer`);
    }
    // Not normalized: the layer leaves it to the proxy, which normalizes it and calls it local.
    assert.ok(asked(log, '/usr/bin/../bin/env'));
    assert.deepEqual(out.stats['/usr/bin/../bin/env'], hostStat('/usr/bin/env'));
    assert.equal(out.reads['/etc/resolv.conf'], `nameserver ${world.services.dnsServer}\nsearch ${world.services.namespace}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:2\n`);
    assert.match(out.reads['/etc/hosts']!, new RegExp(world.services.hostsAlias.name.replace(/\./g, '\\.')));
    assert.equal(out.reads['/opt/app/mounted.conf'], world.target.files['/opt/app/mounted.conf']);
    assert.equal(out.reads['/srv/app/config/settings.json'], world.target.files['/srv/app/config/settings.json']);
    for (const path of remote) assert.ok(openedInRoot(log, path) === 1 && !asked(log, path), `${path} should be opened in the target's root`);
    assert.ok(statedInRoot(log, certScript) === 1 && !asked(log, certScript), `${certScript} should be stat'ed in the target's root`);
    assert.equal(out.stats[certScript], 'ENOENT');
    assert.equal(out.loopback, 'from the developer machine');
    assert.ok(log.some((line) => line.endsWith('connect: loopback, local by rule')));
    await assertPolicyAgrees(log);
  });

  test('the target\'s files are opened in its root: links, absolute or climbing above it, resolve there (and are read there); a directory is still asked', async () => {
    // The world's /srv/app/current is an absolute link to /srv/app/config, which this machine has not.
    const root = `/proc/${world.target.pid}/root`;
    const climbing = '/srv/app/climbing';
    symlinkSync('../../../../../../srv/app/config/settings.json', root + climbing);
    try {
      const reads = ['/srv/app/current/settings.json', climbing, '/srv/app/missing', '/srv/app/config'];
      const { out, log } = parse(await probe([], reads, false));
      const settings = world.target.files['/srv/app/config/settings.json'];
      assert.deepEqual(reads.map((path) => out.reads[path]), [settings, settings, 'ENOENT', 'EISDIR']);
      for (const path of reads.slice(0, 2)) assert.ok(openedInRoot(log, path) === 1 && !asked(log, path), path);
      assert.ok(!asked(log, '/srv/app/missing'));
      assert.ok(asked(log, '/srv/app/config'));
      // access(2) too (node's existsSync, test -r), following the links there; what is missing is ENOENT unasked.
      const checks = await execIn(world.target.pid, ['sh', '-c', `test -r /srv/app/current/settings.json && echo readable; test -r ${climbing} && echo there; test -r /srv/app/missing || echo missing`], { cwd: '/', env: { ...process.env, DOPPEL_LAYER_LOG: 'debug' } });
      assert.equal(ok(checks), 'readable\nthere\nmissing\n');
      const checked = checks.stderr.split('\n');
      assert.ok(checkedInRoot(checked, '/srv/app/current/settings.json') === 1 && checkedInRoot(checked, climbing) === 1, checks.stderr);
      assert.ok(!asked(checked, '/srv/app/missing') && !asked(checked, climbing), checks.stderr);
      // readlink(2) reads the target's links there, and says what is no link or missing, unasked.
      const links = ['/srv/app/current', climbing, '/srv/app/current/settings.json', '/srv/app/missing'];
      const script = 'import errno, os, sys\nfor p in sys.argv[1:]:\n    try: print(os.readlink(p))\n    except OSError as e: print(errno.errorcode[e.errno])';
      const read = await execIn(world.target.pid, ['python3', '-c', script, ...links], { cwd: '/', env: { ...process.env, DOPPEL_LAYER_LOG: 'debug' } });
      assert.equal(ok(read), '/srv/app/config\n../../../../../../srv/app/config/settings.json\nEINVAL\nENOENT\n');
      const readLog = read.stderr.split('\n');
      for (const path of links) assert.ok(linkReadInRoot(readLog, path) === (path === '/srv/app/missing' ? 0 : 1) && !asked(readLog, path), `${path}: ${read.stderr}`);
    } finally {
      rmSync(root + climbing, { force: true });
    }
  });

  test('a process that asks nothing never connects to the proxy; one that asks connects once', async () => {
    // Untraced: a traced process tells the proxy of the calls it settles itself.
    const connections = async (command: string[]) => {
      const result = await execIn(world.target.pid, command, { cwd: '/', env: { ...process.env, DOPPEL_LAYER_LOG: 'debug' } });
      assert.equal(result.status, 0, result.stderr);
      return result.stderr.split('\n').filter((line) => line.endsWith(': connected to the proxy')).length;
    };
    assert.equal(await connections(['/usr/bin/stat', '-c', '%i', '/usr/bin/env']), 0);
    // Nor does one that only reads the target's files, which it opens and stats itself.
    assert.equal(await connections(['/bin/cat', '/srv/app/config/settings.json']), 0);
    assert.equal(await connections(['/usr/bin/stat', '-c', '%s', '/srv/app/config/settings.json']), 0);
    // A remote directory is the proxy's to list: one connection for the process.
    assert.equal(await connections(['/bin/ls', '/srv/app/config']), 1);
  });

  test('a user\'s not_found, read_only, local and mapping lists still decide, with the fast path on', async () => {
    const configFile = join(scratch, 'lists.json');
    writeFileSync(configFile, JSON.stringify({
      feature: { fs: {
        not_found: ['^/usr/lib/os-release$'],
        read_only: ['^/usr/share/doppel-ro(/|$)'],
        local: ['^/srv/app/config/feature-flags$'],
        mapping: { '^/usr/lib/doppel-mapped/(.*)$': '/srv/app/config/$1' },
      } },
    }));
    assert.ok(existsSync('/usr/lib/os-release') && !existsSync('/srv/app/config/feature-flags'));
    const { out, log } = parse(await probe(['/usr/lib/os-release', '/usr/share/doppel-ro/x', '/usr/bin/env'], ['/usr/lib/doppel-mapped/settings.json', '/srv/app/config/feature-flags'], false, ['-f', configFile]));
    assert.equal(out.stats['/usr/lib/os-release'], 'ENOENT');
    assert.ok(asked(log, '/usr/lib/os-release') && asked(log, '/usr/lib/doppel-mapped/settings.json'));
    // read_only: read from the target, at that path.
    assert.ok(statedInRoot(log, '/usr/share/doppel-ro/x') === 1 && !asked(log, '/usr/share/doppel-ro/x'));
    assert.equal(out.reads['/usr/lib/doppel-mapped/settings.json'], world.target.files['/srv/app/config/settings.json']);
    assert.equal(out.reads['/srv/app/config/feature-flags'], 'ENOENT');
    assert.ok(localByRule(log).includes('/srv/app/config/feature-flags') && localByRule(log).includes('/usr/bin/env'));
    await assertPolicyAgrees(log, configFile);
  });

  test('relative paths follow chdir, fchdir and syscall(SYS_chdir): the layer\'s copy of the working directory is never stale', async () => {
    const chdirs = join(scratch, 'chdirs.py');
    writeFileSync(chdirs, `
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
out = []
os.chdir('/srv')
out.append(open('app/config/settings.json').read())
os.chdir('/usr/bin')
out.append(os.stat('env').st_ino)
assert libc.syscall({'x86_64': 80, 'aarch64': 49}[os.uname().machine], b'/srv') == 0  # SYS_chdir
out.append(open('app/config/feature-flags').read())
fd = os.open('/usr/bin', os.O_RDONLY)
os.fchdir(fd)
out.append(os.stat('env').st_ino)
print(json.dumps(out))
`);
    const result = await execIn(world.target.pid, ['python3', chdirs], { cwd: '/', env: { ...process.env, DOPPEL_LAYER_LOG: 'debug' } });
    const { log } = parse({ ...result, stdout: '{}' });
    const env = statSync('/usr/bin/env').ino;
    assert.deepEqual(JSON.parse(result.stdout), [world.target.files['/srv/app/config/settings.json'], env, world.target.files['/srv/app/config/feature-flags'], env]);
    assert.ok(openedInRoot(log, '/srv/app/config/settings.json') === 1 && openedInRoot(log, '/srv/app/config/feature-flags') === 1);
    assert.ok(localByRule(log).includes('/usr/bin/env'));
  });

  test('a stat is not made again within the window, asked or made in the target\'s root; the target\'s files are opened there', async () => {
    const repeat = join(scratch, 'repeat.py');
    // Spelled with a "." component, which the rules leave to the proxy: asked, as every stat is where the layer cannot
    // reach the target's root (a Kubernetes target).
    const settings = '/srv/app/./config/settings.json';
    const created = '/srv/app/./new.txt';
    writeFileSync(repeat, `
import json, os, sys, time
def size(p):
    try:
        return os.stat(p).st_size
    except FileNotFoundError:
        return 'ENOENT'
out = [size('${settings}') for _ in range(5)]
for _ in range(5):
    with open('${world.target.benchFile}', 'rb') as f:
        out.append((len(f.read()), size('${world.target.benchFile}')))
# A file the target gets after the layer saw it missing: seen once the 100 ms window has passed.
out.append(size('${created}'))
with open('/proc/${world.target.pid}/root/srv/app/new.txt', 'w') as f:
    f.write('abc')
time.sleep(0.3)
out.append(size('${created}'))
os.unlink('/proc/${world.target.pid}/root/srv/app/new.txt')
print(json.dumps(out))
`);
    const result = await execIn(world.target.pid, ['python3', repeat], { cwd: '/', env: { ...process.env, DOPPEL_LAYER_LOG: 'debug' } });
    const { log } = parse({ ...result, stdout: '{}' });
    const size = Buffer.byteLength(world.target.files['/srv/app/config/settings.json']!);
    assert.deepEqual(JSON.parse(result.stdout), [...Array(5).fill(size), ...Array(5).fill([4096, 4096]), 'ENOENT', 3]);
    const asks = (op: number, path: string) => log.filter((line) => line.endsWith(`: ask op ${op}: ${path}`)).length;
    // Five times, back to back: a thread preempted past the window asks again, so "fewer than five", not "once".
    assert.ok(asks(2, settings) >= 1 && asks(2, settings) < 5, `stat asked ${asks(2, settings)} times`);
    assert.ok(log.some((line) => line.endsWith(`stat of ${settings}: answered from the last stat`)));
    assert.equal(asks(2, created), 2);
    const { benchFile } = world.target;
    assert.deepEqual([asks(1, benchFile), asks(2, benchFile), openedInRoot(log, benchFile)], [0, 0, 5]);
    // Its stats too, kept for the window as the proxy's answers are.
    assert.ok(statedInRoot(log, benchFile) >= 1 && statedInRoot(log, benchFile) < 5, `stat'ed ${statedInRoot(log, benchFile)} times`);
  });

  test('a user pattern the layer cannot apply: no fast rules, every path asked, the same answers', async () => {
    const configFile = join(scratch, 'regex.json');
    writeFileSync(configFile, JSON.stringify({ feature: { fs: { not_found: ['[a-z]+-release$'] } } }));
    const { out, log } = parse(await probe(['/usr/lib/os-release', '/usr/bin/env'], ['/srv/app/config/settings.json'], false, ['-f', configFile]));
    assert.ok(log.some((line) => line.endsWith('fast-path: 0 fast rules')));
    assert.deepEqual(localByRule(log), []);
    assert.equal(out.stats['/usr/lib/os-release'], 'ENOENT');
    assert.deepEqual(out.stats['/usr/bin/env'], hostStat('/usr/bin/env'));
    assert.ok(asked(log, '/usr/bin/env'));
    assert.equal(out.reads['/srv/app/config/settings.json'], world.target.files['/srv/app/config/settings.json']);
  });
});
