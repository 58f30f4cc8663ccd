// The layer's features on a real Kubernetes target, run the way a user runs them: bin/doppel exec --target
// deployment/web from a developer machine (a network namespace) that reaches the cluster's API server and nothing else
// of it, so every DNS answer, datagram and connection that works went through the pod. DNS over UDP to CoreDNS, a
// UDP Service, write mode on the pod's emptyDir and root filesystem, a ConfigMap directory listed (ls, find, Java), the
// pod's hostname, an outgoing filter by host name, --trace; no agent Job or pod and no rule stays behind.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, test } from 'node:test';
import { defaultAgentImage } from '../../src/platform/kubernetes/agent-image.ts';
import { ok, runDoppel } from '../e2e/run-doppel.ts';
import { adminKubeconfig, apply, createNamespace, deployment, httpdContainer, kubectl, needsCluster, rolloutStatus, serviceRouted } from './support/cluster.ts';
import { createDeveloperMachine, type DeveloperMachine } from './support/developer-machine.ts';
import { assertNothingLeft, podStates } from './support/doppel-objects.ts';
import { doppelRules, podProcesses } from './support/pod-network.ts';
import { network } from '../cluster/lib/settings.ts';

const env = { ...process.env, KUBECONFIG: adminKubeconfig };
/** Answers each datagram with itself and the address it came from, as the test world's echo does. */
const udpEcho = "const s = require('dgram').createSocket('udp4'); s.on('message', (m, r) => s.send(Buffer.concat([m, Buffer.from('@' + r.address)]), r.port, r.address)); s.bind(7007)";
const appImageBody = 'hello from the doppel test app image\n';

describe('the layer\'s features on a Kubernetes target, from a machine that reaches only the API server', needsCluster('doppel exec on Kubernetes'), () => {
  let ns: Awaited<ReturnType<typeof createNamespace>>;
  let machine: DeveloperMachine;
  let pod: string;
  let podIP: string;
  let podsBefore: string;
  let configs: string;
  const fqdn = (service: string) => `${service}.${ns.name}.svc.cluster.local`;
  const clusterIP = async (service: string) => (await kubectl(['get', 'service', service, '-n', ns.name, '-o', 'jsonpath={.spec.clusterIP}'])).trim();
  const exec = (command: string[], flags: string[] = []) =>
    runDoppel(['exec', '--target', 'deployment/web', '--target-namespace', ns.name, '-q', ...flags, '--', ...command], { env, wrap: machine.wrap, timeoutMs: 120_000 });
  const inPod = async (script: string) => kubectl(['exec', '-n', ns.name, pod, '-c', 'app', '--', 'sh', '-c', script]);

  before(async () => {
    ns = await createNamespace('features');
    const namespace = ns.name;
    await apply([
      { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'app-config', namespace }, data: { 'a.txt': 'alpha\n', 'b.json': '{"b":1}\n' } },
      deployment(namespace, 'web', 1, [{ ...httpdContainer(), volumeMounts: [{ name: 'data', mountPath: '/data' }, { name: 'config', mountPath: '/etc/app' }] }], {
        volumes: [{ name: 'data', emptyDir: {} }, { name: 'config', configMap: { name: 'app-config' } }],
      }),
      deployment(namespace, 'orders', 1),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'orders', namespace }, spec: { selector: { app: 'orders' }, ports: [{ port: 80, targetPort: 8080 }] } },
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'catalog', namespace }, spec: { selector: { app: 'orders' }, ports: [{ port: 80, targetPort: 8080 }] } },
      // Node's dgram in the agent image: the test app image (busybox) has no UDP server.
      deployment(namespace, 'echo', 1, [{ name: 'echo', image: defaultAgentImage(), imagePullPolicy: 'Never', command: ['/usr/local/bin/node', '-e', udpEcho] }]),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'echo', namespace }, spec: { selector: { app: 'echo' }, ports: [{ port: 7007, protocol: 'UDP' }] } },
    ]);
    for (const name of ['web', 'orders', 'echo']) await rolloutStatus(`deployment/${name}`, namespace);
    await serviceRouted(namespace, 'orders', 'catalog', 'echo');
    [pod, podIP] = (await kubectl(['get', 'pods', '-n', namespace, '-l', 'app=web', '-o', 'jsonpath={.items[0].metadata.name} {.items[0].status.podIP}'])).split(' ') as [string, string];
    podsBefore = await podStates(namespace);
    // The developer's /etc/hosts says where the orders service runs on their machine.
    machine = createDeveloperMachine(`127.0.0.2 ${fqdn('orders')}\n`);
    configs = mkdtempSync(path.join(tmpdir(), 'doppel-k8s-features-'));
  });
  after(async () => {
    machine?.remove();
    if (configs) rmSync(configs, { recursive: true, force: true });
    if (!ns) return;
    const podsAfter = await podStates(ns.name);
    await ns.remove();
    assert.equal(podsAfter, podsBefore, 'a target pod restarted or was replaced');
  });
  afterEach(async () => {
    await assertNothingLeft(ns.name);
    for (const target of await podProcesses(ns.name, 'app=web')) assert.deepEqual(doppelRules(target.pid), [], `a DOPPEL rule stayed in ${target.pod}`);
  });

  test('the machine itself reaches neither the cluster DNS nor the Services', async () => {
    const dig = machine.run(['dig', '+short', '+time=1', '+tries=1', `@${network.clusterDNSIP}`, fqdn('orders')]);
    assert.notEqual(dig.status, 0, dig.stdout);
    assert.match(dig.stdout, /network unreachable/);
    const curl = machine.run(['curl', '-sS', '--max-time', '5', `http://${await clusterIP('orders')}/message.txt`]);
    assert.notEqual(curl.status, 0, curl.stdout);
  });

  test('dig (over UDP and TCP) and node dns.resolve4 get CoreDNS\'s answers for a Service\'s short name and FQDN through the pod\'s resolver', async () => {
    const orders = await clusterIP('orders');
    const out = ok(await exec(['sh', '-c', `dig +short ${fqdn('orders')}; dig +short +search orders; dig +short +search echo; dig +short +tcp ${fqdn('orders')}; cat /etc/resolv.conf`]));
    const [fullName, shortName, echo, overTcp, ...resolvConf] = out.trim().split('\n');
    assert.deepEqual([fullName, shortName, echo, overTcp], [orders, orders, await clusterIP('echo'), orders]);
    assert.ok(resolvConf.includes(`nameserver ${network.clusterDNSIP}`), out);
    const program = `
      const dns = require('dns').promises;
      const settle = (p) => p.then((v) => v, (e) => e.code);
      (async () => console.log(JSON.stringify([await dns.resolve4('${fqdn('orders')}'), await settle(dns.resolve4('orders')), (await dns.lookup('orders')).address, await new dns.Resolver().resolve4('${fqdn('echo')}')])))();`;
    const seen = JSON.parse(ok(await exec(['node', '-e', program]))) as unknown[];
    // c-ares does not search: the short name gets what the same call gets inside the cluster.
    const inCluster = (await kubectl(['exec', '-n', ns.name, 'deploy/echo', '--', '/usr/local/bin/node', '-e', "require('dns').promises.resolve4('orders').then((v) => console.log(JSON.stringify(v)), (e) => console.log(JSON.stringify(e.code)))"])).trim();
    assert.deepEqual(seen, [[orders], JSON.parse(inCluster), orders, [await clusterIP('echo')]]);
  });

  test('python3 and node dgram reach a UDP Service, which sees the datagrams come from the pod', async () => {
    const echoIP = await clusterIP('echo');
    const python = 'import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(20)\ns.sendto(b"py", ("echo", 7007))\ndata, peer = s.recvfrom(100)\nprint(data.decode(), peer[0], peer[1])';
    assert.equal(ok(await exec(['python3', '-c', python])), `py@${podIP} ${echoIP} 7007\n`);
    const node = `
      const s = require('dgram').createSocket('udp4');
      s.on('message', (m, r) => { console.log(m.toString(), r.address, r.port); s.close(); });
      s.send('node', 7007, '${fqdn('echo')}');`;
    assert.equal(ok(await exec(['node', '-e', node])), `node@${podIP} ${echoIP} 7007\n`);
  });

  test('write mode changes the pod\'s emptyDir and root filesystem (mkdir -p and rm -r too); mode read leaves the pod untouched', async () => {
    const shell = [
      'echo x > /data/out', 'echo y >> /data/out', 'mkdir /data/sub', 'mv /data/out /data/sub/moved', 'chmod 600 /data/sub/moved',
      'echo gone > /data/gone', 'rm /data/gone', 'mkdir /data/empty', 'rmdir /data/empty', 'echo root-fs > /app/written.txt',
      'mkdir -p /data/p/q/r', 'echo t > /data/p/q/r/t', 'mkdir -p /data/tree/x', 'echo t > /data/tree/x/t', 'rm -r /data/tree',
    ].join(' && ');
    ok(await exec(['sh', '-c', shell], ['--fs-mode', 'write']));
    const python = 'import os\nwith open("/data/py.txt", "w") as f:\n    f.write("from python\\n")\nos.rename("/data/py.txt", "/data/sub/py.txt")\nos.mkdir("/data/pydir")';
    ok(await exec(['python3', '-c', python], ['--fs-mode', 'write']));
    ok(await exec(['node', '-e', "require('fs').writeFileSync('/data/node.txt', 'from node\\n'); require('fs').appendFileSync('/data/node.txt', 'appended\\n')"], ['--fs-mode', 'write']));
    const tree = "cd /data && find . | sort && stat -c '%a %n' sub/moved && cat sub/moved sub/py.txt node.txt /app/written.txt";
    const expected = ['.', './node.txt', './p', './p/q', './p/q/r', './p/q/r/t', './pydir', './sub', './sub/moved', './sub/py.txt', '600 sub/moved', 'x', 'y', 'from python', 'from node', 'appended', 'root-fs', ''].join('\n');
    assert.equal(await inPod(tree), expected);

    // Mode read (the default): writes stay on this machine, where /data does not exist; the pod keeps what it had.
    assert.ok(!existsSync('/data'), 'this machine has a /data of its own');
    await exec(['sh', '-c', 'echo z > /data/read-mode; mkdir /data/rdir; rm /data/node.txt; mv /data/sub/moved /data/m; echo z > /app/written.txt; true']);
    assert.equal(await inPod(tree), expected);
    assert.ok(!existsSync('/data'), 'mode read made /data on this machine');
  });

  test('ls -la, find and a Java program (Files.list) list the ConfigMap-mounted directory as the pod has it', async () => {
    const result = await exec(['ls', '-la', '/etc/app']);
    assert.equal(result.stderr, '');
    const dataLink = (await inPod('readlink /etc/app/..data')).trim();
    const links = ok(result).split('\n').filter((line) => line.includes(' -> ')).map((line) => line.slice(line.lastIndexOf(' ', line.indexOf(' -> ') - 1) + 1));
    assert.deepEqual(links, [`..data -> ${dataLink}`, 'a.txt -> ..data/a.txt', 'b.json -> ..data/b.json']);
    const find = 'find /etc/app | sort; find /etc/app -type f | sort';
    assert.equal(ok(await exec(['sh', '-c', find])), await inPod(find));

    const classes = mkdtempSync(path.join(tmpdir(), 'doppel-k8s-java-'));
    try {
      execFileSync('javac', ['-d', classes, fileURLToPath(new URL('../e2e/fixtures/RemoteWorld.java', import.meta.url))]);
      const java = await exec(['java', '-cp', classes, 'RemoteWorld', '/etc/app/a.txt', '/etc/app', 'orders', 'http://orders/message.txt']);
      const entries = (await inPod('ls -A /etc/app')).trim().split('\n').sort();
      assert.equal(ok(java), `alpha\n${entries.join(',')}\n${await clusterIP('orders')}\n200 ${appImageBody}\n`);
    } finally {
      rmSync(classes, { recursive: true, force: true });
    }
  });

  test('hostname, uname -n, python3 and node os.hostname() say the pod\'s name', async () => {
    assert.equal((await inPod('hostname')).trim(), pod);
    const out = ok(await exec(['sh', '-c', "hostname; uname -n; python3 -c 'import socket; print(socket.gethostname())'; node -p 'require(\"os\").hostname()'"]));
    assert.equal(out, `${pod}\n`.repeat(4));
  });

  test('a local filter naming a Service sends its connections to this machine\'s server; other Services still go through the pod', async () => {
    const local = machine.spawn(['node', '-e', "require('http').createServer((q, r) => r.end('local orders\\n')).listen(80, '127.0.0.2', () => console.log('listening'))"]);
    await new Promise((resolve, reject) => {
      local.stdout!.once('data', resolve);
      local.once('exit', (code) => reject(new Error(`the local server exited with ${code}`)));
    });
    const curls = (names: string[]) => ['sh', '-c', names.map((name) => `curl -sS --max-time 20 http://${name}/message.txt`).join(' && ')];
    for (const filter of [fqdn('orders'), 'orders']) {
      const config = path.join(configs, `${filter}.json`);
      writeFileSync(config, JSON.stringify({ feature: { network: { outgoing: { filter: { local: [filter] } } } } }));
      const flags = ['-f', config];
      assert.equal(ok(await exec(curls(['orders', fqdn('orders'), 'catalog', fqdn('catalog')]), flags)), `local orders\nlocal orders\n${appImageBody}${appImageBody}`, `filter ${filter}`);
    }
    // Without the filter, the same name is the cluster's Service.
    assert.equal(ok(await exec(curls(['orders']))), appImageBody);
    local.kill();
  });

  test('--trace shows the Kubernetes steps (kubeconfig, target, agent Job, its pod, the port-forward) and each remote call hop by hop', async () => {
    const result = await exec(['cat', '/etc/app/a.txt'], ['--trace']);
    assert.equal(ok(result), 'alpha\n');
    const lines = result.stderr.split('\n').map((line) => /^doppel: trace +(\d+\.\d+) ms {2}(.*)$/.exec(line)).filter((match) => match !== null).map((match) => ({ at: Number(match[1]), what: match[2]! }));
    const steps = [
      /^cli: configuration read/,
      /^kubernetes: kubeconfig loaded \(API server https:\/\//,
      new RegExp(`^kubernetes: deployment/web in ${ns.name} resolved: ready pods ${pod}$`),
      /^kubernetes: agent Job doppel-agent-\S+ created$/,
      /^kubernetes: agent pod doppel-agent-\S+ placed on its node$/,
      /^kubernetes: port-forward to doppel-agent-\S+:\d+ opened in \d+\.\d ms, try \d+$/,
      /^kubernetes: the agent's launcher in doppel-agent-\S+ admitted the session$/,
      /^handshake done/,
      /^program exited/,
      /^session closed/,
    ].map((pattern) => {
      const found = lines.find(({ what }) => pattern.test(what));
      assert.ok(found, `no trace line matching ${pattern} in:\n${result.stderr}`);
      return found;
    });
    for (let i = 1; i < steps.length; i++) assert.ok(steps[i]!.at >= steps[i - 1]!.at, `"${steps[i]!.what}" came before "${steps[i - 1]!.what}"`);
    // The agent in the pod times its answers too: the call's link and agent time are apart.
    assert.ok(lines.some(({ what }) => /^call open "\/etc\/app\/a\.txt" -> remote: proxy [\d.]+ \| fs\.get link [\d.]+ \+ agent [\d.]+ \| proxy [\d.]+ = [\d.]+ ms$/.test(what)), result.stderr);
  });
});
