// Whether a warm session host runs a launch request's program in its session: the request is read exactly as the CLI
// would read it (the exec command's own parser, the configuration loader with the request's directory, variables and
// flags), and runs here only when the resolved configuration is the session's and nothing else asks for the CLI.
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command } from 'commander';
import { defineExec, toFlags, type ExecOptions } from '../cli/commands/exec.ts';
import { isExecutable, isStaticElf, whichSync } from '../cli/exec/static-binary.ts';
import { foundFileNote, resolveConfig } from '../config/load.ts';
import type { ResolvedConfig } from '../config/schema.ts';
import { parseTarget } from '../config/target.ts';
import { traceRequested } from '../trace.ts';
import type { HostTarget } from './host-target.ts';
import type { LaunchRequest } from './launch-wire.ts';

export type Decision =
  /** Not this host's: another target, another doppel, or arguments the CLI must answer (help, a usage error). */
  | { kind: 'other' }
  /** This host's target, but the CLI must run it (another configuration, --trace, a static or missing program). */
  | { kind: 'cli'; why: string }
  | { kind: 'run'; command: string[]; executable: string; path: string; quiet: boolean; jsonErrors: boolean; note: string | undefined };

export interface HostIdentity {
  /** This doppel's CLI entry (dist/cli/entry.js): a request from another installation is not ours. */
  entry: string;
  /** Whether the request's target is the session's (host-target.ts). */
  isOurs: HostTarget['isOurs'];
  /** The session's resolved configuration, as JSON. */
  config: string;
}

export async function decide(request: LaunchRequest, host: HostIdentity): Promise<Decision> {
  // bin/doppel names the entry by the path it was started as (a link resolved, the directories not).
  const at = request.argv.findIndex((arg) => arg.endsWith(ENTRY_NAME) && realPath(resolve(request.cwd, arg)) === host.entry);
  const args = at < 0 ? [] : request.argv.slice(at + 1);
  if (args[0] !== 'exec') return { kind: 'other' };
  const parsed = await parseExec(args);
  if (!parsed) return { kind: 'other' };
  const { command, options } = parsed;
  let config: ResolvedConfig;
  let source: string | undefined;
  try {
    ({ config, source } = await resolveConfig({ cwd: request.cwd, configFile: options.configFile, env: request.env, flags: toFlags(options) }));
    if (!(await host.isOurs(parseTarget(config.target.path), config, request))) return { kind: 'other' };
  } catch {
    return { kind: 'other' };
  }
  if (traceRequested(args, request.env)) return { kind: 'cli', why: '--trace' };
  if (JSON.stringify(config) !== host.config) return { kind: 'cli', why: 'another configuration' };
  // The file the CLI's spawn would run (execvp's search); a name it would not find, or one it would run without the
  // layer, is the CLI's to report.
  const path = whichSync(command[0] ?? '', request.env.PATH, (file) => isExecutable(resolve(request.cwd, file)));
  const executable = path === undefined ? undefined : resolve(request.cwd, path);
  if (path === undefined || executable === undefined || !isExecutable(executable)) return { kind: 'cli', why: 'no such program' };
  if (isStaticElf(executable)) return { kind: 'cli', why: 'a static program' };
  return { kind: 'run', command, executable, path, quiet: options.quiet === true, jsonErrors: parsed.jsonErrors, note: foundFileNote(request.cwd, options.configFile, source) };
}

const ENTRY_NAME = '/dist/cli/entry.js';

/** libc's realpath: Node's own takes an lstat per component, a tenth of a request's decision. */
function realPath(path: string): string | undefined {
  try {
    return realpathSync.native(path);
  } catch {
    return undefined;
  }
}

type ParsedExec = { command: string[]; options: ExecOptions; jsonErrors: boolean };

/** The exec command's arguments as the CLI's parser reads them; undefined for anything it would not run. */
const parseExec = (args: string[]) => (execParser ??= makeExecParser())(args);

let execParser: ((args: string[]) => Promise<ParsedExec | undefined>) | undefined;

/** Made once per host (its options cost most of a request's decision): commander restores its state before each parse. */
function makeExecParser() {
  let parsed: { command: string[]; options: ExecOptions } | undefined;
  const program = new Command('doppel')
    .option('--json-errors')
    .exitOverride()
    .configureOutput({ writeOut: () => {}, writeErr: () => {} });
  defineExec(program, async (command, options) => {
    parsed = { command, options };
  });
  return async (args: string[]) => {
    const ok = await program.parseAsync(args, { from: 'user' }).then(() => true, () => false);
    const taken = parsed;
    parsed = undefined;
    return ok && taken ? { ...taken, jsonErrors: program.opts<{ jsonErrors?: boolean }>().jsonErrors === true || taken.options.jsonErrors === true } : undefined;
  };
}
