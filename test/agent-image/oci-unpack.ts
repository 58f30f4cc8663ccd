// Reads an OCI image archive the way a runtime does: index → manifest → config and layers, every digest checked, layers unpacked in order.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface UnpackedImage {
  /** The index's one manifest descriptor, with its name annotations. */
  index: Descriptor;
  manifest: { mediaType: string; config: Descriptor; layers: Descriptor[] };
  config: {
    architecture: string;
    os: string;
    config: { Entrypoint: string[]; Env: string[]; WorkingDir: string };
    rootfs: { diff_ids: string[] };
  };
  rootfs: string;
  /** Docker's manifest.json, for `docker load`. */
  dockerManifest: { Config: string; RepoTags: string[]; Layers: string[] }[];
}

const sha256 = (data: Buffer): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Unpacks `archive` under `dir` (dir/layout, dir/rootfs); throws when any digest, size or diff id is wrong. */
export function unpackOciArchive(archive: string, dir: string): UnpackedImage {
  const layout = path.join(dir, 'layout');
  const rootfs = path.join(dir, 'rootfs');
  mkdirSync(layout, { recursive: true });
  mkdirSync(rootfs, { recursive: true });
  execFileSync('tar', ['--extract', '--file', archive, '--directory', layout]);
  const { imageLayoutVersion } = JSON.parse(readFileSync(path.join(layout, 'oci-layout'), 'utf8')) as { imageLayoutVersion: string };
  if (imageLayoutVersion !== '1.0.0') throw new Error(`oci-layout says version ${imageLayoutVersion}`);
  const blob = (descriptor: Descriptor): Buffer => {
    const data = readFileSync(path.join(layout, 'blobs', ...descriptor.digest.split(':')));
    if (sha256(data) !== descriptor.digest || data.length !== descriptor.size) throw new Error(`blob ${descriptor.digest} does not match its descriptor`);
    return data;
  };
  const { manifests } = JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  if (manifests.length !== 1) throw new Error(`index.json lists ${manifests.length} manifests`);
  const index = manifests[0]!;
  const manifest = JSON.parse(blob(index).toString()) as UnpackedImage['manifest'];
  const config = JSON.parse(blob(manifest.config).toString()) as UnpackedImage['config'];
  if (config.rootfs.diff_ids.length !== manifest.layers.length) throw new Error('config and manifest disagree on the number of layers');
  for (const [i, layer] of manifest.layers.entries()) {
    const tar = gunzipSync(blob(layer));
    if (sha256(tar) !== config.rootfs.diff_ids[i]) throw new Error(`layer ${i}: uncompressed digest is not the config's diff id`);
    execFileSync('tar', ['--extract', '--directory', rootfs, '--numeric-owner'], { input: tar, maxBuffer: 1 << 30 });
  }
  const dockerManifest = JSON.parse(readFileSync(path.join(layout, 'manifest.json'), 'utf8')) as UnpackedImage['dockerManifest'];
  return { index, manifest, config, rootfs, dockerManifest };
}
