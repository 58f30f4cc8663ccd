// The Kubernetes tests' way to the test cluster: a gate that skips without one (fails under CI=true), kubectl, and own namespaces.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { binDir, images, kubeconfigPath } from '../../cluster/lib/settings.ts';

const clusterDir = fileURLToPath(new URL('../../cluster/', import.meta.url));

export const kubectlPath = path.join(binDir, 'kubectl');
export const adminKubeconfig = kubeconfigPath;
export const testImage = images.testApp;

/** Skips the suite with a reason when no test cluster answers; under CI=true, where nothing may skip, fails instead. */
export function needsCluster(what = 'this test'): { skip?: string } {
  let reason = clusterMissing();
  // As root the tests start the cluster themselves (a no-op when it runs); the run's global teardown stops it.
  if (reason !== undefined && process.getuid?.() === 0) reason = startCluster() ?? clusterMissing();
  if (reason === undefined) return {};
  const text = `${what} needs the test cluster (test/cluster/up starts it): ${reason}`;
  if (process.env.CI === 'true') throw new Error(`${text}, and under CI=true nothing may skip`);
  return { skip: text };
}

/** Runs test/cluster/up; says why when it fails. */
function startCluster(): string | undefined {
  const up = spawnSync(path.join(clusterDir, 'up'), [], { encoding: 'utf8', timeout: 75 * 60_000 });
  return up.status === 0 ? undefined : `test/cluster/up failed: ${up.stderr.trim().split('\n').slice(-5).join(' | ')}`;
}

function clusterMissing(): string | undefined {
  if (!existsSync(adminKubeconfig)) return `${adminKubeconfig} does not exist`;
  if (!existsSync(kubectlPath)) return `${kubectlPath} does not exist`;
  const probe = spawnSync(kubectlPath, [`--kubeconfig=${adminKubeconfig}`, 'get', '--raw', '/readyz'], { encoding: 'utf8', timeout: 15_000 });
  if (probe.status !== 0) return `its API server does not answer: ${(probe.stderr || probe.error?.message || '').trim().split('\n')[0]}`;
  return undefined;
}

const run = promisify(execFile);

/** kubectl as the cluster admin; fails the test with kubectl's own words. */
export async function kubectl(args: string[], options: { input?: string; kubeconfig?: string } = {}): Promise<string> {
  const child = run(kubectlPath, [`--kubeconfig=${options.kubeconfig ?? adminKubeconfig}`, ...args], { encoding: 'utf8', timeout: 240_000, maxBuffer: 16 << 20 });
  if (options.input !== undefined) child.child.stdin?.end(options.input);
  try {
    return (await child).stdout;
  } catch (error) {
    const { stderr, message } = error as { stderr?: string; message: string };
    assert.fail(`kubectl ${args.join(' ')}: ${stderr || message}`);
  }
}

export async function apply(objects: object[]): Promise<void> {
  await kubectl(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }) });
}

/** A fresh namespace with a recognisable name; `remove` deletes it and waits until its pods are gone. */
export async function createNamespace(purpose: string): Promise<{ name: string; remove(): Promise<void> }> {
  const name = `doppel-k8s-${purpose}-${randomBytes(3).toString('hex')}`;
  await kubectl(['create', 'namespace', name]);
  return {
    name,
    async remove() {
      await kubectl(['delete', 'namespace', name, '--ignore-not-found', '--wait=true', '--timeout=180s']);
    },
  };
}

export async function poll<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs / 1000}s waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

export async function rolloutStatus(ref: string, namespace: string): Promise<void> {
  await kubectl(['rollout', 'status', ref, '-n', namespace, '--timeout=180s']);
}

/**
 * Waits until kube-proxy on this node sends each named Service's cluster IP to an endpoint. A rollout can end before
 * that: kube-proxy still holds its REJECT rule for a Service without endpoints, and a connection is refused.
 */
export async function serviceRouted(namespace: string, ...names: string[]): Promise<void> {
  const rules = () =>
    ['iptables-legacy-save', 'iptables-nft-save'].flatMap((save) =>
      ['nat', 'filter'].flatMap((table) => spawnSync(save, ['-t', table], { encoding: 'utf8' }).stdout?.split('\n') ?? []),
    );
  for (const name of names) {
    const mentions = (line: string) => line.includes(`"${namespace}/${name} `) || line.includes(`"${namespace}/${name}:`);
    await poll(`kube-proxy routing Service ${namespace}/${name}`, async () => {
      const own = rules().filter(mentions);
      return own.some((line) => line.includes('-j KUBE-SVC-')) && !own.some((line) => line.includes('has no endpoints')) ? true : undefined;
    }, 60_000);
  }
}

const labels = (app: string) => ({ app });

/** The test-app image serving HTTP on 8080, ready once it answers. Quick to stop: busybox httpd as PID 1 ignores SIGTERM. */
export function httpdContainer(name = 'app'): Record<string, unknown> {
  return {
    name,
    image: testImage,
    imagePullPolicy: 'Never',
    ports: [{ containerPort: 8080 }],
    readinessProbe: { httpGet: { path: '/', port: 8080 }, periodSeconds: 1 },
  };
}

export function sleeperContainer(name: string): Record<string, unknown> {
  return { name, image: testImage, imagePullPolicy: 'Never', command: ['sleep', '3600'] };
}

export function podTemplate(app: string, containers: Record<string, unknown>[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { metadata: { labels: labels(app) }, spec: { terminationGracePeriodSeconds: 0, containers, ...extra } };
}

export function deployment(namespace: string, name: string, replicas: number, containers = [httpdContainer()], extra: Record<string, unknown> = {}): object {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace },
    spec: { replicas, selector: { matchLabels: labels(name) }, template: podTemplate(name, containers, extra) },
  };
}
