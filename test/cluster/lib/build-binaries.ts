// Builds Kubernetes, etcd and CoreDNS from the Go module proxy into the cache, keyed by versions and build flags.
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
  /** Every binary by name, each in its group's cache directory. */
  paths: Map<string, string>;
  path(name: string): string;
}

interface Group {
  name: string;
  version: string;
  outputs: readonly string[];
  build(out: string, log: string): Promise<void>;
}

const groups: Group[] = [
  { name: 'kubernetes', version: versions.kubernetes, outputs: kubeCommands, build: buildKubernetes },
  { name: 'etcd', version: versions.etcd, outputs: ['etcd'], build: buildDependency('etcd', 'go.etcd.io/etcd/server/v3', versions.etcd) },
  {
    name: 'coredns',
    version: versions.coredns,
    outputs: ['coredns'],
    build: buildDependency('coredns', 'github.com/coredns/coredns', versions.coredns),
  },
];

/**
 * Builds (or finds in the cache) the Kubernetes commands, etcd and CoreDNS. Each group has its own
 * cache directory keyed by its version, the build flags and the Go version, so changing one version
 * rebuilds one group.
 */
export async function buildBinaries(): Promise<Binaries> {
  const go = goVersion();
  const logs = path.join(cacheDir, 'logs');
  mkdirSync(logs, { recursive: true });
  const paths = new Map<string, string>();
  for (const group of groups) {
    const dir = path.join(cacheDir, 'bin', `${group.name}-${group.version}-${cacheKey(group.version, group.outputs, goBuild, go)}`);
    const complete = path.join(dir, '.complete');
    if (existsSync(complete)) {
      say(`${group.name} ${group.version}: cached in ${dir}`);
    } else {
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      await step(`build ${group.name} ${group.version} (${group.outputs.join(', ')})`, () =>
        group.build(dir, path.join(logs, `build-${group.name}.log`)),
      );
      writeFileSync(complete, `${new Date().toISOString()}\n`);
    }
    for (const output of group.outputs) paths.set(output, path.join(dir, output));
  }
  return {
    paths,
    path(name) {
      const found = paths.get(name);
      if (!found) throw new Error(`no binary ${name} is built`);
      return found;
    },
  };
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

/**
 * A main package whose module is built as an ordinary dependency (its replace lines only apply when it
 * is the main module): etcd and CoreDNS. `go get` raises the wrapper's go line to what the module needs.
 */
function buildDependency(binary: string, module: string, version: string): Group['build'] {
  return async (out, log) => {
    const cwd = wrapperModule(`${binary}-${version}`, `module doppel.test/${binary}-build\ngo 1.24\nrequire ${module} ${version}\n`);
    await run('go', ['get', `${module}@${version}`], { log, env: goEnv, cwd });
    await run('go', ['build', '-ldflags', '-s -w', '-o', path.join(out, binary), module], { log, env: goEnv, cwd });
  };
}
