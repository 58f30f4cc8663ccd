// Builds Kubernetes and etcd from the Go module proxy into the cache, keyed by versions and build flags.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { cacheDir, cacheKey, goBuild, kubeCommands, versions } from './settings.ts';
import { run, say, step } from './steps.ts';

const goEnv = {
  ...goBuild.env,
  GOMODCACHE: path.join(cacheDir, 'gomod'),
  GOCACHE: path.join(cacheDir, 'gocache'),
};

function goVersion(): string {
  return execFileSync('go', ['env', 'GOVERSION'], { encoding: 'utf8', env: { ...process.env, ...goEnv } }).trim();
}

export interface Binaries {
  dir: string;
  path(name: string): string;
}

function binaries(dir: string): Binaries {
  return { dir, path: (name) => path.join(dir, name) };
}

/** Builds (or finds in the cache) kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl and etcd. */
export async function buildBinaries(): Promise<Binaries> {
  const key = cacheKey(versions, goBuild, kubeCommands, goVersion());
  const dir = path.join(cacheDir, 'bin', key);
  const complete = path.join(dir, '.complete');
  if (existsSync(complete)) {
    say(`binaries: cached in ${dir}`);
    return binaries(dir);
  }
  mkdirSync(dir, { recursive: true });
  const logs = path.join(cacheDir, 'logs');
  mkdirSync(logs, { recursive: true });
  await step(`build Kubernetes ${versions.kubernetes} (${kubeCommands.join(', ')})`, () =>
    buildKubernetes(dir, path.join(logs, 'build-kubernetes.log')),
  );
  await step(`build etcd ${versions.etcd}`, () => buildEtcd(dir, path.join(logs, 'build-etcd.log')));
  writeFileSync(complete, `${new Date().toISOString()}\n`);
  return binaries(dir);
}

/** A fresh module directory holding only a go.mod; the wrapper is never tidied. */
function wrapperModule(name: string, goMod: string): string {
  const dir = path.join(cacheDir, 'src', name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'go.mod'), goMod);
  return dir;
}

/**
 * k8s.io/kubernetes replaces its staging modules with local directories, so it cannot be built as a
 * dependency as is: the wrapper points each of them at the published staging release instead.
 */
async function buildKubernetes(out: string, log: string): Promise<void> {
  const module = `k8s.io/kubernetes@${versions.kubernetes}`;
  await run('go', ['mod', 'download', module], { log, env: goEnv, cwd: cacheDir });
  const upstream = readFileSync(
    path.join(goEnv.GOMODCACHE, 'cache/download/k8s.io/kubernetes/@v', `${versions.kubernetes}.mod`),
    'utf8',
  );
  const staging = [...upstream.matchAll(/^\s*(k8s\.io\/[\w.-]+) => \.\/staging\//gm)].map((m) => m[1]!);
  if (staging.length === 0) throw new Error(`no staging replacements found in ${module}'s go.mod`);
  const goLine = /^go .+$/m.exec(upstream)?.[0] ?? 'go 1.24.0';
  const godebug = /^godebug .+$/m.exec(upstream)?.[0] ?? '';
  const goMod = [
    'module doppel.test/kubernetes-build',
    goLine,
    godebug,
    `require k8s.io/kubernetes ${versions.kubernetes}`,
    ...staging.map((m) => `replace ${m} => ${m} ${versions.kubernetesStaging}`),
    '',
  ].join('\n');
  const cwd = wrapperModule(`kubernetes-${versions.kubernetes}`, goMod);
  const packages = kubeCommands.map((c) => `k8s.io/kubernetes/cmd/${c}`);
  await run('go', ['get', ...packages.map((p) => `${p}@${versions.kubernetes}`)], { log, env: goEnv, cwd });
  const [major, minor] = versions.kubernetes.slice(1).split('.');
  const ldflags = ['-s', '-w'];
  for (const pkg of ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version']) {
    ldflags.push(`-X ${pkg}.gitVersion=${versions.kubernetes}`, `-X ${pkg}.gitMajor=${major}`);
    ldflags.push(`-X ${pkg}.gitMinor=${minor}`, `-X ${pkg}.gitTreeState=clean`);
  }
  // One go build for all commands so the packages they share compile once.
  await run('go', ['build', '-tags', goBuild.tags, '-ldflags', ldflags.join(' '), '-o', `${out}/`, ...packages], {
    log,
    env: goEnv,
    cwd,
  });
}

async function buildEtcd(out: string, log: string): Promise<void> {
  const module = 'go.etcd.io/etcd/server/v3';
  const cwd = wrapperModule(`etcd-${versions.etcd}`, `module doppel.test/etcd-build\ngo 1.24\nrequire ${module} ${versions.etcd}\n`);
  await run('go', ['get', `${module}@${versions.etcd}`], { log, env: goEnv, cwd });
  await run('go', ['build', '-ldflags', '-s -w', '-o', path.join(out, 'etcd'), module], { log, env: goEnv, cwd });
}
