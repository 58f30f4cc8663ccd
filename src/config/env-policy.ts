// Builds the program's environment: local variables, then the target's (filtered), then env_file, then overrides; unset last.
import { readFileSync } from 'node:fs';
import { parseEnv } from 'node:util';
import { DoppelError } from '../errors.ts';
import type { ResolvedConfig } from './schema.ts';

/** Never taken from the target: they describe the developer's machine, not the service. */
export const alwaysExcluded = [
  'PATH', 'HOME', 'HOMEPATH', 'PWD', 'CLASSPATH', 'JAVA_HOME', 'JAVA_EXE', 'JAVA_TOOL_OPTIONS', '_JAVA_OPTIONS',
  'PYTHONPATH', 'GOPATH', 'GOMODCACHE', 'GEM_*', 'BUNDLE*', 'RUBYLIB', 'RUBYOPT', 'CATALINA_HOME', 'DOTNET_*', 'RUST_LOG',
];

export function wildcard(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

export interface MergeInput {
  local: NodeJS.ProcessEnv;
  remote: Record<string, string>;
  config: ResolvedConfig['feature']['env'];
}

export function mergeEnvironment({ local, remote, config }: MergeInput): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(local)) if (value !== undefined) env[name] = value;
  if (!config.enabled) return env;
  const include = config.include?.map(wildcard);
  const exclude = [...alwaysExcluded, ...config.exclude].map(wildcard);
  for (const [name, value] of Object.entries(remote)) {
    if (include && !include.some((regex) => regex.test(name))) continue;
    if (exclude.some((regex) => regex.test(name))) continue;
    env[name] = applyMapping(value, config.mapping);
  }
  if (config.env_file !== undefined) Object.assign(env, readEnvFile(config.env_file));
  Object.assign(env, config.override);
  const unset = config.unset.map(wildcard);
  for (const name of Object.keys(env)) if (unset.some((regex) => regex.test(name))) delete env[name];
  return env;
}

/** mirrord's `mapping`: regex → replacement over the values that came from the target. */
function applyMapping(value: string, mapping: Record<string, string>): string {
  for (const [pattern, replacement] of Object.entries(mapping)) {
    const regex = new RegExp(pattern);
    if (regex.test(value)) return value.replace(regex, replacement);
  }
  return value;
}

function readEnvFile(file: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new DoppelError('E_ENV_FILE', `cannot read env_file ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {
      category: 'config',
      hint: 'check feature.env.env_file (or --env-file)',
    });
  }
  return parseEnv(text) as Record<string, string>;
}
