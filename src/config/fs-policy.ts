// Decides, per path, whether a file call is served locally, by the target, or answered "not found" — mirrord's rules and order.
import { posix } from 'node:path';
import { fastRulesFor, type FastRule } from './fs-fast-rules.ts';
import type { ResolvedConfig } from './schema.ts';

export type FsAction = 'local' | 'remote' | 'not_found';

export interface FsPolicy {
  decide(path: string, options: { write: boolean }): { action: FsAction; path: string };
  /** Rules the layer applies before asking: a path they call local is local here too, one they call remote is read from the target at that path (fs-fast-rules.ts). */
  readonly fastRules: FastRule[];
  /** Whether any write can go to the target (write mode, or read_write lists in a mode that applies them). */
  readonly remoteWrites: boolean;
}

export interface RunTimePaths {
  cwd: string;
  home: string;
  tmpdir: string;
  /** The program's own executable, when known. */
  executable: string | undefined;
  /** The program's PATH (the developer's: mirrord never takes PATH from the target). */
  path?: string;
  /** The previous working directory ($OLDPWD), which every bash checks is a directory as it starts. */
  previousCwd?: string;
  /** Where the target mounts volumes: read from the target even under local roots such as /etc (mirrord's auto_mount). */
  targetMounts?: string[];
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const under = (dir: string) => `^${escape(dir.replace(/\/+$/, ''))}(/|$)`;

/** Paths that stay local whatever the mode: system files, interpreters' own files, and the project. */
const defaultLocal = [
  // Two patterns so that the layer can apply the plain suffixes itself.
  '\\.(sh|rb|d|pyc|py|jar|class|js|pth|so)$',
  '\\.so(\\.\\d+)+$',
  '(^|/)venv\\.cfg$',
  '(^|/)jvm\\.cfg$',
  ...['/proc', '/sys', '/lib', '/lib32', '/lib64', '/libx32', '/etc', '/usr', '/home', '/bin', '/sbin', '/dev', '/opt', '/tmp', '/var/tmp', '/snap', '/run', '/nix'].map(under),
  '(^|/)node_modules(/|$)',
  '(^|/)package\\.json$',
  '(^|/)\\.yarnrc[^/]*$',
  '(^|/)\\.tool-versions$',
  // Not mirrord's: the other version managers' files, which pyenv, rbenv and nvm look for in every directory up to /.
  '(^|/)\\.(python-version|ruby-version|node-version|nvmrc)$',
];

/** Files under local roots that describe the target's network identity, so they come from it. */
const defaultRemote = ['^/etc/resolv\\.conf$', '^/etc/hosts$', '^/etc/hostname$', under('/etc/ssl/certs')];

/** `/a/b/c` → `/a`, `/a/b` (not `/` itself, which holds the target's whole tree). */
function ancestors(dir: string): string[] {
  const parts = dir.split('/').filter(Boolean);
  return parts.slice(0, -1).map((_, i) => `/${parts.slice(0, i + 1).join('/')}`);
}

export function createFsPolicy(fs: ResolvedConfig['feature']['fs'], paths: RunTimePaths): FsPolicy {
  const home = paths.home.replace(/\/+$/, '');
  const sources = {
    defaultNotFound: [under(`${home}/.config/gcloud`), under(`${home}/.kube`), under(`${home}/.azure`)],
    remoteDefaults: [...defaultRemote, ...(paths.targetMounts ?? []).filter((dir) => dir.replace(/\/+$/, '') !== '').map(under)],
    localDefaults: [
      ...defaultLocal,
      // The root directory as working directory would make everything local; it is not a project.
      ...[paths.tmpdir, paths.cwd].filter((dir) => dir.replace(/\/+$/, '') !== '').map(under),
      // The directories above the project and the home directory itself (its dotfiles are local): runtimes resolve
      // a real path one component at a time. And the previous working directory itself (not what it holds).
      ...[...ancestors(paths.cwd), ...(home !== '' ? [...ancestors(home), home] : []), ...(paths.previousCwd?.startsWith('/') ? [paths.previousCwd.replace(/\/+$/, '')] : [])]
        .filter((dir) => dir !== '')
        .map((dir) => `^${escape(dir)}$`),
      ...(home !== '' ? [`^${escape(home)}/\\.`] : []),
      // Not mirrord's: the PATH's directories. Whatever a program finds there it runs here (exec is always local), so
      // a shell's command search must see the local ones; asked of the target, it found none of ~/bin or ~/go/bin.
      ...(paths.path ?? '').split(':').filter((dir) => dir.startsWith('/') && dir.replace(/\/+$/, '') !== '').map(under),
      ...(paths.executable ? [`^${escape(paths.executable)}$`] : []),
    ],
  };
  const compile = (patterns: string[]) => patterns.map((pattern) => new RegExp(pattern, 'i'));
  const userNotFound = compile(fs.not_found);
  const readWrite = compile(fs.read_write);
  const readOnly = compile(fs.read_only);
  const userLocal = compile(fs.local);
  const defaultNotFound = compile(sources.defaultNotFound);
  const remoteDefaults = compile(sources.remoteDefaults);
  const localDefaults = compile(sources.localDefaults);
  const mappings = Object.entries(fs.mapping).map(([pattern, replacement]) => ({ regex: new RegExp(pattern, 'i'), replacement }));
  const matches = (list: RegExp[], path: string) => list.some((regex) => regex.test(path));
  const fastRules = fastRulesFor({
    mode: fs.mode,
    mapping: Object.keys(fs.mapping),
    userNotFound: fs.not_found,
    userRemote: [...fs.read_write, ...fs.read_only],
    userLocal: fs.local,
    defaultNotFound: sources.defaultNotFound,
    defaultRemote: sources.remoteDefaults,
    defaultLocal: sources.localDefaults,
  });

  return {
    fastRules,
    remoteWrites: fs.mode === 'write' || (fs.mode !== 'local' && fs.read_write.length > 0),
    decide(original, { write }) {
      const mapping = mappings.find(({ regex }) => regex.test(original));
      const path = posix.normalize(mapping ? original.replace(mapping.regex, mapping.replacement) : original);
      const answer = (action: FsAction) => ({ action, path });
      if (fs.mode === 'local') return answer('local');
      if (matches(userNotFound, path)) return answer('not_found');
      if (matches(readWrite, path)) return answer('remote');
      if (matches(readOnly, path)) return answer(write ? 'local' : 'remote');
      if (matches(userLocal, path)) return answer('local');
      if (fs.mode === 'localwithoverrides') return answer('local');
      if (matches(defaultNotFound, path)) return answer('not_found');
      if (matches(remoteDefaults, path)) return answer(write && fs.mode === 'read' ? 'local' : 'remote');
      if (matches(localDefaults, path)) return answer('local');
      return answer(fs.mode === 'write' || !write ? 'remote' : 'local');
    },
  };
}
