// The fast rules the layer applies itself: each converted pattern matches what its regex matches, and every path the
// rules call local is one the fs policy calls local, for the defaults, user lists, mappings and every mode.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { convertPattern, type FastRule } from '../../src/config/fs-fast-rules.ts';
import { createFsPolicy } from '../../src/config/fs-policy.ts';
import type { ResolvedConfig } from '../../src/config/schema.ts';

/** What layer/src/rules.c does, as the oracle for these tests: only absolute, ASCII, normalized paths; ASCII case
 * folded; the first rule that matches decides. */
function layerVerdict(rules: FastRule[], path: string): FastRule['verdict'] {
  // eslint-disable-next-line no-control-regex
  if (!path.startsWith('/') || /[^\x00-\x7f]/.test(path) || /\/(\/|\.\.?(\/|$))/.test(path)) return 'ask';
  const low = path.replace(/[A-Z]/g, (c) => c.toLowerCase());
  const hit = (rule: FastRule) =>
    rule.match === 'exact' ? low === rule.text : rule.match === 'prefix' ? low.startsWith(rule.text) : rule.match === 'suffix' ? low.endsWith(rule.text) : low.includes(rule.text);
  return rules.find(hit)?.verdict ?? 'ask';
}

const layerCallsLocal = (rules: FastRule[], path: string) => layerVerdict(rules, path) === 'local';
/** The layer opens the file for reading in the target's root itself. */
const layerReadsRemote = (rules: FastRule[], path: string) => layerVerdict(rules, path) === 'remote';

const flipCase = (text: string, seed: number) => [...text].map((c, i) => ((seed >> i % 8) & 1 ? c.toUpperCase() : c)).join('');

/** Paths around every rule's text and a set of interesting ones, in several letter cases. */
function corpus(rules: FastRule[], extra: string[]): string[] {
  const around = rules.flatMap(({ text }) => [text, `${text}/x`, `${text}x`, `/a${text}`, `/a${text}/b.py`, `${text.replace(/\/$/, '')}`, `/a/b${text}.js`]);
  const all = [...extra, ...around].filter((path) => path.startsWith('/'));
  return [...new Set(all.flatMap((path) => [path, path.toUpperCase(), flipCase(path, 0x55), flipCase(path, 0xa3)]))];
}

const interesting = [
  '/', '/etc', '/etc/', '/etc/hosts', '/etc/hosts.bak', '/etc/hostsx', '/etc/resolv.conf', '/etc/hostname', '/etc/ssl/certs', '/etc/ssl/certs/ca.pem',
  '/etc/ssl/certsx', '/etc/app', '/etc/app/a.conf', '/etc/application', '/etc/passwd', '/usr/lib/x.so', '/usr/lib/x.so.6', '/lib/x.so.6', '/srv/lib/x.so.6',
  '/srv/app/x.js', '/srv/app/config.json', '/srv/secret/key.py', '/srv/secretive', '/srv/cache/a', '/data/a', '/data/x/node_modules/y', '/data/node_modules',
  '/home/dev/.kube/config', '/home/dev/.kube', '/home/dev/.bashrc', '/home/dev/.config/gcloud/x.py', '/work/project', '/work/project/src/a.ts', '/work',
  '/work/other', '/tmp/x', '/var/data/a.py', '/var/data/a', '/proc/self/status', '/etc/myapp/conf', '/etc/MyApp/conf.py', '/opt/app/mounted.conf',
  '/usr/local/bin/tool', '/data/tools/bin/tool', '/data/tools', '/data/toolsx', '/opt/app/bin/tool', '/srv/.python-version', '/work/.nvmrc', '/srv/old', '/srv/old/x', '/usr/lib/abc.so', '/usr/share/doc', '/opt/share/x.js', '/srv/12', '/a', '/b/c', '/x.secret', '/srv/cache/remote/x', '/opt/app/local.conf', '/opt/app/other.conf', '/work/project/../../etc/hosts', '/usr//etc/hosts', '/usr/./x', '/usr/lib/caf\u00e9.py', '/srv/app/package.json',
];

const paths = { cwd: '/work/project', home: '/home/dev', tmpdir: '/tmp', executable: '/usr/bin/node', path: '/usr/local/bin:/data/tools/bin:bin:/:/opt/app/bin', previousCwd: '/srv/old', targetMounts: ['/etc/app', '/opt/app'] };
const base: ResolvedConfig['feature']['fs'] = { mode: 'read', read_write: [], read_only: [], local: [], not_found: [], mapping: {}, readonly_file_buffer: 128000 };

function assertSound(fs: ResolvedConfig['feature']['fs']): FastRule[] {
  const policy = createFsPolicy(fs, paths);
  for (const path of corpus(policy.fastRules, interesting)) {
    const verdict = layerVerdict(policy.fastRules, path);
    if (verdict === 'remote') assert.deepEqual(policy.decide(path, { write: false }), { action: 'remote', path }, `the layer would read ${path} from the target`);
    if (verdict !== 'local') continue;
    for (const write of [false, true]) {
      assert.deepEqual(policy.decide(path, { write }), { action: 'local', path }, `the layer would call ${path} local (write: ${write})`);
    }
  }
  return policy.fastRules;
}

test('simple patterns convert to rules that match exactly what the regex matches', () => {
  const patterns = ['^/etc/hosts$', '^/etc/ssl/certs(/|$)', '\\.(sh|py|so)$', '(^|/)node_modules(/|$)', '(^|/)venv\\.cfg$', '^/home/dev/\\.', 'secret', '^/srv/app/.*', '.*\\.pem$', '^/a\\-b\\/c$', '(?:foo|bar)\\.txt$'];
  for (const source of patterns) {
    const rules = convertPattern(source)!.map((rule) => ({ ...rule, verdict: 'local' as const }));
    assert.ok(rules.length > 0, source);
    const regex = new RegExp(source, 'i');
    for (const path of corpus(rules, [...interesting, '/x/foo.txt', '/x/BAR.TXT', '/a-b/c', '/srv/app', '/srv/app/', '/srv/secretive'])) {
      if (!layerCallsLocal([{ match: 'prefix', verdict: 'local', text: '/' }], path)) continue;
      assert.equal(layerCallsLocal(rules, path), regex.test(path), `${source} on ${path}`);
    }
  }
});

test('patterns with other regex syntax do not convert', () => {
  for (const source of ['^/srv/[a-z]+$', '\\.so(\\.\\d+)+$', '^/a|^/b', 'a?b', '^/x/.*/y', '(^|/)\\.yarnrc[^/]*$', '^/(a|(b))$', '\\w', '(^|/)/x']) {
    assert.equal(convertPattern(source), undefined, source);
  }
  // Non-ASCII literals are left out: without the u flag they never match an ASCII path, and non-ASCII paths are asked.
  assert.deepEqual(convertPattern('^/caf\u00e9$'), []);
});

test('defaults: system roots, interpreters\' files, node_modules and the project are local; the target\'s files are not', () => {
  const rules = assertSound(base);
  const local = (path: string) => layerCallsLocal(rules, path);
  for (const path of ['/usr/lib/x.so.6', '/proc/self/status', '/data/x/node_modules/y', '/work/project/src/a.ts', '/etc/passwd', '/home/dev/.bashrc', '/srv/app/x.js', '/USR/LIB',
    '/data/tools/bin/tool', '/srv/.python-version', '/work/.nvmrc']) {
    assert.ok(local(path), path);
  }
  // A PATH directory under the target's mounts is still the target's; relative entries and / are no directories here.
  for (const path of ['/etc/hosts', '/ETC/HOSTS', '/etc/resolv.conf', '/etc/ssl/certs/ca.pem', '/etc/app/a.conf', '/opt/app/x', '/home/dev/.kube/config', '/srv/app/config.json', '/work/project/../x', '/usr//x',
    '/data/tools', '/data/toolsx', '/opt/app/bin/tool', '/srv/bin/x']) {
    assert.ok(!local(path), path);
  }
});

test('user lists and mappings: simple ones become exceptions, local ones rules; the policy still agrees', () => {
  const user = {
    ...base, not_found: ['^/usr/share/secret'], read_only: ['^/etc/myapp(/|$)', '^/srv/cache/remote'], read_write: ['\\.db$'],
    local: ['^/srv/cache', '^/opt/app/local\\.conf$'], mapping: { '^/usr/lib/mapped/(.*)': '/srv/$1' },
  };
  const rules = assertSound(user);
  const local = (path: string) => layerCallsLocal(rules, path);
  // A user's local list comes before the target's mounts in the policy's order.
  assert.ok(local('/srv/cache/a') && local('/opt/app/local.conf'));
  for (const path of ['/usr/share/secret/x', '/etc/myapp/conf', '/usr/lib/app.db', '/usr/lib/mapped/x.so', '/srv/cache/remote/x', '/opt/app/other.conf']) assert.ok(!local(path), path);
});

test('a user pattern that does not convert: widened to its anchored prefix, or no rules at all rather than one it might contradict', () => {
  const widened = assertSound({ ...base, not_found: ['^/usr/lib/[a-z]+\\.so$'], mapping: { '^/(usr|opt)/share/(.*)$': '/srv/$2' } });
  for (const path of ['/usr/lib/abc.so', '/usr/lib/x/y', '/usr/share/doc', '/opt/share/x.js']) assert.ok(!layerCallsLocal(widened, path), path);
  assert.ok(layerCallsLocal(widened, '/usr/bin/env') && layerCallsLocal(widened, '/work/project/a.ts'));
  assert.ok(!layerCallsLocal(assertSound({ ...base, mode: 'localwithoverrides', read_only: ['^/srv/\\d+'] }), '/srv/12'));
  for (const fs of [{ ...base, not_found: ['[a-z]+\\.secret$'] }, { ...base, read_only: ['^/a|^/b'] }, { ...base, mapping: { '(usr|lib)/(.+)$': '/srv/$2' } }]) {
    assert.deepEqual(assertSound(fs), []);
  }
  // An unanchored one is widened to the literal every match contains.
  const contained = assertSound({ ...base, not_found: ['\\.secret\\d$'] });
  assert.ok(contained.length > 0 && !layerCallsLocal(contained, '/usr/a.secret1') && !layerReadsRemote(contained, '/srv/a.secret1'));
  // A local pattern that does not convert is only not sent.
  const rules = assertSound({ ...base, local: ['^/srv/[a-z]+$'] });
  assert.ok(rules.length > 0 && !layerCallsLocal(rules, '/srv/abc'));
});

test('modes: local makes everything local but mapped paths; localwithoverrides all but the user lists; write keeps the defaults', () => {
  const all = assertSound({ ...base, mode: 'local', mapping: { '^/data/(.*)': '/srv/$1' } });
  assert.ok(layerCallsLocal(all, '/srv/app/config.json') && layerCallsLocal(all, '/etc/hosts'));
  assert.ok(!layerCallsLocal(all, '/data/a'));
  const overrides = assertSound({ ...base, mode: 'localwithoverrides', read_only: ['^/srv/app'] });
  assert.ok(layerCallsLocal(overrides, '/srv/other') && layerCallsLocal(overrides, '/etc/hosts'));
  assert.ok(!layerCallsLocal(overrides, '/srv/app/x'));
  const write = assertSound({ ...base, mode: 'write' });
  assert.ok(layerCallsLocal(write, '/usr/lib/x.so') && !layerCallsLocal(write, '/srv/app/x'));
});

test('reads the policy sends to the target at the same path: the layer opens them itself; mapped, not-found and maybe-local paths are asked', () => {
  const rules = assertSound({ ...base, not_found: ['^/srv/gone'], read_only: ['^/etc/myapp(/|$)'], mapping: { '^/data/old/(.*)': '/srv/$1' } });
  for (const path of ['/srv/app/config.json', '/etc/hosts', '/ETC/resolv.conf', '/etc/ssl/certs/ca.pem', '/etc/app/a.conf', '/opt/app/x', '/etc/myapp/conf', '/data/a', '/srv/12']) {
    assert.ok(layerReadsRemote(rules, path), path);
  }
  // A default local pattern that does not convert (`\\.so(\\.\\d+)+$`) has its paths asked, not read remotely.
  for (const path of ['/srv/gone/x', '/data/old/x', '/srv/lib/x.so.6', '/srv/.yarnrc.yml', '/home/dev/.kube/config', '/work/project/../x']) assert.ok(!layerReadsRemote(rules, path), path);
  // A local pattern that cannot even be widened: nothing is read remotely without asking.
  const unsure = assertSound({ ...base, local: ['[a-z]+\\.local$'] });
  assert.ok(unsure.length > 0 && unsure.every((rule) => rule.verdict !== 'remote'));
  assert.ok(layerCallsLocal(unsure, '/usr/lib/x.so'));
  // The local modes read nothing remotely but the user's lists.
  assert.ok(!assertSound({ ...base, mode: 'local' }).some((rule) => rule.verdict === 'remote'));
  const overrides = assertSound({ ...base, mode: 'localwithoverrides', read_only: ['^/srv/app'] });
  assert.ok(layerReadsRemote(overrides, '/srv/app/x') && layerCallsLocal(overrides, '/srv/other'));
});
