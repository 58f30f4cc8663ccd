// The agent's compiled code under /app: every file reachable by import from dist/agent/main.js and its bundle, the npm packages those import, and a package.json.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import ts from 'typescript';
import type { Entry } from './entries.ts';

export const appDir = '/app';
export const agentMain = 'dist/agent/main.js';
/** What main.js runs, and the digests that key its code cache (scripts/bundle.ts): read as files, not imported. */
const agentBundle = 'dist/agent/agent.cjs';
const bundleDigests = 'dist/bundles.json';
/** The entry in a Kubernetes pod: it admits clients and starts main.js per client in the target's namespace. */
export const agentLauncher = 'dist/agent/launcher.js';

interface PackageJson {
  name: string;
  version: string;
  dependencies?: Record<string, string>;
}

const readJson = (file: string): PackageJson => JSON.parse(readFileSync(file, 'utf8')) as PackageJson;

/** '@scope/name/sub' → '@scope/name'; 'name/sub' → 'name'; undefined for Node's built-in modules. */
function packageName(specifier: string): string | undefined {
  if (specifier.startsWith('node:') || builtinModules.includes(specifier.split('/')[0]!)) return undefined;
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

/** Node's lookup: node_modules/NAME in `from` and each directory above it, up to `repo`. */
function findPackage(name: string, from: string, repo: string): string {
  for (let dir = from; dir.startsWith(repo); dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'node_modules', name);
    if (existsSync(path.join(candidate, 'package.json'))) return candidate;
  }
  throw new Error(`the agent imports ${name}, which is not installed; run npm install`);
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((name) => path.join(dir, name))
    .filter((file) => statSync(file).isFile());
}

/** The compiled modules the agent loads, and the npm packages they import by name (with the directory to search from). */
function importGraph(repo: string): { modules: string[]; packages: Map<string, string> } {
  const entries = [agentMain, agentBundle, bundleDigests, agentLauncher].map((entry) => path.join(repo, entry));
  for (const entry of entries) if (!existsSync(entry)) throw new Error(`${entry} is missing; run npm run build:ts first`);
  const modules = new Set<string>();
  const packages = new Map<string, string>();
  const visit = (file: string): void => {
    if (modules.has(file)) return;
    modules.add(file);
    for (const { fileName } of ts.preProcessFile(readFileSync(file, 'utf8'), true, true).importedFiles) {
      if (fileName.startsWith('.')) {
        const target = path.resolve(path.dirname(file), fileName);
        if (!existsSync(target)) throw new Error(`${file} imports ${fileName}, which is not in dist/; run npm run build:ts`);
        visit(target);
      } else {
        const name = packageName(fileName);
        if (name) packages.set(name, path.dirname(file));
      }
    }
  };
  for (const entry of entries) visit(entry);
  return { modules: [...modules], packages };
}

/** Whole packages (the agent loads what their package.json points at), with their own dependencies. */
function packageFiles(repo: string, roots: Map<string, string>): string[] {
  const dirs = new Set<string>();
  const add = (name: string, from: string): void => {
    const dir = findPackage(name, from, repo);
    if (dirs.has(dir)) return;
    dirs.add(dir);
    for (const dependency of Object.keys(readJson(path.join(dir, 'package.json')).dependencies ?? {})) add(dependency, dir);
  };
  for (const [name, from] of roots) add(name, from);
  return [...dirs].flatMap(filesUnder);
}

const executable = (file: string): number => (statSync(file).mode & 0o111 ? 0o755 : 0o644);

/** Everything under /app; a package.json with the version the agent reports, ESM mode, and the packages it ships with. */
export function agentEntries(repo: string): Entry[] {
  const { modules, packages } = importGraph(repo);
  const own = readJson(path.join(repo, 'package.json'));
  const dependencies = Object.fromEntries([...packages.keys()].sort().map((name) => [name, own.dependencies?.[name] ?? '*']));
  const packageJson = { name: own.name, version: own.version, private: true, type: 'module', dependencies };
  return [
    ...[...modules, ...packageFiles(repo, packages)].map(
      (file): Entry => ({ kind: 'file', path: path.join(appDir, path.relative(repo, file)), source: file, mode: executable(file) }),
    ),
    { kind: 'text', path: path.join(appDir, 'package.json'), content: `${JSON.stringify(packageJson, null, 2)}\n`, mode: 0o644 },
  ];
}
