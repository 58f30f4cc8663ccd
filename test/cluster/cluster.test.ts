// Brings the real cluster up with test/cluster/up, proves it with real workloads through kubectl and
// @kubernetes/client-node, takes it down, and checks that nothing it started is left on the host.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { KubeConfig, PortForward } from '@kubernetes/client-node';
import { needsRoot } from '../support/root.ts';
import { hostSnapshot } from './host-snapshot.ts';
import { clusterRules } from './lib/host-network.ts';
import { clusterCgroups, clusterMounts, clusterNetns, clusterNfacct, clusterProcesses } from './lib/leftovers.ts';
import { loadImage } from './lib/images.ts';
import { killAll } from '../support/process-alive.ts';
import { binDir, images, ports, stateDir } from './lib/settings.ts';
import { manifests, namespace } from './workloads.ts';

const here = import.meta.dirname;
const gate = needsRoot('the Kubernetes cluster suite');

function script(name: 'up' | 'down', env: NodeJS.ProcessEnv = process.env): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(path.join(here, name), [], { encoding: 'utf8', timeout: 75 * 60_000, env });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

let kubeconfig = '';

function kubectl(args: string[], input?: string): string {
  const result = spawnSync(path.join(binDir, 'kubectl'), [`--kubeconfig=${kubeconfig}`, ...args], {
    encoding: 'utf8',
    input,
    timeout: 240_000,
  });
  assert.equal(result.status, 0, `kubectl ${args.join(' ')}: ${result.stderr}${result.error?.message ?? ''}`);
  return result.stdout;
}

function httpGet(port: number, urlPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: urlPath, timeout: 15_000 }, (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (body += chunk));
        response.on('end', () => resolve(body));
      })
      .on('error', reject)
      .on('timeout', function (this: http.ClientRequest) {
        this.destroy(new Error(`GET ${urlPath} timed out`));
      });
  });
}

function podNames(label: string): string[] {
  return kubectl(['get', 'pods', '-n', namespace, '-l', label, '-o', 'jsonpath={.items[*].metadata.name}']).split(' ').filter(Boolean);
}

function jsonpath(kind: string, name: string, expression: string): string {
  return kubectl(['get', kind, name, '-n', namespace, '-o', `jsonpath=${expression}`]).trim();
}

describe('test cluster', gate, () => {
  let hostBefore: ReturnType<typeof hostSnapshot> | undefined;
  let upLog = '';

  before(() => {
    // The suite owns the cluster: it starts from none, so that it can compare the host before and after.
    assert.equal(script('down').status, 0, 'down before the suite failed');
    hostBefore = hostSnapshot();
    const result = script('up');
    upLog = result.stderr;
    assert.equal(result.status, 0, `test/cluster/up failed:\n${result.stderr.slice(-6000)}`);
    const last = result.stdout.trimEnd().split('\n').pop() ?? '';
    const match = /^export KUBECONFIG=(\/\S+)$/.exec(last);
    assert.ok(match, `up's last line is not "export KUBECONFIG=<path>": ${last}`);
    kubeconfig = match[1]!;
    kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: manifests }));
  });

  after(() => {
    // Safety net when up or a test below fails before `down` ran; down is idempotent.
    script('down');
  });

  test('up prints progress with elapsed time', () => {
    assert.match(upLog, /^\[\s*\d+\.\d+s\] kube-apiserver done \(\d+\.\ds\)$/m);
    assert.match(upLog, /^\[\s*\d+\.\d+s\] node doppel-node Ready done/m);
  });

  test('up on a running cluster leaves it be', () => {
    const again = script('up');
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stderr, /cluster already up/);
    assert.equal(again.stdout.trim(), `export KUBECONFIG=${kubeconfig}`);
  });

  test('a Deployment with 2 replicas becomes Ready', () => {
    kubectl(['rollout', 'status', 'deployment/api', '-n', namespace, '--timeout=180s']);
    assert.equal(jsonpath('deployment', 'api', '{.status.readyReplicas}'), '2');
  });

  test('a Job completes', () => {
    kubectl(['wait', '--for=condition=complete', 'job/once', '-n', namespace, '--timeout=180s']);
    assert.equal(kubectl(['logs', 'job/once', '-n', namespace]), 'hello from the doppel test app image\n');
  });

  test('a StatefulSet pod starts', () => {
    kubectl(['wait', '--for=condition=Ready', 'pod/db-0', '-n', namespace, '--timeout=180s']);
    assert.equal(jsonpath('pod', 'db-0', '{.metadata.labels.app}'), 'db');
  });

  test('a Service selects the Deployment pods and answers on its cluster address', () => {
    const podIPs = podNames('app=api').map((pod) => jsonpath('pod', pod, '{.status.podIP}')).sort();
    assert.equal(podIPs.length, 2);
    const slices = JSON.parse(kubectl(['get', 'endpointslices', '-n', namespace, '-l', 'kubernetes.io/service-name=api', '-o', 'json'])) as {
      items: { endpoints?: { addresses: string[] }[] }[];
    };
    const endpointIPs = slices.items.flatMap((slice) => (slice.endpoints ?? []).flatMap((e) => e.addresses)).sort();
    assert.deepEqual(endpointIPs, podIPs);
    // Through kube-proxy's rules, from another pod.
    const clusterIP = jsonpath('service', 'api', '{.spec.clusterIP}');
    const body = kubectl(['exec', 'db-0', '-n', namespace, '--', 'wget', '-q', '-O', '-', `http://${clusterIP}/cgi-bin/file`]);
    assert.equal(body, 'hello from the doppel test app image\n');
  });

  test('cluster DNS answers service names from pods, by full name and through the search path', () => {
    const clusterIP = jsonpath('service', 'api', '{.spec.clusterIP}');
    const resolved = kubectl(['exec', 'db-0', '-n', namespace, '--', 'nslookup', `api.${namespace}.svc.cluster.local`]);
    assert.match(resolved, new RegExp(`Address: ${clusterIP.replace(/\./g, '\\.')}$`, 'm'));
    // The pod's resolv.conf (from kubelet) makes the short name work for any program.
    assert.match(kubectl(['exec', 'db-0', '-n', namespace, '--', 'cat', '/etc/resolv.conf']), /^search doppel-cluster-test\.svc\.cluster\.local /m);
    assert.equal(kubectl(['exec', 'db-0', '-n', namespace, '--', 'wget', '-q', '-O', '-', 'http://api/cgi-bin/file']), 'hello from the doppel test app image\n');
    // Nothing is forwarded off the machine: an outside name does not resolve.
    const outside = spawnSync(path.join(binDir, 'kubectl'), [`--kubeconfig=${kubeconfig}`, 'exec', 'db-0', '-n', namespace, '--', 'nslookup', 'example.com.'], { encoding: 'utf8' });
    assert.notEqual(outside.status, 0, outside.stdout);
  });

  test('kubectl exec runs in the container and kubectl logs shows its output', () => {
    const [pod] = podNames('app=api');
    assert.equal(kubectl(['exec', pod!, '-n', namespace, '--', 'cat', '/app/message.txt']), 'hello from the doppel test app image\n');
    assert.equal(kubectl(['exec', pod!, '-n', namespace, '--', 'sh', '-c', 'echo $DOPPEL_TEST_ENV']), 'from-the-deployment\n');
    // busybox httpd -v logs each response; the readiness probe asks for some.
    assert.match(kubectl(['logs', pod!, '-n', namespace]), /: response:200$/m);
  });

  test('kubectl port-forward to a pod answers', async () => {
    const [pod] = podNames('app=api');
    const forward = spawn(path.join(binDir, 'kubectl'), [`--kubeconfig=${kubeconfig}`, 'port-forward', '-n', namespace, `pod/${pod}`, ':8080'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        let seen = '';
        forward.stdout.setEncoding('utf8').on('data', (chunk: string) => {
          seen += chunk;
          const match = /Forwarding from 127\.0\.0\.1:(\d+)/.exec(seen);
          if (match) resolve(Number(match[1]));
        });
        forward.on('exit', (code) => reject(new Error(`kubectl port-forward exited with ${code}: ${seen}`)));
      });
      const env = await httpGet(port, '/cgi-bin/env');
      assert.match(env, /^DOPPEL_TEST_ENV=from-the-deployment$/m);
      assert.match(env, /^APP_GREETING=hello-from-image$/m);
      assert.equal(await httpGet(port, '/cgi-bin/file'), 'hello from the doppel test app image\n');
    } finally {
      forward.kill();
    }
  });

  test('port-forward through @kubernetes/client-node answers', async () => {
    const [pod] = podNames('app=api');
    const config = new KubeConfig();
    config.loadFromFile(kubeconfig);
    const forwarder = new PortForward(config);
    const server = net.createServer((socket) => {
      forwarder.portForward(namespace, pod!, [8080], socket, null, socket).catch((error: unknown) => socket.destroy(error as Error));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as net.AddressInfo;
      // A static file: the library keeps its WebSocket open when the pod closes the connection, so
      // only a response with a Content-Length ends.
      assert.equal(await httpGet(port, '/message.txt'), 'hello from the doppel test app image\n');
    } finally {
      server.close();
    }
  });

  test('a hostPID pod with NET_ADMIN sees the app process and enters its network namespace', () => {
    kubectl(['wait', '--for=condition=Ready', 'pod/agent-like', '-n', namespace, '--timeout=180s']);
    const target = 'db-0';
    const targetIP = jsonpath('pod', target, '{.status.podIP}');
    const agent = (script: string): string => kubectl(['exec', 'agent-like', '-n', namespace, '--', 'sh', '-c', script]);
    // The app's httpd, found among the node's processes by the hostname in its environment.
    const pid = agent(
      `for p in /proc/[0-9]*; do tr '\\0' '\\n' 2>/dev/null <$p/environ | grep -qx HOSTNAME=${target} && grep -q httpd $p/cmdline && echo \${p#/proc/}; done; true`,
    ).trim();
    assert.match(pid, /^\d+$/, 'the agent-like pod does not see the app process');
    const inside = agent(`nsenter -t ${pid} -n ip -4 -o addr show eth0`);
    assert.match(inside, new RegExp(`inet ${targetIP.replace(/\./g, '\\.')}/`));
    // NET_ADMIN in the app's namespace: a link made there is seen there, then removed.
    assert.match(agent(`nsenter -t ${pid} -n sh -c 'ip link add dpt0 type bridge && ip -o link show dpt0 && ip link del dpt0'`), /dpt0/);
  });

  test('the test-app image is imported under its contract name', () => {
    const nodeImages = kubectl(['get', 'node', '-o', 'jsonpath={.items[0].status.images[*].names}']);
    assert.match(nodeImages, new RegExp(images.testApp.replace(/[./]/g, '\\$&')));
  });

  test('an image loaded from a root filesystem runs as a pod', async () => {
    const rootfs = mkdtempSync(path.join(tmpdir(), 'doppel-image-'));
    try {
      mkdirSync(path.join(rootfs, 'bin'));
      copyFileSync('/bin/busybox', path.join(rootfs, 'bin/busybox'));
      writeFileSync(path.join(rootfs, 'marker'), 'loaded without a registry\n');
      await loadImage('doppel.test/loaded:1', rootfs, { cmd: ['/bin/busybox', 'cat', '/marker'] });
    } finally {
      rmSync(rootfs, { recursive: true, force: true });
    }
    kubectl(['run', 'loaded', '-n', namespace, '--image=doppel.test/loaded:1', '--image-pull-policy=Never', '--restart=Never']);
    kubectl(['wait', '--for=jsonpath={.status.phase}=Succeeded', 'pod/loaded', '-n', namespace, '--timeout=120s']);
    assert.equal(kubectl(['logs', 'loaded', '-n', namespace]), 'loaded without a registry\n');
  });

  test('up after a crash clears what the crash left and starts a fresh cluster', () => {
    killAll(clusterProcesses().map(({ pid }) => pid));
    const result = script('up');
    assert.equal(result.status, 0, result.stderr.slice(-4000));
    assert.match(result.stderr, /clear what an earlier run left done/);
    assert.equal(kubectl(['get', 'namespace', namespace, '--ignore-not-found', '-o', 'name']), '', 'the old cluster state survived');
    kubectl(['run', 'after-crash', '--image', images.testApp, '--image-pull-policy=Never']);
    kubectl(['wait', '--for=condition=Ready', 'pod/after-crash', '--timeout=120s']);
  });

  test('down removes everything the cluster started', () => {
    const result = script('down');
    assert.equal(result.status, 0, result.stderr);
    assert.deepEqual(clusterProcesses(), [], 'processes left');
    assert.deepEqual(clusterMounts(), [], 'mounts left');
    assert.deepEqual(clusterNetns(), [], 'pod network namespaces left');
    assert.deepEqual(clusterCgroups(), [], 'pod cgroups left');
    assert.deepEqual(clusterRules(), [], 'iptables rules left');
    assert.deepEqual(clusterNfacct(), [], 'packet counters left');
    assert.deepEqual(hostSnapshot(), hostBefore, 'the host differs from before up');
    assert.throws(() => readFileSync(path.join(stateDir, 'admin.kubeconfig')));
    const again = script('down');
    assert.equal(again.status, 0, `a second down fails: ${again.stderr}`);
  });

  test('a component that cannot start fails up with the end of its log, and down cleans up', async () => {
    // A real fault: etcd's client port is taken.
    const squatter = net.createServer();
    await new Promise<void>((resolve) => squatter.listen(ports.etcdClient, '127.0.0.1', resolve));
    try {
      const result = script('up');
      assert.notEqual(result.status, 0);
      assert.match(result.stderr, /etcd FAILED: etcd exited before health/);
      assert.match(result.stderr, /--- last lines of \/\S+\/etcd\.log ---\n[\s\S]*address already in use/);
      assert.match(result.stderr, /test\/cluster\/down removes what it started/);
    } finally {
      squatter.close();
    }
    assert.equal(script('down').status, 0);
    assert.deepEqual(clusterProcesses(), []);
    assert.deepEqual(hostSnapshot(), hostBefore);
  });

  test('a machine without the prerequisites gets one line naming each, and nothing is started', () => {
    // iptables, conntrack and nfacct live in /usr/sbin, out of reach on this PATH.
    const result = script('up', { ...process.env, PATH: '/usr/bin:/bin' });
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /^doppel test cluster: missing prerequisites: .*iptables not found: install iptables; conntrack not found: install conntrack/m);
    assert.equal(existsSync(stateDir), false);
    assert.deepEqual(hostSnapshot(), hostBefore);
  });
});
