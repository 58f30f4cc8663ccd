// `doppel verify-config`, `doppel schema` and the errors' JSON form as a user runs them.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { doppelBin } from '../e2e/run-doppel.ts';

const dir = mkdtempSync(join(tmpdir(), 'doppel-commands-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const doppel = (args: string[]) => spawnSync(doppelBin, args, { cwd: dir, encoding: 'utf8' });

test('verify-config prints the resolved configuration and the file used', () => {
  writeFileSync(join(dir, 'good.yaml'), 'target: process/7\nfeature:\n  fs:\n    mode: write\n    not_found: ["^/secret"]\n');
  const result = doppel(['verify-config', 'good.yaml']);
  assert.equal(result.status, 0, result.stderr);
  const out = JSON.parse(result.stdout);
  assert.match(out.source, /good\.yaml$/);
  assert.equal(out.config.target.path, 'process/7');
  assert.equal(out.config.feature.fs.mode, 'write');
  assert.deepEqual(out.config.feature.fs.not_found, ['^/secret']);
});

test('verify-config prints one line per problem and exits 1', () => {
  writeFileSync(join(dir, 'bad.json'), JSON.stringify({ feature: { network: { incoming: { mode: 'stael' } } }, agent: { log_level: 'loud' } }));
  const result = doppel(['verify-config', 'bad.json']);
  assert.equal(result.status, 1);
  assert.match(result.stderr, /feature\.network\.incoming\.mode: expected one of "mirror"\|"steal"\|"off"/);
  assert.match(result.stderr, /agent\.log_level: expected one of/);
});

test('schema prints a JSON Schema with mirrord\'s keys', () => {
  const result = doppel(['schema']);
  assert.equal(result.status, 0);
  const schema = JSON.parse(result.stdout);
  assert.match(schema.$schema, /json-schema\.org/);
  assert.ok(schema.properties.feature.properties.network.properties.incoming);
  assert.ok(schema.properties.agent.properties.startup_timeout);
});

test('--json-errors before or after the command: the error as one JSON object', () => {
  for (const args of [['--json-errors', 'verify-config', 'missing.json'], ['verify-config', '--json-errors', 'missing.json'], ['exec', '--json-errors', '-f', 'missing.json', 'true']]) {
    const result = doppel(args);
    assert.equal(result.status, 1, args.join(' '));
    assert.equal(JSON.parse(result.stderr).error.code, 'E_CONFIG_NOT_FOUND', args.join(' '));
  }
});
