// Bundles the programs whose start a user waits for, each into one CommonJS file run from a code cache made after its
// first start (src/bundle-loader.ts): the CLI (dist/cli/cli.cjs), the agent (dist/agent/agent.cjs) and the warm
// session host (dist/warm/session-host.cjs, which a session's end waits for), over tsc's output, plus the Kubernetes
// client (dist/vendor/kubernetes-client.cjs), which the CLI and the host load only for a Kubernetes target. The files
// tsc wrote under those programs' names (dist/cli/entry.js, dist/agent/main.js, dist/warm/session-host.js) become the
// few lines that run the bundle, so every command line and spawn stays as it was. Every other file in dist/ stays as tsc
// wrote it: tests, the demo and the Kubernetes launcher load those.
import type { BuildOptions, Plugin } from 'esbuild';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { builtinModules } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = dirname(dirname(fileURLToPath(import.meta.url)));
const src = join(repo, 'src');
const dist = join(repo, 'dist');
const kubernetesClient = '@kubernetes/client-node';
const kubernetesBundle = 'vendor/kubernetes-client.cjs';

/**
 * Modules find files next to themselves (package.json, the layer, the agent) through `import.meta.url`: each keeps the
 * URL of its own file in dist/. Every bundle lies one directory below dist/, so one relative URL fits all.
 */
const ownUrl: Plugin = {
  name: 'own-import-meta-url',
  setup(bundle) {
    bundle.onLoad({ filter: /\.ts$/ }, async ({ path }) => {
      const text = await readFile(path, 'utf8');
      const own = `../${relative(src, path).replace(/\.ts$/, '.js')}`;
      return { contents: text.replaceAll('import.meta.url', `new URL(${JSON.stringify(own)}, bundleUrl).href`), loader: 'ts' };
    });
  },
};

/** The Kubernetes client is a bundle of its own (src/bundle-loader.ts runs it), loaded as the first module asks for it. */
const kubernetesClientApart: Plugin = {
  name: 'kubernetes-client-apart',
  setup(bundle) {
    bundle.onResolve({ filter: new RegExp(`^${kubernetesClient}$`) }, () => ({ path: `../${kubernetesBundle}`, external: true }));
  },
};

/** The values (not types) our modules import from the Kubernetes client. */
async function kubernetesClientImports(): Promise<string[]> {
  const names = new Set<string>();
  const files = (await readdir(src, { recursive: true })).filter((file) => file.endsWith('.ts'));
  for (const file of files) {
    const text = await readFile(join(src, file), 'utf8');
    for (const [, clause = ''] of text.matchAll(new RegExp(`import\\s+\\{([^}]*)\\}\\s+from\\s+'${kubernetesClient}'`, 'g'))) {
      for (const part of clause.split(',').map((name) => name.trim())) if (part && !part.startsWith('type ')) names.add(part);
    }
  }
  return [...names].sort();
}

/**
 * The runner is an ES module (the package's type), made of the loader and its few modules with Node's built-in modules
 * required, not imported: an ESM import of one builds its ESM facade, which reads every export and so runs each lazy
 * getter (`fs.promises`, `util.types`...). Imported, they took about 9 ms of a fresh `doppel exec`'s start.
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

/**
 * esbuild makes a namespace for each import of a CommonJS module that asks for its default or all of it (`import process
 * from 'node:process'`, in most of our modules) by copying each of its properties as a getter, at every such import:
 * for Node's built-in modules (`process` alone has some 150), 3-4 ms of a start. One whose prototype is the module
 * reads the same, live, at no cost (`__ns_of`, as long as `__toESM`: the source maps' columns stay right).
 */
const builtinNamespace = new RegExp(`__toESM\\(require\\("((?:node:)?(?:${builtinModules.join('|')}))"\\)`, 'g');
function builtinNamespaces(code: string): string {
  return code.replace(builtinNamespace, (_, name: string) => `__ns_of(require(${JSON.stringify(name)})`);
}

const { build } = await import('esbuild').catch(() => {
  process.stderr.write('doppel: esbuild is not installed (a dev dependency that bundles the CLI and the agent); run npm install\n');
  process.exit(1);
});

/**
 * One CommonJS module's function, as src/bundle-loader.ts runs it (Node's own module wrapper): a script V8 can cache
 * once it has run, where Node caches an ES module's code as compiled, before any of its functions ran.
 */
const common: BuildOptions = {
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node22',
  sourcemap: true,
  sourcesContent: false,
  banner: {
    js: [
      '(function (exports, require, module, __filename, __dirname) {',
      'const bundleUrl = require("node:url").pathToFileURL(__filename).href;',
      // See builtinNamespaces.
      'const __ns_of = (module) => Object.create(module, { default: { value: module, enumerable: true } });',
    ].join('\n'),
  },
  footer: { js: '})' },
  define: { 'import.meta.url': 'bundleUrl' },
  // A lazy import of a package is a require too (Node requires ES modules, ora among them): a script's import() needs
  // vm's experimental loader option.
  supported: { 'dynamic-import': false },
  write: false,
  logLevel: 'warning',
};

/**
 * Each program's bundle, and the file tsc wrote for it that now runs it. `variant` (an expression) names the kind of
 * start, each with a cache of its own: an `exec` runs other code than `--version`, and on a process target (named on
 * the command line) other code than on Kubernetes.
 */
const programs = [
  {
    entry: 'cli/entry',
    bundle: 'cli/cli.cjs',
    runner: 'cli/entry.js',
    variant: `process.argv[2] !== 'exec' ? '' : process.argv.some((arg) => /^(--target=)?process\\//.test(arg)) ? 'exec-process' : 'exec'`,
  },
  { entry: 'agent/main', bundle: 'agent/agent.cjs', runner: 'agent/main.js', variant: `''` },
  { entry: 'warm/session-host', bundle: 'warm/session-host.cjs', runner: 'warm/session-host.js', variant: `''` },
];

// Left by earlier builds, which split the bundles into chunks.
await rm(join(dist, 'chunks'), { recursive: true, force: true });
const bundles = await Promise.all([
  ...programs.map(({ entry, bundle }) =>
    build({
      ...common,
      entryPoints: [join(src, `${entry}.ts`)],
      outfile: join(dist, bundle),
      // Only for the paths that need them, loaded lazily: bundling would only make the bundles bigger.
      external: ['zod', 'yaml', 'smol-toml', 'ora'],
      plugins: [ownUrl, kubernetesClientApart],
    }),
  ),
  // Its index loads about 2,800 modules (its generated models): one bundle of them loads in a third of their time. It
  // exports what our modules import from it, which leaves out most of the package (17.6 MB whole, 7.5 MB so).
  build({
    ...common,
    stdin: { contents: `export { ${(await kubernetesClientImports()).join(', ')} } from '${kubernetesClient}';`, resolveDir: repo, loader: 'ts' },
    outfile: join(dist, kubernetesBundle),
  }),
]);
const digests: Record<string, string> = {};
await Promise.all(
  bundles.flatMap(({ outputFiles }) =>
    outputFiles.map(async ({ path, text }) => {
      const code = path.endsWith('.cjs') ? builtinNamespaces(text) : text;
      if (path.endsWith('.cjs')) digests[relative(dist, path)] = createHash('sha256').update(code).digest('hex').slice(0, 32);
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, code);
    }),
  ),
);
// What names each bundle's build in its code cache's key (src/bundle-loader.ts).
await writeFile(join(dist, 'bundles.json'), `${JSON.stringify(digests, null, 2)}\n`);
// Each runner: the loader and the few modules it needs, in one ES module (the package's type).
await Promise.all(
  programs.map(async ({ bundle, runner, variant }) => {
    const result = await build({
      stdin: {
        contents: `import { runBundleBeside } from './bundle-loader.ts';\nrunBundleBeside(import.meta.url, '${relative(dirname(runner), bundle)}', ${variant});\n`,
        resolveDir: src,
        loader: 'ts',
      },
      bundle: true,
      format: 'esm',
      platform: 'node',
      target: 'node22',
      write: false,
      logLevel: 'warning',
    });
    const [{ text }] = result.outputFiles;
    await writeFile(join(dist, runner), `// Written by scripts/bundle.ts: runs ${bundle} from its code cache (src/bundle-loader.ts).\n${requireBuiltins(text)}`);
  }),
);
