// Configuration: formats, precedence, error messages with key paths, target syntax, and the fs/env/network policies.
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { mergeEnvironment } from '../../src/config/env-policy.ts';
import { createFsPolicy } from '../../src/config/fs-policy.ts';
import { resolveConfig } from '../../src/config/load.ts';
import { createDnsPolicy, createOutgoingPolicy, createUnixStreamPolicy } from '../../src/config/network-policy.ts';
import { BUILD_TOOLS, skippedProcesses } from '../../src/config/skip-processes.ts';
import { parseTarget } from '../../src/config/target.ts';

const made: string[] = [];
after(() => made.forEach((d) => rmSync(d, { recursive: true, force: true })));
const dir = () => {
  const d = mkdtempSync(join(tmpdir(), 'doppel-config-'));
  made.push(d);
  return d;
};
const load = (cwd: string, extra: Partial<Parameters<typeof resolveConfig>[0]> = {}) => resolveConfig({ cwd, env: {}, flags: {}, ...extra });

test('JSON, YAML and TOML of the same settings resolve alike', async () => {
  const cwd = dir();
  writeFileSync(join(cwd, 'a.json'), JSON.stringify({ target: 'process/12', feature: { fs: 'local', network: { dns: false } } }));
  writeFileSync(join(cwd, 'a.yaml'), 'target: process/12\nfeature:\n  fs: local\n  network:\n    dns: false\n');
  writeFileSync(join(cwd, 'a.toml'), 'target = "process/12"\n[feature]\nfs = "local"\n[feature.network]\ndns = false\n');
  const [json, yaml, toml] = await Promise.all(['a.json', 'a.yaml', 'a.toml'].map((f) => load(cwd, { configFile: f })));
  assert.deepEqual(yaml!.config, json!.config);
  assert.deepEqual(toml!.config, json!.config);
  assert.equal(json!.config.feature.fs.mode, 'local');
  assert.equal(json!.config.feature.network.dns.enabled, false);
});

test('defaults follow mirrord', async () => {
  const { config, source } = await load(dir());
  assert.equal(source, undefined);
  assert.equal(config.feature.fs.mode, 'read');
  assert.equal(config.feature.network.incoming.mode, 'mirror');
  assert.equal(config.feature.network.outgoing.tcp, true);
  assert.equal(config.agent.startup_timeout, 60);
  assert.equal(config.agent.ttl, 1);
  assert.equal(config.feature.fs.readonly_file_buffer, 128000);
});

test('precedence: flag > environment variable > file > default', async () => {
  const cwd = dir();
  mkdirSync(join(cwd, '.mirrord'));
  writeFileSync(join(cwd, '.mirrord', 'mirrord.json'), JSON.stringify({ target: { path: 'process/1' }, feature: { fs: { mode: 'write' } }, agent: { startup_timeout: 5 } }));
  const fromFile = await load(cwd);
  assert.match(fromFile.source!, /\.mirrord\/mirrord\.json$/);
  assert.equal(fromFile.config.target.path, 'process/1');
  const fromEnv = await load(cwd, { env: { MIRRORD_IMPERSONATED_TARGET: 'process/2', DOPPEL_FILE_MODE: 'local', DOPPEL_AGENT_STARTUP_TIMEOUT: '9' } });
  assert.deepEqual([fromEnv.config.target.path, fromEnv.config.feature.fs.mode, fromEnv.config.agent.startup_timeout], ['process/2', 'local', 9]);
  const fromFlag = await load(cwd, { env: { DOPPEL_TARGET: 'process/2' }, flags: { target: 'process/3', noRemoteDns: true } });
  assert.equal(fromFlag.config.target.path, 'process/3');
  assert.equal(fromFlag.config.feature.network.dns.enabled, false);
});

test('problems name their exact key path; parse errors their line', async () => {
  const cwd = dir();
  writeFileSync(join(cwd, 'bad.json'), JSON.stringify({ feature: { fs: { mode: 'raed', extra: 1 }, network: { outgoing: { tcp: 'yes' } } }, agent: { ttl: -1 } }));
  await assert.rejects(load(cwd, { configFile: 'bad.json' }), (error: Error & { code?: string }) => {
    assert.equal(error.code, 'E_CONFIG_INVALID');
    assert.match(error.message, /feature\.fs\.mode: expected one of "read"\|"write"\|"local"\|"localwithoverrides"/);
    assert.match(error.message, /feature\.fs\.extra: unknown key/);
    assert.match(error.message, /feature\.network\.outgoing\.tcp: expected boolean/);
    assert.match(error.message, /agent\.ttl: /);
    return true;
  });
  writeFileSync(join(cwd, 'bad.yaml'), 'feature:\n  fs: [\n');
  await assert.rejects(load(cwd, { configFile: 'bad.yaml' }), (error: Error & { code?: string }) => error.code === 'E_CONFIG_PARSE' && /line \d+, column \d+/.test(error.message));
  await assert.rejects(load(cwd, { configFile: 'missing.json' }), (error: Error & { code?: string }) => error.code === 'E_CONFIG_NOT_FOUND');
});

test('target syntax', () => {
  assert.deepEqual(parseTarget('process/42'), { kind: 'process', pid: 42 });
  assert.deepEqual(parseTarget('pod/api/container/app'), { kind: 'pod', name: 'api', container: 'app' });
  assert.deepEqual(parseTarget('deployment/api'), { kind: 'deployment', name: 'api', container: undefined });
  assert.deepEqual(parseTarget('targetless'), { kind: 'targetless' });
  // kubectl's short names and plurals.
  assert.deepEqual(parseTarget('deploy/api/container/app'), { kind: 'deployment', name: 'api', container: 'app' });
  for (const [typed, kind] of [['po', 'pod'], ['sts', 'statefulset'], ['rs', 'replicaset'], ['cj', 'cronjob'], ['ro', 'rollout'], ['svc', 'service'], ['jobs', 'job'], ['deployments', 'deployment']]) {
    assert.deepEqual(parseTarget(`${typed}/x`), { kind, name: 'x', container: undefined });
  }
  assert.throws(() => parseTarget('proc/1'), { code: 'E_TARGET_KIND' });
  assert.throws(() => parseTarget('process/abc'), { code: 'E_TARGET_SYNTAX' });
  assert.throws(() => parseTarget('vm/x'), { code: 'E_TARGET_KIND' });
  assert.throws(() => parseTarget(undefined), { code: 'E_TARGET_MISSING' });
});

test('fs policy: mirrord\'s order, defaults, modes and mapping', async () => {
  const base = (await load(dir())).config.feature.fs;
  const paths = { cwd: '/work/project', home: '/home/dev', tmpdir: '/tmp', executable: '/usr/bin/node' };
  const read = createFsPolicy(base, paths);
  const d = (policy: ReturnType<typeof createFsPolicy>, path: string, write = false) => policy.decide(path, { write }).action;
  assert.equal(d(read, '/srv/app/config.json'), 'remote');
  assert.equal(d(read, '/srv/app/config.json', true), 'local');
  assert.equal(d(read, '/etc/passwd'), 'local');
  assert.equal(d(read, '/etc/resolv.conf'), 'remote');
  assert.equal(d(read, '/usr/lib/x.so.1'), 'local');
  assert.equal(d(read, '/work/project/src/index.ts'), 'local');
  // Above the project: a runtime resolving the script's real path looks at /work, which the target need not have.
  assert.equal(d(read, '/work'), 'local');
  assert.equal(d(read, '/work/other'), 'remote');
  assert.equal(d(read, '/home/dev/.kube/config'), 'not_found');
  assert.equal(d(read, '/data/x/node_modules/y'), 'local');
  assert.equal(d(read, '/srv/app/../../etc/passwd'), 'local');
  const user = createFsPolicy({ ...base, not_found: ['^/srv/secret'], read_only: ['^/etc/myapp'], local: ['^/srv/cache'], read_write: ['^/var/data'] }, paths);
  assert.equal(d(user, '/srv/secret/key'), 'not_found');
  assert.equal(d(user, '/etc/myapp/conf'), 'remote');
  assert.equal(d(user, '/etc/myapp/conf', true), 'local');
  assert.equal(d(user, '/srv/cache/a'), 'local');
  assert.equal(d(user, '/var/data/a', true), 'remote');
  assert.equal(d(createFsPolicy({ ...base, mode: 'local' }, paths), '/srv/app/x'), 'local');
  assert.equal(d(createFsPolicy({ ...base, mode: 'write' }, paths), '/srv/app/x', true), 'remote');
  assert.equal(d(createFsPolicy({ ...base, mode: 'localwithoverrides', read_only: ['^/srv/app'] }, paths), '/srv/app/x'), 'remote');
  assert.equal(d(createFsPolicy({ ...base, mode: 'localwithoverrides' }, paths), '/srv/app/x'), 'local');
  assert.deepEqual(createFsPolicy({ ...base, mapping: { '^/data/(.*)': '/srv/$1' } }, paths).decide('/data/a', { write: false }), { action: 'remote', path: '/srv/a' });
  // Beyond mirrord's defaults: the PATH's directories (commands found there run here), the home directory and the
  // previous working directory themselves, and the version managers' files.
  const dev = createFsPolicy(base, { ...paths, home: '/root', path: '/root/go/bin:/usr/bin:.', previousCwd: '/srv/old/' });
  for (const path of ['/root/go/bin/tool', '/root/go/bin', '/root', '/srv/old', '/srv/app/.python-version', '/.ruby-version', '/work/.node-version', '/work/.nvmrc']) assert.equal(d(dev, path), 'local', path);
  for (const path of ['/root/go', '/root/app/config.json', '/srv/old/config.json', '/srv/app/python-version', '/srv/app/tool']) assert.equal(d(dev, path), 'remote', path);
  assert.equal(d(createFsPolicy(base, { ...paths, previousCwd: '/' }), '/srv/app/x'), 'remote');
});

test('env merge: wildcards, default exclusions, env_file, override, unset', async () => {
  const cwd = dir();
  writeFileSync(join(cwd, '.env'), 'FROM_FILE=1\nDB_URL=file\n');
  const config = (await load(cwd)).config.feature.env;
  const remote = { PATH: '/remote', HOME: '/r', DB_URL: 'remote', DB_USER: 'u', GEM_HOME: 'g', KEEP: 'k', AWS_PROFILE: 'prod' };
  const local = { PATH: '/local', HOME: '/home/dev', AWS_PROFILE: 'dev' };
  assert.deepEqual(mergeEnvironment({ local, remote, config }), { PATH: '/local', HOME: '/home/dev', AWS_PROFILE: 'prod', DB_URL: 'remote', DB_USER: 'u', KEEP: 'k' });
  const custom = { ...config, include: ['DB_*'], exclude: ['DB_USER'], env_file: join(cwd, '.env'), override: { EXTRA: 'x' }, unset: ['AWS_*'] };
  assert.deepEqual(mergeEnvironment({ local, remote, config: custom }), { PATH: '/local', HOME: '/home/dev', DB_URL: 'file', FROM_FILE: '1', EXTRA: 'x' });
  assert.deepEqual(mergeEnvironment({ local, remote, config: { ...config, enabled: false } }), local);
});

test('outgoing and DNS filters', async () => {
  const { outgoing, dns } = (await load(dir())).config.feature.network;
  const all = createOutgoingPolicy(outgoing);
  assert.equal(all.decide({ address: '198.18.1.1', port: 80, protocol: 'tcp' }), 'remote');
  assert.equal(all.decide({ address: '127.0.0.1', port: 80, protocol: 'tcp' }), 'local');
  assert.equal(all.decide({ address: '::ffff:127.0.0.1', port: 80, protocol: 'tcp' }), 'local');
  const remoteOnly = createOutgoingPolicy({ ...outgoing, filter: { remote: ['tcp://198.18.0.0/16:6379', 'api.shop.svc'] } });
  assert.equal(remoteOnly.decide({ address: '198.18.64.12', port: 6379, protocol: 'tcp' }), 'remote');
  assert.equal(remoteOnly.decide({ address: '198.18.64.12', port: 80, protocol: 'tcp' }), 'local');
  assert.equal(remoteOnly.decide({ address: '198.19.0.1', port: 80, protocol: 'tcp', hostnames: ['api.shop.svc'] }), 'remote');
  const localSome = createOutgoingPolicy({ ...outgoing, filter: { local: [':5432'] } });
  assert.equal(localSome.decide({ address: '198.18.1.1', port: 5432, protocol: 'tcp' }), 'local');
  assert.equal(createOutgoingPolicy({ ...outgoing, tcp: false }).decide({ address: '198.18.1.1', port: 1, protocol: 'tcp' }), 'local');
  assert.throws(() => createOutgoingPolicy({ ...outgoing, filter: { remote: ['tcp://1.2.3.4/99'] } }), { code: 'E_CONFIG_INVALID' });
  assert.equal(remoteOnly.filterNames?.resolveAt, 'remote');
  assert.deepEqual(remoteOnly.filterNames?.names, ['api.shop.svc']);
  assert.equal(createOutgoingPolicy({ ...outgoing, filter: { remote: ['api.shop.svc'] } }, { enabled: false }).filterNames?.resolveAt, 'local');
  // The layer makes every connection in the target's network unasked only when no filter, switch or resolver says otherwise.
  assert.deepEqual([all, remoteOnly, localSome, createOutgoingPolicy({ ...outgoing, tcp: false }), createOutgoingPolicy(outgoing, { enabled: false })].map((policy) => policy.everyTcpRemote), [true, false, false, false, false]);
  const byName = createOutgoingPolicy({ ...outgoing, filter: { local: ['db.shop.svc.cluster.local:5432', '*.corp.example'] } });
  assert.deepEqual(byName.filterNames, { names: ['db.shop.svc.cluster.local'], resolveAt: 'local' });
  const db = { address: '198.18.64.13', port: 5432, protocol: 'tcp' as const };
  assert.equal(byName.decide(db), 'remote');
  assert.equal(byName.decide({ ...db, hostnames: ['DB.shop.svc.cluster.local.'] }), 'local');
  assert.equal(byName.decide({ ...db, port: 5433, hostnames: ['db.shop.svc.cluster.local'] }), 'remote');
  assert.equal(byName.decide({ ...db, hostnames: ['git.corp.example'] }), 'local');
  assert.equal(byName.redirectsLocal(db), true);
  assert.equal(byName.redirectsLocal({ ...db, address: '127.0.0.1' }), false);
  assert.equal(all.redirectsLocal(db), false);
  assert.equal(all.filterNames, undefined);
  const unix = createUnixStreamPolicy(['redis\\.sock$', '^@doppel-']);
  assert.deepEqual([unix.any, unix.decide('/srv/run/redis.sock'), unix.decide('@doppel-x'), unix.decide('/run/dbus/system_bus_socket')], [true, 'remote', 'remote', 'local']);
  assert.equal(createUnixStreamPolicy([]).any, false);
  assert.throws(() => createUnixStreamPolicy(['(']), { code: 'E_CONFIG_INVALID' });
  assert.equal(createDnsPolicy(dns).decide('redis.data'), 'remote');
  assert.equal(createDnsPolicy(dns).decide('localhost'), 'local');
  assert.equal(createDnsPolicy({ ...dns, filter: { local: ['*.corp.example'] } }).decide('git.corp.example'), 'local');
  assert.equal(createDnsPolicy({ ...dns, enabled: false }).decide('redis.data'), 'local');
});

test('skip_processes and the build tools mirrord leaves alone', async () => {
  const { config } = await load(dir());
  assert.equal(config.skip_build_tools, true);
  assert.deepEqual(skippedProcesses(config), BUILD_TOOLS);
  assert.ok(BUILD_TOOLS.includes('cc') && BUILD_TOOLS.includes('git') && BUILD_TOOLS.includes('cargo'));
  assert.deepEqual(skippedProcesses({ skip_processes: ['bash', 'cc'], skip_build_tools: false }), ['bash', 'cc']);
  assert.deepEqual(skippedProcesses({ skip_processes: ['bash'], skip_build_tools: true }).slice(0, 2), ['bash', 'as']);
  for (const bad of ['', 'a:b', '/bin/sh']) assert.throws(() => skippedProcesses({ skip_processes: [bad], skip_build_tools: false }), { code: 'E_CONFIG_INVALID' });
});
