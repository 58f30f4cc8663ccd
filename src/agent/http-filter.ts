// Which HTTP requests a filtered subscription takes (mirrord's http_filter semantics), and which are Kubernetes probes.
import type { IncomingMessage } from 'node:http';
import { RemoteError } from '../protocol/errors.ts';
import type { HttpFilter, HttpRule } from '../protocol/messages.ts';

/** What a rule sees of a request: all the parser gives, before any of its body is read. */
export type RequestHead = Pick<IncomingMessage, 'method' | 'url' | 'rawHeaders'>;

export type RequestTest = (request: RequestHead) => boolean;

/** Compiles a filter as the client sent it; a malformed one is the client's error (EINVAL), never a crash. */
export function compileFilter(filter: HttpFilter): RequestTest {
  if (typeof filter !== 'object' || filter === null || (filter.match !== 'all' && filter.match !== 'any') || !Array.isArray(filter.rules) || filter.rules.length === 0) {
    throw new RemoteError('EINVAL', 'an HTTP filter is { match: "all" | "any", rules: [at least one rule] }');
  }
  const tests = filter.rules.map(compileRule);
  return filter.match === 'all' ? (request) => tests.every((test) => test(request)) : (request) => tests.some((test) => test(request));
}

function compileRule(rule: HttpRule): RequestTest {
  const keys = typeof rule === 'object' && rule !== null ? Object.keys(rule) : [];
  const key = keys[0] ?? '';
  const value = (rule as Record<string, unknown>)[key];
  if (keys.length !== 1 || typeof value !== 'string') throw new RemoteError('EINVAL', 'an HTTP filter rule has exactly one of header, path or method, a string');
  if (key === 'method') {
    const method = value.toUpperCase();
    return (request) => request.method === method;
  }
  const regex = compileRegex(value, key);
  if (key === 'header') {
    return ({ rawHeaders }) => {
      for (let i = 0; i + 1 < rawHeaders.length; i += 2) if (regex.test(`${rawHeaders[i]}: ${rawHeaders[i + 1]}`)) return true;
      return false;
    };
  }
  if (key === 'path') {
    return ({ url }) => {
      const target = requestPath(url ?? '');
      const query = target.indexOf('?');
      return regex.test(query === -1 ? target : target.slice(0, query)) || (query !== -1 && regex.test(target));
    };
  }
  throw new RemoteError('EINVAL', `unknown HTTP filter rule "${key}"`);
}

function compileRegex(source: string, key: string): RegExp {
  try {
    return new RegExp(source, 'i');
  } catch (error) {
    throw new RemoteError('EINVAL', `${key} filter: ${(error as Error).message}`);
  }
}

/** The path and query of a request target, also in absolute form (`GET http://host/path`, as proxies are asked). */
function requestPath(target: string): string {
  if (target.startsWith('/')) return target;
  const authority = /^[a-z][a-z0-9+.-]*:\/\/[^/?]*/i.exec(target);
  return authority ? target.slice(authority[0].length) || '/' : target;
}

/** The kubelet's HTTP probes say who they are; they stay with the target so that a steal never makes it unready. */
export function isProbe({ rawHeaders }: RequestHead): boolean {
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() === 'user-agent' && rawHeaders[i + 1]!.startsWith('kube-probe/')) return true;
  }
  return false;
}
