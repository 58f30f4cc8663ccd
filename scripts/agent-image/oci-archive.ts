// Packs layers into an OCI image layout in one tar (oci-layout, index.json, blobs/sha256/…, gzip layers), with Docker's manifest.json beside it for `docker load`.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { writeEntries, type Entry } from './entries.ts';

export interface ImageSpec {
  /** Full reference, e.g. localhost/doppel-agent:0.1.0. */
  name: string;
  layers: Entry[][];
  entrypoint: string[];
  env: string[];
  workingDir: string;
  labels: Record<string, string>;
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

const media = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
};

/** The same bytes for the same tree: sorted, no owners, no times, no per-file pax times. */
const reproducibleTar = [
  '--create',
  '--sort=name',
  '--numeric-owner',
  '--owner=0',
  '--group=0',
  '--mtime=@0',
  '--format=posix',
  '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
];

function hashing(hash: ReturnType<typeof createHash>): PassThrough {
  return new PassThrough({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
}

/** Tars and gzips one layer; returns its descriptor and its diff id (the digest of the uncompressed tar). */
async function writeLayer(blobs: string, entries: Entry[]): Promise<{ descriptor: Descriptor; diffId: string }> {
  const tree = mkdtempSync(path.join(blobs, '..', 'layer-'));
  try {
    writeEntries(tree, entries);
    const tar = spawn('tar', [...reproducibleTar, '--directory', tree, ...readdirSync(tree).sort()], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    tar.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<void>((resolve, reject) => {
      tar.on('error', reject);
      tar.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`tar exited with ${code}: ${stderr.trim()}`))));
    });
    const uncompressed = createHash('sha256');
    const compressed = createHash('sha256');
    const partial = path.join(blobs, 'layer.partial');
    const file = createWriteStream(partial);
    await Promise.all([pipeline(tar.stdout, hashing(uncompressed), createGzip(), hashing(compressed), file), exited]);
    const digest = compressed.digest('hex');
    renameSync(partial, path.join(blobs, digest));
    return { descriptor: { mediaType: media.layer, digest: `sha256:${digest}`, size: file.bytesWritten }, diffId: `sha256:${uncompressed.digest('hex')}` };
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
}

function writeJsonBlob(blobs: string, mediaType: string, value: unknown): Descriptor {
  const bytes = Buffer.from(JSON.stringify(value));
  const digest = createHash('sha256').update(bytes).digest('hex');
  writeFileSync(path.join(blobs, digest), bytes);
  return { mediaType, digest: `sha256:${digest}`, size: bytes.length };
}

const blobPath = (descriptor: Descriptor): string => `blobs/sha256/${descriptor.digest.slice('sha256:'.length)}`;

/** Writes the image as an OCI layout tar at `archive` (atomically), using `work` as scratch space. */
export async function writeOciArchive(image: ImageSpec, archive: string, work: string): Promise<void> {
  const layout = path.join(work, 'layout');
  const blobs = path.join(layout, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const layers = [];
  for (const entries of image.layers) layers.push(await writeLayer(blobs, entries));
  const config = writeJsonBlob(blobs, media.config, {
    architecture: 'amd64',
    os: 'linux',
    config: { Env: image.env, Entrypoint: image.entrypoint, WorkingDir: image.workingDir, Labels: image.labels },
    rootfs: { type: 'layers', diff_ids: layers.map((layer) => layer.diffId) },
  });
  const manifest = writeJsonBlob(blobs, media.manifest, {
    schemaVersion: 2,
    mediaType: media.manifest,
    config,
    layers: layers.map((layer) => layer.descriptor),
  });
  const tag = image.name.slice(image.name.lastIndexOf(':') + 1);
  // Named the way `docker save` names images: containerd reads the full name, OCI tools the tag.
  const annotations = { 'io.containerd.image.name': image.name, 'org.opencontainers.image.ref.name': tag };
  writeFileSync(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    path.join(layout, 'index.json'),
    JSON.stringify({ schemaVersion: 2, mediaType: media.index, manifests: [{ ...manifest, platform: { architecture: 'amd64', os: 'linux' }, annotations }] }),
  );
  writeFileSync(
    path.join(layout, 'manifest.json'),
    JSON.stringify([{ Config: blobPath(config), RepoTags: [image.name], Layers: layers.map((layer) => blobPath(layer.descriptor)) }]),
  );
  const partial = path.join(work, 'archive.tar');
  execFileSync('tar', [...reproducibleTar, '--file', partial, '--directory', layout, 'blobs', 'index.json', 'manifest.json', 'oci-layout']);
  renameSync(partial, archive);
}
