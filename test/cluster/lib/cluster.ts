// Brings the test cluster up and takes it down. Both are idempotent: `up` on a healthy cluster
// leaves it be, `up` after a crash first clears what the crash left, and `down` is safe to repeat.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { defaultAgentImage } from '../../../src/platform/kubernetes/agent-image.ts';
import { alive } from '../../support/process-alive.ts';
import { buildBinaries, type Binaries } from './build-binaries.ts';
import { clusterDNSManifests } from './cluster-dns.ts';
import { makeCertificates, pki } from './certs.ts';
import {
  apiserverArgs,
  containerdConfig,
  controllerManagerArgs,
  etcdArgs,
  kubeletArgs,
  kubeProxyArgs,
  schedulerArgs,
  writeCniConfig,
} from './component-configs.ts';
import { pidDir, start, waitReady } from './components.ts';
import { removeClusterRules, restoreSysctls, saveSysctls, setUpNetwork, tearDownNetwork } from './host-network.ts';
import { importAgentImage, importBaseImages } from './images.ts';
import { killClusterProcesses, recordHostBefore, removeCgroups, removeNetns, removeNfacct, removeShimSocketDir, shareNetnsDir, unmountAll, unshareNetnsDir } from './leftovers.ts';
import { binDir, containerd, images, kubeconfigPath, network, nodeName, ports, stateDir } from './settings.ts';
import { missingPrerequisites } from './prerequisites.ts';
import { say, step, StepError } from './steps.ts';
import { cmd, output, tryCmd } from './system.ts';

const componentPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function httpOk(url: string, tls?: https.RequestOptions): Promise<boolean> {
  return new Promise((resolve) => {
    const get = url.startsWith('https:') ? https.get : http.get;
    const request = get(url, { ...tls, timeout: 2000 }, (response) => {
      response.resume();
      resolve(response.statusCode === 200);
    });
    request.on('error', () => resolve(false));
    request.on('timeout', () => request.destroy());
  });
}

const adminTLS = (): https.RequestOptions => ({
  ca: readFileSync(pki('ca.crt')),
  cert: readFileSync(pki('admin.crt')),
  key: readFileSync(pki('admin.key')),
});

/** Components that check no client certificate on /healthz; their serving certificates are self-signed. */
const selfSigned: https.RequestOptions = { rejectUnauthorized: false };

function kubectl(binaries: Binaries, ...args: string[]): string {
  return output(binaries.path('kubectl'), [`--kubeconfig=${kubeconfigPath}`, ...args]).trim();
}

function nodeReady(binaries: Binaries): boolean {
  return kubectl(binaries, 'get', 'node', nodeName, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') === 'True';
}

function componentPids(): number[] {
  if (!existsSync(pidDir)) return [];
  return readdirSync(pidDir).map((file) => Number(readFileSync(path.join(pidDir, file), 'utf8')));
}

/** etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy. */
const componentCount = 7;

async function healthy(binaries: Binaries): Promise<boolean> {
  const pids = componentPids();
  if (pids.length < componentCount || !pids.every(alive) || !existsSync(pki('admin.key'))) return false;
  return (await httpOk(`https://${network.nodeIP}:${ports.apiserver}/readyz`, adminTLS())) && nodeReady(binaries);
}

const loadAgentImage = (): Promise<void> => step(`agent image (${defaultAgentImage()})`, importAgentImage);

export async function up(): Promise<void> {
  const missing = missingPrerequisites();
  if (missing.length > 0) throw new StepError(`missing prerequisites: ${missing.join('; ')}`);
  const binaries = await buildBinaries();
  if (await healthy(binaries)) {
    // The agent's code may have changed since; its image is refreshed (or found unchanged) on every up.
    await loadAgentImage();
    say('cluster already up');
    return;
  }
  // Whatever an earlier run left (a crash, a half-finished up) goes first; the new cluster starts fresh.
  if (existsSync(stateDir)) await step('clear what an earlier run left', down);
  else await down();
  mkdirSync(binDir, { recursive: true });
  for (const [name, file] of binaries.paths) symlinkSync(file, path.join(binDir, name));
  recordHostBefore();
  shareNetnsDir();
  saveSysctls();
  await step('node network', setUpNetwork);
  await step('certificates', makeCertificates);

  const env = { PATH: componentPath };
  const etcd = start('etcd', binaries.path('etcd'), etcdArgs(), env);
  await step('etcd', () => waitReady(etcd, 'health', () => httpOk(`http://127.0.0.1:${ports.etcdClient}/health`)));

  const apiserver = start('kube-apiserver', binaries.path('kube-apiserver'), apiserverArgs(), env);
  await step('kube-apiserver', () =>
    waitReady(apiserver, '/readyz', () => httpOk(`https://${network.nodeIP}:${ports.apiserver}/readyz`, adminTLS())),
  );
  const controllerManager = start('kube-controller-manager', binaries.path('kube-controller-manager'), controllerManagerArgs(), env);
  const scheduler = start('kube-scheduler', binaries.path('kube-scheduler'), schedulerArgs(), env);
  await step('kube-controller-manager and kube-scheduler', async () => {
    await waitReady(controllerManager, '/healthz', () => httpOk('https://127.0.0.1:10257/healthz', selfSigned));
    await waitReady(scheduler, '/healthz', () => httpOk('https://127.0.0.1:10259/healthz', selfSigned));
  });

  writeCniConfig();
  const runtime = start('containerd', '/usr/bin/containerd', ['--config', containerdConfig()], env);
  await step('containerd', () =>
    waitReady(runtime, 'API', () => tryCmd('ctr', ['--address', containerd.socket, 'version'])),
  );
  await step(`images (${Object.values(images).join(', ')})`, () => importBaseImages(binaries.path('coredns')));
  await loadAgentImage();

  const kubelet = start('kubelet', binaries.path('kubelet'), kubeletArgs(), env);
  const proxy = start('kube-proxy', binaries.path('kube-proxy'), kubeProxyArgs(), env);
  await step('kubelet and kube-proxy', async () => {
    await waitReady(kubelet, '/healthz', () => httpOk('http://127.0.0.1:10248/healthz'));
    await waitReady(proxy, '/healthz', () => httpOk('http://127.0.0.1:10256/healthz'));
  });
  await step(`node ${nodeName} Ready`, () => waitReady(kubelet, 'Ready node', () => nodeReady(binaries)));
  await step('cluster DNS (CoreDNS)', () => {
    cmd(binaries.path('kubectl'), [`--kubeconfig=${kubeconfigPath}`, 'apply', '-f', '-'], JSON.stringify(clusterDNSManifests));
    return waitReady(kubelet, 'ready CoreDNS', () =>
      kubectl(binaries, 'get', 'deployment', 'coredns', '-n', 'kube-system', '-o', 'jsonpath={.status.readyReplicas}') === '1',
    );
  });
  await step('default service account', () =>
    waitReady(controllerManager, 'default service account', () => kubectl(binaries, 'get', 'serviceaccount', 'default', '-o', 'name') !== ''),
  );
}

/** Removes everything `up` made: processes, mounts, namespaces, cgroups, interfaces, routes, rules, state. */
export async function down(): Promise<void> {
  await killClusterProcesses();
  unmountAll();
  removeNetns();
  unshareNetnsDir();
  removeShimSocketDir();
  removeCgroups();
  tearDownNetwork();
  removeClusterRules();
  removeNfacct();
  restoreSysctls();
  rmSync(stateDir, { recursive: true, force: true });
  rmSync(path.dirname(containerd.state), { recursive: true, force: true });
}
