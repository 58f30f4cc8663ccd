// Name resolution as the target does it: its /etc/hosts, then its resolv.conf's nameservers, search list and ndots, queried from its network namespace.
import { Resolver } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { RemoteError } from '../protocol/errors.ts';
import type { Operations } from '../protocol/messages.ts';
import { resolveInRoot } from './root-path.ts';

type Lookup = Operations['dns.lookup'];
type Found = Lookup['result'];

export interface ResolvConf {
  nameservers: string[];
  search: string[];
  ndots: number;
  timeoutMs: number;
  attempts: number;
}

export function parseResolvConf(text: string): ResolvConf {
  const conf: ResolvConf = { nameservers: [], search: [], ndots: 1, timeoutMs: 5000, attempts: 2 };
  for (const raw of text.split('\n')) {
    const [key, ...values] = raw.replace(/[#;].*$/, '').trim().split(/\s+/);
    if (key === 'nameserver' && values[0] && conf.nameservers.length < 3) conf.nameservers.push(values[0]);
    // As in glibc, the last of `search` and `domain` wins.
    else if (key === 'search') conf.search = values;
    else if (key === 'domain' && values[0]) conf.search = [values[0]];
    else if (key === 'options') {
      for (const option of values) {
        const [name, value] = option.split(':');
        const n = Number(value);
        if (name === 'ndots' && Number.isInteger(n)) conf.ndots = Math.min(n, 15);
        if (name === 'timeout' && Number.isInteger(n)) conf.timeoutMs = Math.max(1, n) * 1000;
        if (name === 'attempts' && Number.isInteger(n)) conf.attempts = Math.max(1, n);
      }
    }
  }
  if (conf.nameservers.length === 0) conf.nameservers.push('127.0.0.1');
  return conf;
}

/** The names glibc tries, in order, for `name` under `conf`. */
export function candidateNames(name: string, conf: ResolvConf): string[] {
  if (name.endsWith('.')) return [name.slice(0, -1)];
  const searched = conf.search.map((domain) => `${name}.${domain}`);
  const dots = name.split('.').length - 1;
  return dots >= conf.ndots ? [name, ...searched] : [...searched, name];
}

export function hostsLookup(text: string, name: string, family: 0 | 4 | 6): Found | undefined {
  const wanted = name.replace(/\.$/, '').toLowerCase();
  // Most names are in no line at all: found so without splitting every line (a lookup's largest allocation).
  if (!text.toLowerCase().includes(wanted)) return undefined;
  const addresses: Found['addresses'] = [];
  let canonicalName = '';
  for (const raw of text.split('\n')) {
    const [address, ...names] = raw.replace(/#.*$/, '').trim().split(/\s+/);
    if (!address || names.length === 0 || !names.some((n) => n.toLowerCase() === wanted)) continue;
    const f = isIP(address);
    if (f === 0 || (family !== 0 && f !== family)) continue;
    addresses.push({ address, family: f as 4 | 6 });
    canonicalName ||= names[0]!;
  }
  return addresses.length > 0 ? { addresses, canonicalName } : undefined;
}

export function createDns(root: string): (args: Lookup['args']) => Promise<Found> {
  // Small files, read synchronously (see resolveInRoot): two trips through the thread pool per query are most of a
  // lookup's time in the agent.
  const readTargetFile = async (path: string) => {
    try {
      return readFileSync((await resolveInRoot(root, path, true)).host, 'utf8');
    } catch {
      return '';
    }
  };
  // A resolver (a c-ares channel) per resolv.conf as it reads now: made again only when the file changes.
  let cached: { text: string; conf: ResolvConf; resolver: Resolver } | undefined;
  const resolverFor = (text: string) => {
    if (cached?.text !== text) {
      const conf = parseResolvConf(text);
      const resolver = new Resolver({ timeout: conf.timeoutMs, tries: conf.attempts });
      resolver.setServers(conf.nameservers);
      cached = { text, conf, resolver };
    }
    return cached;
  };
  return async ({ name, family }) => {
    const literal = addressFamily(name);
    if (literal !== 0) return { addresses: [{ address: name, family: literal as 4 | 6 }], canonicalName: name };
    // Read at every query: the target may change them, and they are small.
    const fromHosts = hostsLookup(await readTargetFile('/etc/hosts'), name, family);
    if (fromHosts) return fromHosts;
    const { conf, resolver } = resolverFor(await readTargetFile('/etc/resolv.conf'));
    let failure: string | undefined;
    // The candidates are asked at once, and the answer is still the first in glibc's order that has addresses: with
    // Kubernetes' ndots:5 a service's full name is tried under three search domains first, and four round trips to
    // the nameserver one after another were most of a lookup's time. A single label (a Service's short name) is
    // nearly always found under the first search domain (the pod's own namespace): it is asked alone first, and the
    // others only if that fails (one query where there were four: 0.40-0.50 -> 0.32-0.35 ms in the agent).
    const candidates = candidateNames(name, conf);
    const ask = (candidate: string) => Promise.all([family === 6 ? [] : query(() => resolver.resolve4(candidate)), family === 4 ? [] : query(() => resolver.resolve6(candidate))]);
    const answers = [ask(candidates[0]!)];
    const askRest = () => answers.push(...candidates.slice(1).map(ask));
    if (name.includes('.')) askRest();
    for (const [index, candidate] of candidates.entries()) {
      if (index === answers.length) askRest();
      const [v4, v6] = await answers[index]!;
      for (const result of [v4, v6]) if (typeof result === 'string') failure ??= result;
      const addresses = [
        ...(Array.isArray(v4) ? v4.map((address) => ({ address, family: 4 as const })) : []),
        ...(Array.isArray(v6) ? v6.map((address) => ({ address, family: 6 as const })) : []),
      ];
      if (addresses.length > 0) return { addresses, canonicalName: candidate };
    }
    if (failure) throw new RemoteError('EAI_AGAIN', `${name}: temporary failure in name resolution (${failure})`);
    throw new RemoteError('ENOTFOUND', `${name}: name not known to the target's resolver`);
  };
}

/**
 * 4 or 6 for an address literal, else 0. A name (no colon, not only digits and dots) skips `isIP`, whose IPv6
 * pattern V8 compiles at its first use and again at its second: 4-5 ms of a fresh agent's first lookups.
 */
function addressFamily(name: string): number {
  return name.includes(':') || /^[\d.]+$/.test(name) ? isIP(name) : 0;
}

/** The addresses, or the error code for a failure that is not a plain "no such name". */
async function query(run: () => Promise<string[]>): Promise<string[] | string> {
  try {
    return await run();
  } catch (error) {
    const code = (error as { code?: string }).code ?? 'EIO';
    return code === 'ENOTFOUND' || code === 'ENODATA' ? [] : code;
  }
}
