// The line a client sends before the agent protocol on a network link, proving it holds the session's token; the launcher answers one line.
import { timingSafeEqual } from 'node:crypto';

export const AUTH_PREFIX = 'doppel-auth ';
export const AUTH_OK = 'ok\n';
export const AUTH_DENIED = 'denied\n';
/** A preface longer than this is not ours. */
export const AUTH_MAX_LINE = 256;

export const authLine = (token: string): string => `${AUTH_PREFIX}${token}\n`;

export function tokenMatches(line: string, token: string): boolean {
  if (!line.startsWith(AUTH_PREFIX)) return false;
  const given = Buffer.from(line.slice(AUTH_PREFIX.length));
  const wanted = Buffer.from(token);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}
