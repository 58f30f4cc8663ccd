// Runs our bundles (scripts/bundle.ts: the CLI, the agent, the session host and the Kubernetes client) from a V8 code
// cache made once a start has run. Node's own compile cache is made as a module is compiled, before it runs, so it
// holds only top-level code: every function a start calls was parsed and compiled again at every start. A script's
// cache made after it ran holds those functions too (docs/architecture.md: 10-13 ms of a fresh `doppel exec`).
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { debuglog } from 'node:util';
import { Script } from 'node:vm';
import { cacheHome, fnv1a64, writeCacheFile } from './config/disk-cache.ts';

/** `NODE_DEBUG=doppel-code-cache` says, for each bundle, whether it ran from its cache and when one is made. */
const debug = debuglog('doppel-code-cache');
/**
 * When a start without a cache makes one (or at a clean exit, if sooner): its start has run by then, and a long
 * session's garbage collections would later drop the bytecode of functions not run since.
 */
const MAKE_AFTER_MS = 1000;

/** Caches kept (each 0.1-2 MB): one per bundle, kind of start and Node.js is a handful for an installation. */
const MAX_CACHES = 40;

type BundleFunction = (exports: unknown, require: NodeJS.Require, module: { exports: unknown }, filename: string, dirname: string) => void;

const modules = new Map<string, { exports: unknown }>();

/** Runs the bundle `name` in the directory of the module at `url`; `variant` names the kind of start (a cache each). */
export function runBundleBeside(url: string, name: string, variant = ''): unknown {
  return runBundle(join(dirname(fileURLToPath(url)), name), variant);
}

/** The bundle at `file`, a CommonJS module's function, run once: its exports. */
export function runBundle(file: string, variant = ''): unknown {
  const known = modules.get(file);
  if (known) return known.exports;
  const source = readFileSync(file, 'utf8');
  const cache = cacheFile(file, variant);
  const cachedData = cache && readOrUndefined(cache.path);
  const script = new Script(source, { filename: pathToFileURL(file).href, cachedData });
  const used = cachedData !== undefined && !script.cachedDataRejected;
  debug('%s: %s', file, used ? 'run from its code cache' : cachedData ? 'code cache rejected' : 'no code cache');
  if (cache && !used) makeCacheLater(script, cache);
  const module = { exports: {} };
  modules.set(file, module);
  (script.runInThisContext() as BundleFunction)(module.exports, bundleRequire(file), module, file, dirname(file));
  return module.exports;
}

/** Bundles name each other by relative path (the Kubernetes client's); every other name is Node's to load. */
function bundleRequire(file: string): NodeJS.Require {
  const require = createRequire(file);
  return Object.assign((id: string) => (id.startsWith('.') ? runBundle(resolve(dirname(file), id)) : require(id)), require);
}

interface CacheFile {
  path: string;
  /** What every cache of this bundle's path, variant, Node.js and flags starts with, whichever build of it made it. */
  prefix: string;
}

/**
 * The cache of this very bundle file, for this Node.js and its flags. V8 itself checks only the source's length, and
 * runs the bytecode of another build of the same length: the build names each bundle's content by its digest
 * (`bundles.json`, beside the programs' directories), and the file's size, modification time and inode tell a file
 * changed since (npm gives every file it installs the same modification time, and a new file may get an old inode).
 */
function cacheFile(file: string, variant: string): CacheFile | undefined {
  try {
    const { size, mtimeMs, ino } = statSync(file);
    const runner = fnv1a64(JSON.stringify([file, variant, process.version, process.arch, process.execArgv]));
    const prefix = join(cacheHome(), 'doppel', 'code-cache', `${basename(file)}-${runner}-`);
    return { path: prefix + fnv1a64(JSON.stringify([builtDigest(file), size, mtimeMs, ino])), prefix };
  } catch {
    return undefined;
  }
}

/** The digest scripts/bundle.ts wrote for `file`, if any. */
function builtDigest(file: string): string | undefined {
  const dist = dirname(dirname(file));
  try {
    return (JSON.parse(readFileSync(join(dist, 'bundles.json'), 'utf8')) as Record<string, string>)[relative(dist, file)];
  } catch {
    return undefined;
  }
}

function readOrUndefined(file: string): Buffer | undefined {
  try {
    return readFileSync(file);
  } catch {
    return undefined;
  }
}

/**
 * Made by a start that has run for a while or ends well: one that fails at once (a bad configuration, a usage error)
 * has compiled little of what the next starts run, and would keep them from a better cache until the next build.
 */
function makeCacheLater(script: Script, cache: CacheFile): void {
  const make = () => {
    clearTimeout(timer);
    process.off('exit', atExit);
    try {
      // Code this user runs; and those of earlier builds of the same file go.
      writeCacheFile(cache.path, script.createCachedData(), MAX_CACHES, (path) => path.startsWith(cache.prefix) && !path.slice(cache.prefix.length).includes('.'));
      debug('%s: code cache made', cache.path);
    } catch {
      // Best effort: the next start compiles again.
    }
  };
  const atExit = (code: number) => {
    if (code === 0) make();
  };
  const timer = setTimeout(make, MAKE_AFTER_MS).unref();
  process.once('exit', atExit);
}
