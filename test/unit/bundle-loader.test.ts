// The bundles' loader (src/bundle-loader.ts), run in fresh Node.js processes as bin/doppel runs the CLI: the code
// cache a start makes, what later starts take from it, and what they must not.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const loader = fileURLToPath(new URL('../../src/bundle-loader.ts', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'doppel-bundle-loader-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A bundle as scripts/bundle.ts writes one: a CommonJS module's function. */
function writeBundle(name: string, body: string): string {
  const file = join(dir, name);
  writeFileSync(file, `(function (exports, require, module, __filename, __dirname) {\n${body}\n})`);
  return file;
}

/** Runs `file` through the loader in a new process; what it printed, and the loader's own account of the cache. */
function start(file: string, cacheHome: string, env: Record<string, string> = {}): { stdout: string; debug: string; status: number | null } {
  const result = spawnSync(process.execPath, ['-e', `import(${JSON.stringify(loader)}).then((m) => m.runBundle(${JSON.stringify(file)}))`], {
    encoding: 'utf8',
    env: { ...process.env, ...env, XDG_CACHE_HOME: cacheHome, NODE_DEBUG: 'doppel-code-cache' },
  });
  return { stdout: result.stdout, debug: result.stderr, status: result.status };
}

const cacheFiles = (cacheHome: string) => {
  try {
    return readdirSync(join(cacheHome, 'doppel', 'code-cache'));
  } catch {
    return [];
  }
};

// Functions the first start calls are compiled after its script's top level, so a cache made as the script is
// compiled (Node's compile cache) lacks them; one made after the start has them.
const program = [
  'function greet(name) { return ["hello", name].join(", "); }',
  'const { other } = require("./other.cjs");',
  'if (process.env.CALL) console.log(greet(other()));',
  'process.exitCode = Number(process.env.EXIT ?? 0);',
].join('\n');

test('a start makes the code cache at its clean exit, and the next start runs from it', () => {
  const cacheHome = join(dir, 'cache-1');
  writeBundle('other.cjs', 'module.exports.other = () => "bundle";');
  const file = writeBundle('first.cjs', program);
  const first = start(file, cacheHome, { CALL: '1' });
  assert.equal(first.stdout, 'hello, bundle\n');
  assert.match(first.debug, /first\.cjs: no code cache/);
  assert.match(first.debug, /code cache made/);
  // The bundle it required by relative path went through the loader too.
  assert.match(first.debug, /other\.cjs: no code cache/);
  const second = start(file, cacheHome, { CALL: '1' });
  assert.equal(second.stdout, 'hello, bundle\n');
  assert.match(second.debug, /first\.cjs: run from its code cache/);
  assert.doesNotMatch(second.debug, /code cache made/);
  assert.equal(cacheFiles(cacheHome).length, 2);
});

test('the cache holds what the start that made it ran: bigger when it called more', () => {
  const file = writeBundle('size.cjs', program);
  const size = (cacheHome: string, env: Record<string, string>) => {
    start(file, cacheHome, env);
    const [name] = cacheFiles(cacheHome).filter((n) => n.startsWith('size.cjs-'));
    return statSync(join(cacheHome, 'doppel', 'code-cache', name!)).size;
  };
  assert.ok(size(join(dir, 'cache-called'), { CALL: '1' }) > size(join(dir, 'cache-not-called'), {}));
});

test('a start that fails makes no cache', () => {
  const cacheHome = join(dir, 'cache-failed');
  const file = writeBundle('failing.cjs', program);
  const failed = start(file, cacheHome, { EXIT: '3' });
  assert.equal(failed.status, 3);
  assert.doesNotMatch(failed.debug, /code cache made/);
  assert.deepEqual(cacheFiles(cacheHome), []);
});

test('another build of a bundle, even of the same length, is not run from the cache of the one before, which goes', () => {
  const cacheHome = join(dir, 'cache-rebuilt');
  const file = writeBundle('rebuilt.cjs', 'console.log("build A");');
  assert.equal(start(file, cacheHome).stdout, 'build A\n');
  const [before] = cacheFiles(cacheHome);
  writeBundle('rebuilt.cjs', 'console.log("build B");');
  // A rebuild within the same clock tick must still count as another build.
  utimesSync(file, new Date(), new Date(Date.now() + 5000));
  const rebuilt = start(file, cacheHome);
  assert.equal(rebuilt.stdout, 'build B\n');
  assert.match(rebuilt.debug, /rebuilt\.cjs: no code cache/);
  const after = cacheFiles(cacheHome);
  assert.equal(after.length, 1);
  assert.notEqual(after[0], before);
});

test("a build with the same length, time and inode (npm's fixed times) is told apart by the build's digest", () => {
  const cacheHome = join(dir, 'cache-digest');
  const dist = join(dir, 'dist');
  mkdirSync(join(dist, 'cli'), { recursive: true });
  const file = join(dist, 'cli', 'same.cjs');
  const install = (text: string, digest: string) => {
    writeFileSync(file, `(function (exports, require, module, __filename, __dirname) {\n${text}\n})`);
    utimesSync(file, new Date(499162500000), new Date(499162500000));
    writeFileSync(join(dist, 'bundles.json'), JSON.stringify({ 'cli/same.cjs': digest }));
  };
  install('console.log("build A");', 'a');
  assert.equal(start(file, cacheHome).stdout, 'build A\n');
  const { ino } = statSync(file);
  install('console.log("build B");', 'b');
  assert.equal(statSync(file).ino, ino);
  assert.equal(start(file, cacheHome).stdout, 'build B\n');
});

test('past 40 caches (installations gone, other Node.js versions), the directory starts over', () => {
  const cacheHome = join(dir, 'cache-many');
  const caches = join(cacheHome, 'doppel', 'code-cache');
  mkdirSync(caches, { recursive: true });
  for (let i = 0; i < 40; i++) writeFileSync(join(caches, `gone.cjs-${i}-0`), '');
  const file = writeBundle('current.cjs', 'console.log("current");');
  start(file, cacheHome);
  assert.deepEqual(cacheFiles(cacheHome).map((name) => name.split('-')[0]), ['current.cjs']);
});

test("the built CLI's second start runs from the cache its first made (npm run build:ts first, as for every CLI test)", () => {
  const doppel = fileURLToPath(new URL('../../bin/doppel', import.meta.url));
  const env = { ...process.env, XDG_CACHE_HOME: join(dir, 'cache-cli'), NODE_DEBUG: 'doppel-code-cache' };
  const first = spawnSync(doppel, ['--version'], { encoding: 'utf8', env });
  assert.equal(first.status, 0, first.stderr);
  assert.match(first.stderr, /cli\.cjs: no code cache/);
  assert.match(first.stderr, /code cache made/);
  const second = spawnSync(doppel, ['--version'], { encoding: 'utf8', env });
  assert.equal(second.stdout, first.stdout);
  assert.match(second.stderr, /cli\.cjs: run from its code cache/);
});
