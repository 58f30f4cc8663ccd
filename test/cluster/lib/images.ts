// Images without a registry: a root filesystem packed as a Docker-format archive and imported into
// containerd. The pause image is built from Kubernetes' own pause.c, the test app is busybox's httpd, CoreDNS its one binary.
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildAgentImage } from '../../../scripts/agent-image/build-image.ts';
import { cacheDir, containerd, images, logDir, versions } from './settings.ts';
import { run } from './steps.ts';
import { cmd } from './system.ts';

export interface ImageConfig {
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
  workingDir?: string;
}

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** Packs `rootfs` as a one-layer Docker-format image archive named `name`; returns the archive path. */
export function packImage(name: string, rootfs: string, config: ImageConfig): string {
  const work = path.join(cacheDir, 'images', name.replace(/[^\w.-]+/g, '_'));
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const layerFile = path.join(work, 'layer.tar');
  cmd('tar', ['--create', '--file', layerFile, '--directory', rootfs, '--numeric-owner', '--owner=0', '--group=0', '--sort=name', '.']);
  const layerDigest = sha256(readFileSync(layerFile));
  mkdirSync(path.join(work, layerDigest));
  copyFileSync(layerFile, path.join(work, layerDigest, 'layer.tar'));
  rmSync(layerFile);
  const imageConfig = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: {
        Entrypoint: config.entrypoint,
        Cmd: config.cmd,
        Env: config.env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
        WorkingDir: config.workingDir ?? '/',
      },
      rootfs: { type: 'layers', diff_ids: [`sha256:${layerDigest}`] },
    }),
  );
  const configFile = `${sha256(imageConfig)}.json`;
  writeFileSync(path.join(work, configFile), imageConfig);
  writeFileSync(
    path.join(work, 'manifest.json'),
    JSON.stringify([{ Config: configFile, RepoTags: [name], Layers: [`${layerDigest}/layer.tar`] }]),
  );
  const archive = `${work}.tar`;
  cmd('tar', ['--create', '--file', archive, '--directory', work, '.']);
  rmSync(work, { recursive: true, force: true });
  return archive;
}

/** Imports a Docker-format archive into the cluster's containerd, where kubelet finds it by name. */
export async function importImage(archive: string): Promise<void> {
  await run('ctr', ['--address', containerd.socket, '--namespace', containerd.namespace, 'images', 'import', archive], {
    log: path.join(logDir, 'images.log'),
  });
}

function pauseImage(): string {
  const rootfs = path.join(cacheDir, 'rootfs', 'pause');
  rmSync(rootfs, { recursive: true, force: true });
  mkdirSync(rootfs, { recursive: true });
  const source = path.join(cacheDir, 'gomod', `k8s.io/kubernetes@${versions.kubernetes}`, 'build/pause/linux/pause.c');
  const version = images.pause.split(':').pop()!;
  cmd('gcc', ['-Os', '-static', '-Wall', '-Werror', `-DVERSION=v${version}-doppel`, '-o', path.join(rootfs, 'pause'), source]);
  return packImage(images.pause, rootfs, { entrypoint: ['/pause'] });
}

/**
 * The test app: answers `/cgi-bin/env` with its environment, and `/cgi-bin/file` and `/message.txt`
 * with a file from its image.
 */
function testAppImage(): string {
  const rootfs = path.join(cacheDir, 'rootfs', 'app');
  rmSync(rootfs, { recursive: true, force: true });
  for (const dir of ['bin', 'app', 'www/cgi-bin', 'tmp', 'proc', 'sys', 'dev', 'etc']) mkdirSync(path.join(rootfs, dir), { recursive: true });
  copyFileSync('/bin/busybox', path.join(rootfs, 'bin/busybox'));
  chmodSync(path.join(rootfs, 'bin/busybox'), 0o755);
  for (const applet of cmd('/bin/busybox', ['--list']).split('\n').filter(Boolean)) {
    if (applet !== 'busybox') symlinkSync('busybox', path.join(rootfs, 'bin', applet));
  }
  writeFileSync(path.join(rootfs, 'app/message.txt'), 'hello from the doppel test app image\n');
  const cgi = (name: string, body: string): void => {
    const file = path.join(rootfs, 'www/cgi-bin', name);
    writeFileSync(file, `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n${body}\n`);
    chmodSync(file, 0o755);
  };
  cgi('env', 'env | sort');
  cgi('file', 'cat /app/message.txt');
  writeFileSync(path.join(rootfs, 'www/index.html'), 'doppel test app\n');
  // The same file served statically, with a Content-Length, for clients that cannot see the connection close.
  symlinkSync('/app/message.txt', path.join(rootfs, 'www/message.txt'));
  return packImage(images.testApp, rootfs, {
    cmd: ['/bin/httpd', '-f', '-v', '-p', '8080', '-h', '/www'],
    env: ['PATH=/bin', 'APP_GREETING=hello-from-image'],
  });
}

/**
 * Loads an image made from a local root filesystem into the running cluster, for images no registry
 * serves (the doppel agent's). Pods use it by `name` with `imagePullPolicy: Never`.
 */
export async function loadImage(name: string, rootfs: string, config: ImageConfig): Promise<void> {
  await importImage(packImage(name, rootfs, config));
}

/** The doppel agent under its default name: built from dist/ by `npm run build:agent-image`'s builder, or reused when unchanged. */
export async function importAgentImage(): Promise<void> {
  await importImage((await buildAgentImage()).archive);
}

/** CoreDNS is one static Go binary. */
function coreDNSImage(binary: string): string {
  const rootfs = path.join(cacheDir, 'rootfs', 'coredns');
  rmSync(rootfs, { recursive: true, force: true });
  mkdirSync(rootfs, { recursive: true });
  copyFileSync(binary, path.join(rootfs, 'coredns'));
  return packImage(images.coredns, rootfs, { entrypoint: ['/coredns'] });
}

export async function importBaseImages(coreDNSBinary: string): Promise<void> {
  for (const archive of [pauseImage(), testAppImage(), coreDNSImage(coreDNSBinary)]) await importImage(archive);
}
