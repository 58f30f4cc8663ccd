// Bundles the programs whose start a user waits for, the CLI (dist/cli/entry.js), the agent (dist/agent/main.js) and the
// warm session host (dist/warm/session-host.js, which a session's end waits for), over tsc's output of the same name: one file each, plus shared and lazily loaded chunks in dist/chunks/, instead of
// about 80 modules that Node resolves, reads and links one by one (a third of the CLI's start). Every other file in
// dist/ stays as tsc wrote it: tests, the demo and the Kubernetes launcher load those.
import type { Plugin } from 'esbuild';
import { builtinModules } from 'node:module';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = dirname(dirname(fileURLToPath(import.meta.url)));
const src = join(repo, 'src');
const dist = join(repo, 'dist');

/**
 * Modules find files next to themselves (package.json, the layer, the agent) through `import.meta.url`: each keeps the
 * URL of its own file in dist/. Every bundle and chunk lies one directory below dist/, so one relative URL fits all.
 */
const ownUrl: Plugin = {
  name: 'own-import-meta-url',
  setup(bundle) {
    bundle.onLoad({ filter: /\.ts$/ }, async ({ path }) => {
      const text = await readFile(path, 'utf8');
      const own = `../${relative(src, path).replace(/\.ts$/, '.js')}`;
      return { contents: text.replaceAll('import.meta.url', `new URL(${JSON.stringify(own)}, import.meta.url).href`), loader: 'ts' };
    });
  },
};

const { build } = await import('esbuild').catch(() => {
  process.stderr.write('doppel: esbuild is not installed (a dev dependency that bundles the CLI and the agent); run npm install\n');
  process.exit(1);
});
/**
 * Node's built-in modules are required, not imported: an ESM import of one builds its ESM facade, which reads every
 * export and so runs each lazy getter (`fs.promises`, `crypto.webcrypto`, the streams of `fs`...). Measured on the
 * builtins exec loads: 75 ms of CPU to import them all against 62-64 ms to require them. esbuild keeps each import
 * of a builtin as one statement where its module's code begins; it becomes a `const` there, in as many lines.
 */
const builtinImport = new RegExp(`import\\s+([^;]+?)\\s+from\\s+"((?:node:[^"]+)|${builtinModules.join('|')})";`, 'g');
function requireBuiltins(code: string): string {
  const body = code.replace(builtinImport, (_, clause: string, name: string) => {
    const module = `require(${JSON.stringify(name)})`;
    const [, whole, named] = /^(?:\* as )?([\w$]+)?\s*,?\s*(\{[^}]*\})?$/s.exec(clause.trim()) ?? [];
    if (whole === undefined && named === undefined) throw new Error(`bundle: an import of ${name} not understood: ${clause}`);
    const destructured = named?.replace(/\s+as\s+/g, ': ');
    if (whole === undefined) return `const ${destructured} = ${module};`;
    return destructured ? `const ${whole} = ${module}, ${destructured} = ${whole};` : `const ${whole} = ${module};`;
  });
  return `import { createRequire as doppelCreateRequire } from 'node:module';const require = doppelCreateRequire(import.meta.url);${body}`;
}

await rm(join(dist, 'chunks'), { recursive: true, force: true });
/**
 * The agent is bundled apart from the CLI and its session host (which share most of their modules, the Kubernetes
 * client's chunk among them): esbuild makes a chunk for every set of entry points and lazy imports that share modules,
 * so one build of all three split what the CLI's exec loads over 21 files; two builds, 15 (from the CLI's start to its
 * modules loaded, 16.2 -> 13.4 ms, medians of 15 alternating runs).
 */
const programs = [{ 'cli/entry': 'cli', 'warm/session-host': 'host' }, { 'agent/main': 'agent' }];
const built = await Promise.all(
  programs.map((entries) =>
    build({
      entryPoints: Object.fromEntries(Object.keys(entries).map((entry) => [entry, join(src, `${entry}.ts`)])),
      outdir: dist,
      chunkNames: `chunks/${Object.values(entries).join('-')}-[name]-[hash]`,
      bundle: true,
      splitting: true,
      format: 'esm',
      platform: 'node',
      target: 'node22',
      sourcemap: true,
      sourcesContent: false,
      // Only for the paths that need them, loaded lazily: bundling would only make their chunks bigger. Not so the
      // Kubernetes client, whose index loads about 2,800 modules (its generated models): one chunk of it loads in a
      // third of their time, and every Kubernetes start and every warm reuse waits for it.
      external: ['zod', 'yaml', 'smol-toml', 'ora'],
      plugins: [ownUrl],
      write: false,
      logLevel: 'warning',
    }),
  ),
);
const outputFiles = built.flatMap((result) => result.outputFiles);
await Promise.all(outputFiles.map(async ({ path, text }) => {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, path.endsWith('.js') ? requireBuiltins(text) : text);
}));
