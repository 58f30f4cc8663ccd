// Files copied from this machine's Debian packages: nsenter, iptables with both backends and their modules, conntrack, and every shared library they and Node.js load.
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, existsSync, lstatSync, openSync, readSync, readlinkSync, realpathSync } from 'node:fs';
import path from 'node:path';
import type { Entry } from './entries.ts';

/** `iptables`, `ip6tables` and their -save/-restore: Debian points them at the nft backend by default, and so does the image. */
const iptablesAlternatives: Entry[] = ['iptables', 'ip6tables'].flatMap((family) =>
  ['', '-save', '-restore'].map((suffix): Entry => ({ kind: 'symlink', path: `/usr/sbin/${family}${suffix}`, target: `${family}-nft${suffix}` })),
);

/** Debian's merged /usr: the image keeps the same layout, so paths printed by ldd hold inside it. */
const mergedUsr = ['/bin', '/sbin', '/lib', '/lib64'];

function run(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** This builder reads Debian's package database; elsewhere Dockerfile.agent builds the same image. */
function requireDebianPackages(): void {
  const wanted = ['iptables', 'util-linux', 'conntrack'];
  const status = spawnSync('dpkg-query', ['-W', '-f=${Package} ${db:Status-Status}\\n', ...wanted], { encoding: 'utf8' });
  if (status.error) throw new Error('dpkg-query not found: this builder takes nsenter, iptables and conntrack from Debian packages; elsewhere, build Dockerfile.agent');
  const installed = status.stdout.split('\n').filter((line) => line.endsWith(' installed')).map((line) => line.split(' ')[0]);
  const missing = wanted.filter((name) => !installed.includes(name));
  if (missing.length > 0) throw new Error(`missing Debian packages: ${missing.join(', ')} (apt-get install ${missing.join(' ')})`);
}

function isElf(file: string): boolean {
  const fd = openSync(file, 'r');
  const magic = Buffer.alloc(4);
  readSync(fd, magic, 0, 4, 0);
  closeSync(fd);
  return magic.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
}

/** Entries that reproduce `file` from this machine, with every symlink on the way (merged /usr, .so versions). */
export function copyOfHostPath(file: string): Entry[] {
  const entries: Entry[] = [];
  const parts = file.split('/').filter(Boolean);
  let at = '/';
  for (const [i, part] of parts.entries()) {
    at = path.join(at, part);
    const stat = lstatSync(at);
    if (stat.isSymbolicLink()) {
      const target = readlinkSync(at);
      entries.push({ kind: 'symlink', path: at, target });
      return [...entries, ...copyOfHostPath(path.resolve(path.dirname(at), target, ...parts.slice(i + 1)))];
    }
    if (i === parts.length - 1) entries.push({ kind: 'file', path: at, source: at, mode: stat.mode & 0o7777 });
  }
  return entries;
}

/** The shared libraries `elfs` load, the ELF interpreter included, as ldd resolves them here (one ldd for all). */
function sharedLibraries(elfs: string[]): string[] {
  const result = spawnSync('ldd', elfs, { encoding: 'utf8' });
  if (result.error) throw new Error(`ldd: ${result.error.message} (Debian: apt-get install libc-bin)`);
  const missing = result.stdout.split('\n').filter((line) => line.includes('=> not found'));
  if (missing.length > 0) throw new Error(`libraries this machine lacks: ${missing.map((line) => line.trim()).join(', ')}`);
  // Static files print "not a dynamic executable" and add nothing.
  return [...new Set([...result.stdout.matchAll(/(?:=>\s*)?(\/\S+)\s+\(0x/g)].map((match) => match[1]!))];
}

/** The iptables package's binaries and xtables modules (loaded with dlopen, so ldd of the binaries does not name them). */
function iptablesFiles(): string[] {
  return run('dpkg', ['-L', 'iptables'])
    .split('\n')
    .filter((file) => file.startsWith('/usr/sbin/') || /\/xtables\/[^/]+\.so$/.test(file))
    .filter((file) => lstatSync(file).isSymbolicLink() || lstatSync(file).isFile())
    .filter((file) => isElf(realpathSync(file)));
}

/** The Debian packages that own `files`; each is asked for as named and by its real path, since merged /usr lets dpkg know either. */
function owningPackages(files: string[]): string[] {
  const asked = [...new Set(files.flatMap((file) => [file, realpathSync(file)]))];
  const listing = spawnSync('dpkg-query', ['-S', ...asked], { encoding: 'utf8' }).stdout;
  const packages = new Set<string>();
  for (const line of listing.split('\n')) {
    if (line.startsWith('diversion by ')) continue;
    const owners = /^(.+?): \//.exec(line)?.[1];
    for (const name of owners?.split(', ') ?? []) packages.add(name.replace(/:.*$/, ''));
  }
  return [...packages].sort();
}

/**
 * nsenter, iptables (legacy and nft), conntrack (the agent's flush of kept-alive connections), the libraries of those and of `nodeBinary`, their Debian
 * copyright files, and a list of the packages and versions they came from.
 */
export function hostEntries(nodeBinary: string): Entry[] {
  requireDebianPackages();
  const roots = ['/usr/bin/nsenter', '/usr/sbin/conntrack', ...iptablesFiles()];
  const libraries = sharedLibraries([nodeBinary, ...roots].map((file) => realpathSync(file)));
  const fromDebian = [...roots, ...libraries];
  const packages = owningPackages(fromDebian);
  const versions = run('dpkg-query', ['-W', '-f=${Package} ${Version}\\n', ...packages]);
  return [
    ...mergedUsr.filter((dir) => lstatSync(dir).isSymbolicLink()).map((dir): Entry => ({ kind: 'symlink', path: dir, target: readlinkSync(dir) })),
    ...fromDebian.flatMap(copyOfHostPath),
    ...iptablesAlternatives,
    ...packages.map((name) => `/usr/share/doc/${name}/copyright`).filter((file) => existsSync(file)).flatMap(copyOfHostPath),
    { kind: 'text', path: '/usr/share/doc/doppel-agent/debian-packages.txt', content: versions, mode: 0o644 },
  ];
}
