// The agent's log: one line per event on stderr, prefixed `agent:`, filtered by level.
import { DoppelError } from '../errors.ts';

const levels = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof levels)[number];

export interface Log {
  error(message: string): void;
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
}

export function parseLogLevel(value: string): LogLevel {
  const level = value.toLowerCase();
  if ((levels as readonly string[]).includes(level)) return level as LogLevel;
  throw new DoppelError('E_AGENT_USAGE', `unknown log level "${value}"`, { category: 'usage', hint: `use one of ${levels.join(', ')}` });
}

export function createLog(level: LogLevel): Log {
  const limit = levels.indexOf(level);
  const at = (which: LogLevel) => (message: string) => {
    if (levels.indexOf(which) <= limit) process.stderr.write(`agent: ${which}: ${message}\n`);
  };
  return { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') };
}
