// The agent image for real: a valid OCI archive whose root runs Node.js 24, nsenter, both iptables backends and the agent; and, with the test cluster up, the same in a pod under the default name.
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { after, before, describe, test } from 'node:test';
import { buildAgentImage, type AgentImage } from '../../scripts/agent-image/build-image.ts';
import { defaultAgentImage } from '../../src/platform/kubernetes/agent-image.ts';
import { binDir, containerd, kubeconfigPath } from '../cluster/lib/settings.ts';
import { needsCluster } from '../kubernetes/support/cluster.ts';
import { needsRoot } from '../support/root.ts';
import { unpackOciArchive, type UnpackedImage } from './oci-unpack.ts';

const packageVersion = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** What must run in the image, wherever it runs: the program and a pattern its output matches. */
const commands: [string[], RegExp][] = [
  [['node', '--version'], /^v24\./],
  [['nsenter', '--version'], /util-linux/],
  [['iptables-legacy', '-V'], /\(legacy\)/],
  [['iptables-nft', '-V'], /\(nf_tables\)/],
  [['ip6tables-legacy', '-V'], /\(legacy\)/],
  [['ip6tables-nft', '-V'], /\(nf_tables\)/],
  [['iptables', '-V'], /\(nf_tables\)/],
  [['conntrack', '--version'], /^conntrack v1\./],
];

/**
 * Rules that need xtables modules (tcp and conntrack matches, REDIRECT target), as the agent's chains have them, added
 * and read back with each backend.
 */
const rules = [
  ['-t', 'nat', '-A', 'OUTPUT', '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'RETURN'],
  ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '--dport', '1', '-j', 'REDIRECT', '--to-ports', '2'],
];
const rulesListed = [/-A OUTPUT -m conntrack --ctstate INVALID -j RETURN/, /-A OUTPUT -p tcp -m tcp --dport 1 -j REDIRECT --to-ports 2/];

/** Every module the agent imports loads before main runs; with no arguments it stops at its usage check. */
function assertAgentUsageError(result: SpawnSyncReturns<string>): void {
  assert.equal(result.status, 2, `agent exited ${result.status}: ${result.stderr}`);
  assert.match(result.stderr, /^agent: error: .*required/m);
  assert.doesNotMatch(result.stderr, /ERR_MODULE_NOT_FOUND|Cannot find/);
}

describe('agent image archive', needsRoot('unpacking the agent image and chrooting into it'), () => {
  let image: AgentImage;
  let dir: string;
  let unpacked: UnpackedImage;
  let env: Record<string, string>;
  const inImage = (args: string[]): SpawnSyncReturns<string> => spawnSync('chroot', [unpacked.rootfs, ...args], { encoding: 'utf8', env });

  before(async () => {
    image = await buildAgentImage();
    dir = mkdtempSync(path.join(tmpdir(), 'doppel-agent-image-'));
    unpacked = unpackOciArchive(image.archive, dir);
    env = Object.fromEntries(unpacked.config.config.Env.map((pair) => pair.split('=', 2) as [string, string]));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    assert.ok(!dir || !existsSync(dir));
  });

  test('is an OCI layout of gzip layers, named for this version, whose entrypoint is the agent', () => {
    assert.equal(image.name, defaultAgentImage());
    assert.ok(image.name.endsWith(`:${packageVersion}`), image.name);
    assert.equal(unpacked.index.annotations?.['io.containerd.image.name'], image.name);
    assert.equal(unpacked.manifest.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    for (const layer of unpacked.manifest.layers) assert.equal(layer.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
    assert.deepEqual([unpacked.config.os, unpacked.config.architecture], ['linux', 'amd64']);
    assert.deepEqual(unpacked.config.config.Entrypoint, ['/usr/local/bin/node', '/app/dist/agent/main.js']);
    assert.deepEqual(unpacked.dockerManifest[0]?.RepoTags, [image.name]);
  });

  test('Node.js 24, nsenter, both iptables backends and conntrack run in it', () => {
    for (const [args, expected] of commands) {
      const result = inImage(args);
      assert.equal(result.status, 0, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stdout + result.stderr, expected, args.join(' '));
    }
  });

  test('the agent loads its code and dependencies and answers missing arguments with its usage error', () => {
    assertAgentUsageError(inImage(['node', '/app/dist/agent/main.js']));
  });

  test('both iptables backends add and list a rule with their modules, in a network namespace that goes with the process', () => {
    const script = [
      ...['iptables-legacy', 'iptables-nft'].flatMap((backend) => rules.map((args) => `chroot "$0" ${backend} ${args.join(' ')}`)),
      'chroot "$0" iptables-legacy-save -t nat',
      'chroot "$0" iptables-nft -t nat -S OUTPUT',
    ].join(' && ');
    const result = spawnSync('unshare', ['--net', '--', 'sh', '-c', script, unpacked.rootfs], { encoding: 'utf8', env });
    assert.equal(result.status, 0, result.stderr);
    for (const listed of rulesListed) assert.equal(result.stdout.split('\n').filter((line) => listed.test(line)).length, 2, result.stdout);
  });

  test('a second build with the same inputs reuses the archive', async () => {
    const again = await buildAgentImage();
    assert.deepEqual(again, { ...image, built: false });
  });
});

const kubectl = path.join(binDir, 'kubectl');
describe('agent image in the test cluster', needsCluster('the agent image in the test cluster'), () => {
  const namespace = `doppel-agent-image-${process.pid}`;
  const kube = (args: string[], input?: string): SpawnSyncReturns<string> =>
    spawnSync(kubectl, [`--kubeconfig=${kubeconfigPath}`, '-n', namespace, ...args], { encoding: 'utf8', input, timeout: 90_000 });
  const ok = (args: string[], input?: string): string => {
    const result = kube(args, input);
    assert.equal(result.status, 0, `kubectl ${args.join(' ')}: ${result.stderr}`);
    return result.stdout;
  };

  after(() => {
    kube(['delete', 'namespace', namespace, '--ignore-not-found', '--wait=true', '--timeout=60s']);
    assert.equal(kube(['get', 'namespace', namespace, '--ignore-not-found', '-o', 'name']).stdout, '', `namespace ${namespace} is still there`);
  });

  test('test/cluster/up loaded the image into containerd under its default name', () => {
    const listed = spawnSync('ctr', ['--address', containerd.socket, '--namespace', containerd.namespace, 'images', 'ls', '-q'], { encoding: 'utf8' });
    assert.equal(listed.status, 0, listed.stderr);
    assert.ok(listed.stdout.split('\n').includes(defaultAgentImage()), `${defaultAgentImage()} not in:\n${listed.stdout}`);
  });

  test('a pod running the default image without pulling runs the same commands and the agent', async () => {
    ok(['create', 'namespace', namespace]);
    // Pods are refused until the namespace's default service account exists.
    for (let i = 0; i < 100 && kube(['get', 'serviceaccount', 'default']).status !== 0; i++) await new Promise((resolve) => setTimeout(resolve, 200));
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'agent-image' },
      spec: {
        terminationGracePeriodSeconds: 0,
        automountServiceAccountToken: false,
        containers: [
          {
            name: 'agent',
            image: defaultAgentImage(),
            imagePullPolicy: 'Never',
            command: ['node', '-e', "process.on('SIGTERM', () => process.exit(0)); setInterval(() => {}, 1 << 30)"],
            securityContext: { capabilities: { add: ['NET_ADMIN'] } },
          },
        ],
      },
    };
    ok(['apply', '-f', '-'], JSON.stringify(pod));
    ok(['wait', '--for=condition=Ready', 'pod/agent-image', '--timeout=60s']);
    for (const [args, expected] of commands) assert.match(ok(['exec', 'agent-image', '--', ...args]), expected, args.join(' '));
    assertAgentUsageError(kube(['exec', 'agent-image', '--', 'node', '/app/dist/agent/main.js']));
    for (const backend of ['iptables-legacy', 'iptables-nft']) {
      for (const args of rules) ok(['exec', 'agent-image', '--', backend, ...args]);
      const listed = ok(['exec', 'agent-image', '--', backend, '-t', 'nat', '-S', 'OUTPUT']);
      for (const rule of rulesListed) assert.match(listed, rule, backend);
    }
  });
});
