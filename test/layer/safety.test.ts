// One small C program per hook family against a real agent, with the plain layer and under ASan/UBSan: threads and
// forks inside hooks, a fork while another thread makes remote calls, a signal handler closing descriptors, siglongjmp out of a waiting call, dup2/dup3 onto the
// layer's socket and its root, close_range, a file over 4 MiB, a 254-byte name, a remote directory walked through its descriptor,
// and the first use of libc functions (looked up then) racing in threads, in a signal handler and in a vfork child.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { execIn } from '../e2e/run-doppel.ts';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { sanitizedEnv, sanitizerReport } from './sanitized.ts';

const programs = ['threads-fork', 'fork-mid-open', 'stale-reply', 'descriptors', 'directories', 'first-calls'] as const;

interface Case {
  args: (world: World, scratch: string) => string[];
  expected: (world: World) => string;
  /** Checks beyond stdout. */
  also?: (world: World, scratch: string) => void;
}

const settings = '/srv/app/config/settings.json';
const flags = '/srv/app/config/feature-flags';
const unremembered = (path: string) => path.replace(/\/(?=[^/]*$)/, `/${'./'.repeat(130)}`);
const longName = (world: World) => Object.keys(world.target.files).find((path) => path.startsWith(`${world.target.tree}/long/`))!;

const cases: Record<(typeof programs)[number], Case> = {
  'threads-fork': {
    args: (world) => [settings, world.target.files[settings]!, world.services.http.name, '100'],
    expected: () => 'forks 100, failed children 0, failed calls 0, handler closed some: yes\n',
  },
  'fork-mid-open': {
    // The directory spelled so that the layer asks the proxy for its stand-in, opening no root before the race.
    args: (world) => [settings, world.target.files[settings]!, unremembered(world.target.dir.path), world.services.http.name, '20'],
    expected: () => 'trials 20, failed 0\n',
  },
  'stale-reply': {
    // Spelled past the 256 bytes the layer's stat memory keeps (DP_CACHE_PATH), so every stat is a round trip to jump
    // out of: a remembered answer made the timer's span too short for the stats that did go out, and none completed.
    args: () => [unremembered(settings), unremembered(flags), '2000'],
    expected: () => 'wrong 0, jumped out: yes, completed: yes, remote afterwards: yes\n',
  },
  descriptors: {
    // Spelled so that the layer asks the proxy about it (a plain path of the target's file is opened in the target's
    // root without asking), since the program's descriptors meet the layer's socket.
    args: (world, scratch) => [unremembered(flags), world.target.files[flags]!, world.target.bigFile.path, longName(world), join(scratch, 'big.copy'), flags],
    expected: (world) => [
      'remote read', 'dup, dup2, dup3, F_DUPFD, F_DUPFD_CLOEXEC report the remote file', 'dup2 over a remote descriptor: the new file\'s own stat',
      'the layer\'s socket sits at 900 or above', 'dup2 onto the layer\'s socket: still remote', 'dup3 onto the layer\'s socket: still remote',
      'the program has the number it asked for', 'opens in the target\'s root: one descriptor of it, at 900 or above, for them all',
      'dup2 onto the layer\'s root: the program has the number, the layer reads in the root still', 'close_range over everything: still remote', 'a closed range forgets its remote descriptors',
      'syscall(SYS_close_range): still remote', 'closefrom: still remote', 'a file over 4 MiB arrives whole', 'a remote file with a 254-byte name',
    ].map((line) => `${line}: ok\n`).join('') + `long name: ${world.target.files[longName(world)]}a new thread after clearenv: remote: ok\n`,
    also: (world, scratch) => assert.equal(createHash('sha256').update(readFileSync(join(scratch, 'big.copy'))).digest('hex'), world.target.bigFile.sha256),
  },
  directories: {
    args: (world) => [world.target.tree],
    expected: () => [
      'open dir: remote directory', 'fstatat: 4 bytes', 'statx: 4 bytes', 'faccessat: yes, no', 'readlinkat: a/one.txt', 'openat+read: one',
      'getdents64 a/b: c two.txt', 'dup of a directory: same remote directory', 'fdopendir a: b one.txt', 'fstat(dirfd): remote directory',
      'deep openat: three', 'fchdir+open: two', 'fchdir+stat: 6 bytes', 'scandir a, regular files by a remote stat: one.txt', '',
    ].join('\n'),
  },
  'first-calls': {
    args: (world) => [settings, world.target.files[settings]!, world.services.http.name],
    expected: () => 'first uses in 8 racing threads: 8 right\nfirst use in a signal handler: remote\na vfork child\'s first execve: runs under the layer\n',
  },
};

describe('the layer is safe in threaded, forking, jumping programs and answers descriptors and directories', needsRoot('the layer programs'), () => {
  let world: World;
  let bin: string;
  let sanitized: NodeJS.ProcessEnv;

  before(async () => {
    bin = mkdtempSync(join(tmpdir(), 'doppel-safety-'));
    for (const name of programs) {
      const source = fileURLToPath(new URL(`programs/${name}.c`, import.meta.url));
      execFileSync('gcc', ['-Wall', '-Wextra', '-Werror', '-O2', '-pthread', '-o', join(bin, name), source]);
    }
    sanitized = sanitizedEnv();
    world = await createWorld();
  });
  after(async () => {
    await world?.destroy();
    rmSync(bin, { recursive: true, force: true });
  });

  for (const [variant, env] of [['', () => process.env], [' (ASan/UBSan)', () => sanitized]] as const) {
    for (const name of programs) {
      test(`${name}${variant}`, async () => {
        const scratch = mkdtempSync(join(tmpdir(), 'doppel-safety-run-'));
        try {
          const { args, expected, also } = cases[name];
          // A hang fails: the programs stop themselves, and doppel is killed after this long.
          const result = await execIn(world.target.pid, [join(bin, name), ...args(world, scratch)], { env: env(), timeoutMs: 280_000 });
          assert.doesNotMatch(result.stderr, sanitizerReport);
          assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`);
          assert.equal(result.stdout, expected(world));
          also?.(world, scratch);
        } finally {
          rmSync(scratch, { recursive: true, force: true });
        }
      });
    }
  }
});
