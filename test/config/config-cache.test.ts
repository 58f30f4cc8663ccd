// The validated-config cache: a configuration validated once is reused for the same inputs, in the same shape, and
// nothing invalid or different is ever served from it.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { resolveConfig } from '../../src/config/load.ts';

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
  // A different flag, variable or file content is another entry, never the first one's answer.
  const other = await resolveConfig({ cwd, env: { ...env, DOPPEL_AGENT_TTL: '3' }, configFile: 'c.json', flags: { target: 'process/12' } });
  assert.equal(other.config.agent.ttl, 3);
  writeFileSync(join(cwd, 'c.json'), JSON.stringify({ feature: { fs: 'read' }, agent: { ttl: 7 } }));
  const changed = await resolveConfig({ cwd, env, configFile: 'c.json', flags: { target: 'process/12' } });
  assert.equal(changed.config.feature.fs.mode, 'read');
  assert.equal(entries().length, 3);
});

test('an invalid configuration is refused every time and never kept', async () => {
  const before = entries().length;
  for (let i = 0; i < 2; i++) {
    await assert.rejects(resolveConfig({ cwd, env, flags: { agentTtl: Number('abc') } }), /agent\.ttl/);
  }
  assert.equal(entries().length, before);
});
