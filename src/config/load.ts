// Finds and parses the config file, lays environment variables and flags over it (flag > env > file > default), validates, resolves.
// The parsers and the schema load only when needed (the YAML parser for a YAML file; the schema, about a third of the
// CLI's start, for inputs not validated before): see the validated-config cache below.
import { existsSync, readFileSync } from 'node:fs';
import { extname, join, relative, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DoppelError } from '../errors.ts';
import { diskCache, type DiskCache } from './disk-cache.ts';
import type { ResolvedConfig } from './schema.ts';

/** The exec flags that overlap config keys. */
export interface ExecFlags {
  target?: string;
  targetNamespace?: string;
  oneReplica?: boolean;
  agentNamespace?: string;
  agentImage?: string;
  agentTtl?: number;
  agentStartupTimeout?: number;
  agentLogLevel?: string;
  ephemeralContainer?: boolean;
  fsMode?: string;
  envInclude?: string;
  envExclude?: string;
  envFile?: string;
  steal?: boolean;
  noOutgoing?: boolean;
  noTcpOutgoing?: boolean;
  noUdpOutgoing?: boolean;
  noRemoteDns?: boolean;
  kubeContext?: string;
}

/** Where doppel looks when no -f is given, in order; mirrord's own file last. */
export const defaultConfigFiles = ['.doppel/config.json', '.doppel/config.yaml', '.doppel/config.yml', '.doppel/config.toml', '.mirrord/mirrord.json'];

type Raw = Record<string, unknown>;

/** Each setting an environment variable can make: doppel's name, then mirrord's, as a key path in the file. */
const envSettings: { names: string[]; path: string[]; parse: (value: string) => unknown }[] = [
  { names: ['DOPPEL_TARGET', 'MIRRORD_IMPERSONATED_TARGET'], path: ['target', 'path'], parse: String },
  { names: ['DOPPEL_TARGET_NAMESPACE', 'MIRRORD_TARGET_NAMESPACE'], path: ['target', 'namespace'], parse: String },
  { names: ['DOPPEL_FILE_MODE', 'MIRRORD_FILE_MODE'], path: ['feature', 'fs', 'mode'], parse: String },
  { names: ['DOPPEL_OVERRIDE_ENV_VARS_INCLUDE', 'MIRRORD_OVERRIDE_ENV_VARS_INCLUDE'], path: ['feature', 'env', 'include'], parse: String },
  { names: ['DOPPEL_OVERRIDE_ENV_VARS_EXCLUDE', 'MIRRORD_OVERRIDE_ENV_VARS_EXCLUDE'], path: ['feature', 'env', 'exclude'], parse: String },
  { names: ['DOPPEL_REMOTE_DNS', 'MIRRORD_REMOTE_DNS'], path: ['feature', 'network', 'dns', 'enabled'], parse: parseBool },
  { names: ['DOPPEL_TCP_OUTGOING', 'MIRRORD_TCP_OUTGOING'], path: ['feature', 'network', 'outgoing', 'tcp'], parse: parseBool },
  { names: ['DOPPEL_UDP_OUTGOING', 'MIRRORD_UDP_OUTGOING'], path: ['feature', 'network', 'outgoing', 'udp'], parse: parseBool },
  { names: ['DOPPEL_AGENT_IMAGE', 'MIRRORD_AGENT_IMAGE'], path: ['agent', 'image'], parse: String },
  { names: ['DOPPEL_AGENT_NAMESPACE', 'MIRRORD_AGENT_NAMESPACE'], path: ['agent', 'namespace'], parse: String },
  { names: ['DOPPEL_AGENT_TTL', 'MIRRORD_AGENT_TTL'], path: ['agent', 'ttl'], parse: parseNumber },
  { names: ['DOPPEL_AGENT_STARTUP_TIMEOUT', 'MIRRORD_AGENT_STARTUP_TIMEOUT'], path: ['agent', 'startup_timeout'], parse: parseNumber },
  { names: ['DOPPEL_AGENT_COMMUNICATION_TIMEOUT', 'MIRRORD_AGENT_COMMUNICATION_TIMEOUT'], path: ['agent', 'communication_timeout'], parse: parseNumber },
  { names: ['DOPPEL_AGENT_LOG_LEVEL'], path: ['agent', 'log_level'], parse: String },
  { names: ['DOPPEL_EPHEMERAL_CONTAINER', 'MIRRORD_EPHEMERAL_CONTAINER'], path: ['agent', 'ephemeral'], parse: parseBool },
  { names: ['DOPPEL_KUBE_CONTEXT', 'MIRRORD_KUBE_CONTEXT'], path: ['kube_context'], parse: String },
];

export interface LoadOptions {
  cwd: string;
  configFile?: string | undefined;
  env: NodeJS.ProcessEnv;
  flags: ExecFlags;
}

export async function resolveConfig(options: LoadOptions): Promise<{ config: ResolvedConfig; source: string | undefined }> {
  const source = options.configFile !== undefined ? resolvePath(options.cwd, options.configFile) : findDefaultFile(options.cwd);
  const raw = source === undefined ? {} : await readConfigFile(source);
  const layered = expandShorthands(raw);
  for (const setting of envSettings) {
    const name = setting.names.find((n) => options.env[n] !== undefined && options.env[n] !== '');
    if (name !== undefined) setPath(layered, setting.path, setting.parse(options.env[name]!));
  }
  for (const [path, value] of flagSettings(options.flags)) setPath(layered, path, value);
  // The target's path is a string the schema takes as it is: out of the cache's key, a new target (another process,
  // a pod's new name after a rollout) finds its configuration validated already, and only the path is put back.
  const target = layered.target as Raw | undefined;
  const targetPath = typeof target?.path === 'string' ? target.path : undefined;
  const keyed = targetPath === undefined ? layered : { ...layered, target: { ...target, path: '' } };
  const withPath = (config: ResolvedConfig): ResolvedConfig => (targetPath === undefined ? config : { ...config, target: { ...config.target, path: targetPath } });
  const cache = validatedCache(keyed, options.env);
  const cached = cache?.read();
  if (cached) return { config: withPath(cached), source };
  const [{ configSchema }, { describeIssues }, { resolveConfig: resolveFile }] = await Promise.all([import('./schema.ts'), import('./issues.ts'), import('./resolve.ts')]);
  const parsed = configSchema.safeParse(keyed);
  if (!parsed.success) {
    const where = source ?? 'the configuration';
    throw new DoppelError('E_CONFIG_INVALID', `invalid configuration in ${where}:\n${describeIssues(parsed.error.issues).map((line) => `  ${line}`).join('\n')}`, {
      category: 'config',
      hint: 'fix the keys named above; `doppel schema` prints every key and its type',
    });
  }
  // In the shape the cache gives back (no keys set to undefined), so a start is the same whether it hit or not.
  const config = JSON.parse(JSON.stringify(resolveFile(parsed.data))) as ResolvedConfig;
  cache?.write(config);
  return { config: withPath(config), source };
}

/**
 * Validation and resolution are a pure function of the layered input and of the modules that decide a configuration,
 * so their result is kept on disk (disk-cache.ts): a second start with the same file, variables and flags loads no
 * schema. Only valid configurations are kept.
 */
function validatedCache(layered: Raw, env: NodeJS.ProcessEnv): DiskCache<ResolvedConfig> | undefined {
  const ext = extname(fileURLToPath(import.meta.url));
  const modules = ['load', 'schema', 'resolve', '../platform/kubernetes/agent-image'].map((name) => new URL(`./${name}${ext}`, import.meta.url));
  return diskCache('config', layered, [...modules, new URL('../../package.json', import.meta.url)], env);
}

/** The line naming a configuration file found in the working directory (not -f's): such a file changes a session unasked (its target, a steal, a filter). */
export function foundFileNote(cwd: string, configFile: string | undefined, source: string | undefined): string | undefined {
  return configFile === undefined && source !== undefined ? `configuration from ${relative(cwd, source)}` : undefined;
}

export function findDefaultFile(cwd: string): string | undefined {
  return defaultConfigFiles.map((file) => join(cwd, file)).find((file) => existsSync(file));
}

async function readConfigFile(file: string): Promise<Raw> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new DoppelError('E_CONFIG_NOT_FOUND', `cannot read config file ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {
      category: 'config',
      hint: 'check the path given to -f/--config-file',
    });
  }
  const format = extname(file).toLowerCase();
  let value: unknown;
  try {
    if (format === '.yaml' || format === '.yml') value = (await import('yaml')).parse(text);
    else if (format === '.toml') value = (await import('smol-toml')).parse(text);
    else value = JSON.parse(text);
  } catch (error) {
    throw new DoppelError('E_CONFIG_PARSE', `cannot parse ${file}: ${await parseErrorText(error, text, format)}`, {
      category: 'config',
      hint: 'config files are JSON (.json), YAML (.yaml, .yml) or TOML (.toml), chosen by extension',
    });
  }
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new DoppelError('E_CONFIG_INVALID', `invalid configuration in ${file}: the top level must be an object`, { category: 'config' });
  }
  return value as Raw;
}

async function parseErrorText(error: unknown, text: string, format: string): Promise<string> {
  if (format === '.yaml' || format === '.yml') {
    const { YAMLParseError } = await import('yaml');
    if (error instanceof YAMLParseError) {
      const at = error.linePos?.[0];
      return at ? `line ${at.line}, column ${at.col}: ${error.message.split('\n')[0]}` : error.message;
    }
  }
  const { TomlError } = format === '.toml' ? await import('smol-toml') : { TomlError: undefined };
  if (TomlError && error instanceof TomlError) return `line ${error.line}, column ${error.column}: ${error.message.split('\n')[0]}`;
  const message = (error as Error).message;
  const position = /position (\d+)/.exec(message)?.[1];
  if (position !== undefined) {
    const before = text.slice(0, Number(position));
    const line = before.split('\n').length;
    const column = Number(position) - before.lastIndexOf('\n');
    return `line ${line}, column ${column}: ${message.replace(/ in JSON at position \d+.*$/, '')}`;
  }
  return message;
}

/** Shorthand forms become objects so that a setting from a flag or variable can land inside them. */
function expandShorthands(raw: Raw): Raw {
  const copy = structuredClone(raw);
  const feature = isObject(copy.feature) ? copy.feature : undefined;
  const network = feature && isObject(feature.network) ? feature.network : undefined;
  if (typeof copy.target === 'string') copy.target = { path: copy.target };
  if (feature && typeof feature.fs === 'string') feature.fs = { mode: feature.fs };
  if (feature && typeof feature.fs === 'boolean') feature.fs = { mode: feature.fs ? 'read' : 'local' };
  if (network && typeof network.dns === 'boolean') network.dns = { enabled: network.dns };
  if (network && typeof network.outgoing === 'boolean') network.outgoing = { tcp: network.outgoing, udp: network.outgoing };
  if (network && typeof network.incoming === 'string') network.incoming = { mode: network.incoming };
  if (network && typeof network.incoming === 'boolean') network.incoming = { mode: network.incoming ? 'mirror' : 'off' };
  return copy;
}

function flagSettings(flags: ExecFlags): [string[], unknown][] {
  const settings: [string[], unknown][] = [
    [['target', 'path'], flags.target],
    [['target', 'namespace'], flags.targetNamespace],
    [['target', 'replicas'], flags.oneReplica ? 'one' : undefined],
    [['agent', 'namespace'], flags.agentNamespace],
    [['agent', 'image'], flags.agentImage],
    [['agent', 'ttl'], flags.agentTtl],
    [['agent', 'startup_timeout'], flags.agentStartupTimeout],
    [['agent', 'log_level'], flags.agentLogLevel],
    [['agent', 'ephemeral'], flags.ephemeralContainer],
    [['feature', 'fs', 'mode'], flags.fsMode],
    [['feature', 'env', 'include'], flags.envInclude],
    [['feature', 'env', 'exclude'], flags.envExclude],
    [['feature', 'env', 'env_file'], flags.envFile],
    [['feature', 'network', 'incoming', 'mode'], flags.steal ? 'steal' : undefined],
    [['feature', 'network', 'outgoing', 'tcp'], flags.noOutgoing || flags.noTcpOutgoing ? false : undefined],
    [['feature', 'network', 'outgoing', 'udp'], flags.noOutgoing || flags.noUdpOutgoing ? false : undefined],
    [['feature', 'network', 'dns', 'enabled'], flags.noRemoteDns ? false : undefined],
    [['kube_context'], flags.kubeContext],
  ];
  return settings.filter(([, value]) => value !== undefined);
}

function setPath(target: Raw, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    // A disabled feature (`false`) that a flag or variable sets something in is switched on by it.
    if (!isObject(node[key])) node[key] = {};
    node = node[key] as Raw;
  }
  node[path.at(-1)!] = value;
}

function isObject(value: unknown): value is Raw {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseBool(value: string): unknown {
  if (/^(1|true|yes|on)$/i.test(value)) return true;
  if (/^(0|false|no|off)$/i.test(value)) return false;
  return value;
}

function parseNumber(value: string): unknown {
  const n = Number(value);
  return value.trim() !== '' && Number.isFinite(n) ? n : value;
}
