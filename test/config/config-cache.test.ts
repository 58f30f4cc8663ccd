// The disk caches of a start: a configuration validated once (and the fs policy's fast rules derived once) is reused
// for the same inputs, in the same shape, and nothing invalid or different is ever served from it.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';
import { after, test } from 'node:test';
import type { FastRule } from '../../src/config/fs-fast-rules.ts';
import { diskCache } from '../../src/config/disk-cache.ts';
import { createFsPolicy } from '../../src/config/fs-policy.ts';
import { resolveConfig } from '../../src/config/load.ts';
import type { ResolvedConfig } from '../../src/config/schema.ts';

const cache = mkdtempSync(join(tmpdir(), 'doppel-config-cache-'));
const cwd = mkdtempSync(join(tmpdir(), 'doppel-config-cwd-'));
after(() => [cache, cwd].forEach((d) => rmSync(d, { recursive: true, force: true })));
const env = { XDG_CACHE_HOME: cache };
const entries = () => readdirSync(join(cache, 'doppel', 'config'));

test('the same inputs give the same configuration, the second time from the cache', async () => {
  writeFileSync(join(cwd, 'c.json'), JSON.stringify({ feature: { fs: 'local' }, agent: { ttl: 7 } }));
  const first = await resolveConfig({ cwd, env, configFile: 'c.json', flags: { target: 'process/12' } });
  assert.equal(entries().length, 1);
  const second = await resolveConfig({ cwd, env, configFile: 'c.json', flags: { target: 'process/12' } });
  assert.deepEqual(second, first);
  assert.equal(second.config.agent.ttl, 7);
  assert.equal(second.config.feature.fs.mode, 'local');
  assert.equal(second.config.target.path, 'process/12');
  // Another target (a new process, a pod's new name) is the same entry, with its own path.
  const elsewhere = await resolveConfig({ cwd, env, configFile: 'c.json', flags: { target: 'pod/api-7d9f/container/app' } });
  assert.equal(entries().length, 1);
  assert.equal(elsewhere.config.target.path, 'pod/api-7d9f/container/app');
  assert.deepEqual({ ...elsewhere.config, target: first.config.target }, first.config);
  const untargeted = await resolveConfig({ cwd, env, configFile: 'c.json', flags: {} });
  assert.equal(untargeted.config.target.path, undefined);
  // A different flag, variable or file content is another entry, never the first one's answer.
  const other = await resolveConfig({ cwd, env: { ...env, DOPPEL_AGENT_TTL: '3' }, configFile: 'c.json', flags: { target: 'process/12' } });
  assert.equal(other.config.agent.ttl, 3);
  writeFileSync(join(cwd, 'c.json'), JSON.stringify({ feature: { fs: 'read' }, agent: { ttl: 7 } }));
  const changed = await resolveConfig({ cwd, env, configFile: 'c.json', flags: { target: 'process/12' } });
  assert.equal(changed.config.feature.fs.mode, 'read');
  assert.equal(entries().length, 4);
});

test('an invalid configuration is refused every time and never kept', async () => {
  const before = entries().length;
  for (let i = 0; i < 2; i++) {
    await assert.rejects(resolveConfig({ cwd, env, flags: { agentTtl: Number('abc') } }), /agent\.ttl/);
  }
  assert.equal(entries().length, before);
});

test('the fs policy\'s fast rules are derived once per lists, then read back from the cache', () => {
  process.env.XDG_CACHE_HOME = cache;
  const fs: ResolvedConfig['feature']['fs'] = { mode: 'read', read_write: [], read_only: [], local: [], not_found: [], mapping: {}, readonly_file_buffer: 0 };
  const paths = { cwd: '/work/project', home: '/home/dev', tmpdir: '/tmp', executable: '/usr/bin/node' };
  const rules = () => readdirSync(join(cache, 'doppel', 'fast-rules'));
  const first = createFsPolicy(fs, paths).fastRules;
  assert.ok(first.length > 20);
  assert.equal(rules().length, 1);
  assert.deepEqual(createFsPolicy(fs, paths).fastRules, first);
  assert.equal(rules().length, 1);
  // What the entry holds is what the next policy gets: it is read, not derived again.
  const file = join(cache, 'doppel', 'fast-rules', rules()[0]!);
  const entry = JSON.parse(readFileSync(file, 'utf8')) as { key: string; value: FastRule[] };
  writeFileSync(file, JSON.stringify({ ...entry, value: first.slice(0, 3) }));
  assert.deepEqual(createFsPolicy(fs, paths).fastRules, first.slice(0, 3));
  // Other lists are another entry, never that one's rules.
  const other = createFsPolicy({ ...fs, local: ['^/srv/cache'] }, paths).fastRules;
  assert.ok(other.some((rule) => rule.text === '/srv/cache' && rule.verdict === 'local'));
  assert.equal(rules().length, 2);
});

test('a cache holds at most 200 entries: past them it starts over with the latest', () => {
  process.env.XDG_CACHE_HOME = cache;
  const dir = join(cache, 'doppel', 'bounded');
  const modules = [new URL(import.meta.url)];
  for (let i = 0; i < 200; i++) diskCache<number>('bounded', { i }, modules)!.write(i);
  assert.equal(readdirSync(dir).length, 200);
  diskCache<number>('bounded', { i: 200 }, modules)!.write(200);
  assert.equal(readdirSync(dir).length, 1);
  assert.equal(diskCache<number>('bounded', { i: 200 }, modules)!.read(), 200);
  assert.equal(diskCache<number>('bounded', { i: 0 }, modules)!.read(), undefined);
});

test('a relative XDG_CACHE_HOME is ignored: the cache goes under $HOME/.cache, not under the working directory', () => {
  const home = mkdtempSync(join(tmpdir(), 'doppel-cache-home-'));
  const saved = process.env.HOME;
  try {
    process.env.HOME = home;
    diskCache<number>('relative', { n: 1 }, [new URL(import.meta.url)], { XDG_CACHE_HOME: 'not/absolute' })!.write(1);
    assert.equal(readdirSync(join(home, '.cache', 'doppel', 'relative')).length, 1);
    assert.equal(existsSync(join(process.cwd(), 'not')), false);
  } finally {
    process.env.HOME = saved;
    rmSync(home, { recursive: true, force: true });
  }
});
