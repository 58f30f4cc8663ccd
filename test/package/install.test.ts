// The package as users get it: `npm pack`, then `npm install -g` of the tarball into a fresh prefix with no dev
// dependencies; the installed `doppel` runs a real session against the test world.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const { version } = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string };

describe('the installed package', needsRoot('installing and running the package'), () => {
  let work: string;
  let tarball: string;
  let world: World;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'doppel-package-test-'));
    const packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })) as { filename: string }[];
    tarball = join(work, packed[0]!.filename);
    world = await createWorld();
  });
  after(async () => {
    await world?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const install = (prefix: string, env: NodeJS.ProcessEnv = process.env) =>
    spawnSync('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tarball], { encoding: 'utf8', env });

  test('carries the bundles and their runners and the layer sources, not the tests or a built layer', () => {
    const listing = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n');
    for (const file of ['dist/cli/entry.js', 'dist/cli/cli.cjs', 'dist/agent/agent.cjs', 'dist/warm/session-host.cjs', 'dist/vendor/kubernetes-client.cjs']) {
      assert.ok(listing.includes(`package/${file}`), `${file} is missing`);
    }
    assert.ok(listing.includes('package/layer/src/rpc.c'), 'the layer sources are missing');
    assert.equal(listing.some((entry) => entry.startsWith('package/test/') || entry.startsWith('package/layer/build/')), false);
  });

  test('installs globally without dev dependencies and runs doppel exec from there', () => {
    const prefix = join(work, 'global');
    const installed = install(prefix);
    assert.equal(installed.status, 0, installed.stderr);
    const pkg = join(prefix, 'lib', 'node_modules', 'doppel');
    assert.equal(existsSync(join(pkg, 'node_modules', 'typescript')), false, 'a dev dependency was installed');
    assert.ok(existsSync(join(pkg, 'layer', 'build', 'libdoppel.so')), 'the layer was not built on install');

    const doppel = join(prefix, 'bin', 'doppel');
    assert.equal(execFileSync(doppel, ['--version'], { encoding: 'utf8' }).trim(), version);
    const run = spawnSync(doppel, ['exec', '--target', `process/${world.target.pid}`, '-q', '--', 'sh', '-c', 'echo "$DOPPEL_TEST_SECRET"; cat /srv/app/config/settings.json'], { encoding: 'utf8', cwd: work });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout, `${world.target.env.DOPPEL_TEST_SECRET}\n${world.target.files['/srv/app/config/settings.json']}`);
  });

  test('an install on a machine without a C compiler fails with one clear line', () => {
    const installed = install(join(work, 'no-cc'), { ...process.env, CC: 'no-such-compiler' });
    assert.notEqual(installed.status, 0);
    assert.match(installed.stderr, /doppel: no C compiler found \(tried 'no-such-compiler'\); install one \(Debian: apt-get install gcc make\)/);
  });
});
