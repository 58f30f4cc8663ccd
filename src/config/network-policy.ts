// Decides which outgoing connections and DNS names go through the target, from mirrord's filter syntax `[proto://][host|ip|cidr][:port]`.
import { BlockList, isIP } from 'node:net';
import { DoppelError } from '../errors.ts';
import type { ConcurrentSteal, HttpFilter, HttpRule } from '../protocol/messages.ts';
import type { Filter, HttpFilterConfig, ResolvedConfig } from './schema.ts';

type Way = 'remote' | 'local';

interface Rule {
  protocol: 'tcp' | 'udp' | undefined;
  subnet: BlockList | undefined;
  host: string | undefined;
  port: number | undefined;
}

export interface Destination {
  address: string;
  port: number;
  protocol: 'tcp' | 'udp';
  /** Names this address goes by: the ones the program's lookups gave it, and the filter's names that resolve to it. */
  hostnames?: string[];
}

const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

export function isLoopback(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped) return loopback.check(mapped, 'ipv4');
  return loopback.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

export function parseRule(text: string): Rule {
  const bad = () =>
    new DoppelError('E_CONFIG_INVALID', `invalid network filter "${text}"`, { category: 'config', hint: 'write filters as [tcp://|udp://][host|ip|cidr][:port], e.g. tcp://10.0.0.0/8:5432' });
  let rest = text.trim();
  let protocol: Rule['protocol'];
  const scheme = /^(tcp|udp):\/\//i.exec(rest);
  if (scheme) {
    protocol = scheme[1]!.toLowerCase() as 'tcp' | 'udp';
    rest = rest.slice(scheme[0].length);
  }
  let port: number | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(rest);
  let hostPart = rest;
  if (bracketed) {
    hostPart = bracketed[1]!;
    if (bracketed[2] !== undefined) port = Number(bracketed[2]);
  } else if ((rest.match(/:/g) ?? []).length === 1) {
    const [h, p] = rest.split(':');
    hostPart = h!;
    port = Number(p);
  } else if (/^:\d+$/.test(rest)) {
    hostPart = '';
    port = Number(rest.slice(1));
  }
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) throw bad();
  let subnet: BlockList | undefined;
  let host: string | undefined;
  if (hostPart !== '') {
    const [ip, bits] = hostPart.split('/');
    const family = isIP(ip ?? '');
    if (family !== 0) {
      subnet = new BlockList();
      const type = family === 4 ? 'ipv4' : 'ipv6';
      const prefix = bits === undefined ? (family === 4 ? 32 : 128) : Number(bits);
      if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) throw bad();
      subnet.addSubnet(ip!, prefix, type);
    } else if (bits === undefined && /^[a-z0-9*]([a-z0-9-.*]*)$/i.test(hostPart)) {
      host = hostPart.toLowerCase();
    } else {
      throw bad();
    }
  }
  return { protocol, subnet, host, port };
}

function hostMatches(pattern: string, name: string): boolean {
  const lower = name.toLowerCase().replace(/\.$/, '');
  return pattern.startsWith('*.') ? lower.endsWith(pattern.slice(1)) : lower === pattern;
}

function ruleMatches(rule: Rule, target: Destination): boolean {
  if (rule.protocol && rule.protocol !== target.protocol) return false;
  if (rule.port !== undefined && rule.port !== target.port) return false;
  if (rule.subnet) {
    const family = isIP(target.address);
    return family !== 0 && rule.subnet.check(target.address, family === 4 ? 'ipv4' : 'ipv6');
  }
  if (rule.host) return (target.hostnames ?? []).some((name) => hostMatches(rule.host!, name));
  return true;
}

function compileFilter(filter: Filter | undefined): { way: Way; rules: Rule[] } | undefined {
  if (!filter) return undefined;
  if (filter.remote && filter.local) {
    throw new DoppelError('E_CONFIG_INVALID', 'a network filter takes either "remote" or "local", not both', { category: 'config' });
  }
  if (filter.remote) return { way: 'remote', rules: filter.remote.map(parseRule) };
  if (filter.local) return { way: 'local', rules: filter.local.map(parseRule) };
  return undefined;
}

export interface OutgoingPolicy {
  decide(target: Destination): Way;
  /**
   * The host names the filter lists (wildcards aside, which only match names the program resolved), and where mirrord
   * resolves them to match a connection's address: on the target for a `remote` list with remote DNS on, else locally.
   */
  readonly filterNames: { names: string[]; resolveAt: Way } | undefined;
  /**
   * Whether a connection the filter keeps local, to an address the target's DNS gave, goes to where its name resolves
   * locally (mirrord's rule): only a decision of the filter does, and loopback is never redirected.
   */
  redirectsLocal(target: Destination): boolean;
  /** Every TCP connection to a loopback address is local: the layer need not ask. */
  readonly loopbackTcpLocal: boolean;
  /**
   * Every TCP connection to any other address goes to the target, the target's resolvers included (DNS through the
   * target, src/proxy/route.ts): where the layer can make it there itself, it need not ask either.
   */
  readonly everyTcpRemote: boolean;
  /** Every UDP datagram to any other address goes to the target, its resolvers included, as for `everyTcpRemote`. */
  readonly everyUdpRemote: boolean;
  /** The filter matches host names (wildcards included): the names the program's lookups gave must be remembered. */
  readonly byHostName: boolean;
}

export function createOutgoingPolicy(outgoing: ResolvedConfig['feature']['network']['outgoing'], dns: Pick<ResolvedConfig['feature']['network']['dns'], 'enabled'> = { enabled: true }): OutgoingPolicy {
  const filter = compileFilter(outgoing.filter);
  const enabled = (target: Destination) => (target.protocol === 'tcp' ? outgoing.tcp : outgoing.udp);
  const names = [...new Set((filter?.rules ?? []).flatMap((rule) => (rule.host && !rule.host.includes('*') ? [rule.host] : [])))];
  return {
    // Only a remote filter can send loopback to the target (below); then the layer asks about each connection.
    loopbackTcpLocal: !outgoing.tcp || filter?.way !== 'remote',
    everyTcpRemote: outgoing.tcp && filter === undefined && dns.enabled,
    everyUdpRemote: outgoing.udp && filter === undefined && dns.enabled,
    byHostName: filter?.rules.some((rule) => rule.host !== undefined) ?? false,
    decide(target: Destination): Way {
      if (!enabled(target)) return 'local';
      const listed = filter?.rules.some((rule) => ruleMatches(rule, target)) ?? false;
      // Loopback stays local unless a remote filter names it explicitly.
      if (isLoopback(target.address)) return filter?.way === 'remote' && listed ? 'remote' : 'local';
      if (!filter) return 'remote';
      return filter.way === 'remote' ? (listed ? 'remote' : 'local') : listed ? 'local' : 'remote';
    },
    filterNames: names.length === 0 ? undefined : { names, resolveAt: filter?.way === 'remote' && dns.enabled ? 'remote' : 'local' },
    redirectsLocal: (target) => filter !== undefined && enabled(target) && !isLoopback(target.address),
  };
}

/**
 * mirrord's `unix_streams`: regexes (unanchored, as Rust's is_match) over the path a program connects an AF_UNIX stream
 * socket to (`@name` for an abstract one); a match is the target's socket, anything else stays local.
 */
export function createUnixStreamPolicy(patterns: readonly string[]) {
  const compiled = patterns.map((pattern) => {
    try {
      return new RegExp(pattern);
    } catch (error) {
      throw new DoppelError('E_CONFIG_INVALID', `feature.network.outgoing.unix_streams: ${(error as Error).message}`, { category: 'config', hint: 'write each entry as a regular expression over socket paths, e.g. "redis\\.sock$"' });
    }
  });
  return {
    /** Whether any path is the target's: without patterns the layer does not ask at all. */
    any: compiled.length > 0,
    decide: (name: string): Way => (compiled.some((regex) => regex.test(name)) ? 'remote' : 'local'),
  };
}

export function createDnsPolicy(dns: ResolvedConfig['feature']['network']['dns']) {
  const filter = compileFilter(dns.filter);
  return {
    /** Every name but localhost's is resolved on the target: the policy needs no name to decide. */
    everyNameRemote: dns.enabled && filter === undefined,
    decide(name: string): Way {
      if (!dns.enabled || name.toLowerCase() === 'localhost' || name.toLowerCase().endsWith('.localhost')) return 'local';
      if (!filter) return 'remote';
      const listed = filter.rules.some((rule) => (rule.host ? hostMatches(rule.host, name) : rule.subnet === undefined));
      return filter.way === 'remote' ? (listed ? 'remote' : 'local') : listed ? 'local' : 'remote';
    },
    /**
     * Queries the program sends to the target's resolver itself (c-ares, dig) go through the target whenever DNS does:
     * the name inside a datagram is not looked at, so the filter, which is by name, applies to lookups alone.
     */
    queries(): Way {
      return dns.enabled ? 'remote' : 'local';
    },
  };
}

/**
 * Which of the program's listening sockets take the target's incoming traffic, and how (mirrord's
 * `feature.network.incoming`, with `agent.flush_connections`).
 */
export function createIncomingPolicy(incoming: ResolvedConfig['feature']['network']['incoming'], agent: Pick<ResolvedConfig['agent'], 'flush_connections'>) {
  if (incoming.ports !== undefined && incoming.ignore_ports.length > 0) {
    throw new DoppelError('E_CONFIG_INVALID', 'feature.network.incoming: "ports" and "ignore_ports" exclude each other', { category: 'config', hint: 'list the ports to take in "ports", or the ones to leave local in "ignore_ports"' });
  }
  const remotePorts = new Map(incoming.port_mapping);
  const listenPorts = new Map(incoming.listen_ports);
  const { mode } = incoming;
  const filter = incoming.http_filter === undefined ? undefined : compileHttpFilter(incoming.http_filter);
  const filtered = (remotePort: number) => filter !== undefined && (incoming.http_filter?.ports === undefined || incoming.http_filter.ports.includes(remotePort));
  return {
    /** A socket bound to `address`:`port`: the target's port it takes, and the local port to bind instead; undefined keeps it local. */
    decide(port: number, address: string): { remotePort: number; localPort?: number } | undefined {
      // Port 0 asks for any free port: nothing on the target can be meant by it.
      if (mode === 'off' || port === 0) return undefined;
      if (incoming.ignore_localhost && isLoopback(address)) return undefined;
      // ignore_ports name the program's ports, `ports` the target's (after port_mapping), as in mirrord.
      if (incoming.ignore_ports.includes(port)) return undefined;
      const remotePort = remotePorts.get(port) ?? port;
      if (incoming.ports !== undefined && !incoming.ports.includes(remotePort)) return undefined;
      const localPort = listenPorts.get(port);
      return localPort === undefined ? { remotePort } : { remotePort, localPort };
    },
    /**
     * How a subscribed target port is taken: the mode, the flush, the HTTP filter when the port is one it applies to
     * (a port outside http_filter.ports is taken whole, as in mirrord), whether probes are stolen too, and what a
     * steal does when another session steals the port.
     */
    subscription(remotePort: number): { mode: 'steal' | 'mirror'; flush: boolean; filter?: HttpFilter; stealProbes: boolean; onConcurrentSteal: ConcurrentSteal } {
      if (mode === 'off') throw new Error('incoming traffic is off: nothing is subscribed');
      // mirrord flushes only for a steal: mirrored connections must go on untouched.
      const taken = { mode, flush: mode === 'steal' && agent.flush_connections, stealProbes: incoming.steal_probes, onConcurrentSteal: incoming.on_concurrent_steal };
      return filtered(remotePort) ? { ...taken, filter } : taken;
    },
  };
}

const filterKinds = ['header_filter', 'path_filter', 'method_filter', 'all_of', 'any_of'] as const;

/**
 * mirrord's http_filter as the agent takes it: one kind of filter (a single rule, or all_of / any_of a list of them),
 * each regex checked here so that a bad one is a config error, not a failed subscription.
 */
export function compileHttpFilter(config: HttpFilterConfig): HttpFilter {
  const invalid = (message: string) => new DoppelError('E_CONFIG_INVALID', `feature.network.incoming.http_filter: ${message}`, { category: 'config', hint: 'use one of header_filter, path_filter, method_filter, all_of, any_of; all_of/any_of list objects with one of header, path, method' });
  const given = filterKinds.filter((kind) => config[kind] !== undefined);
  if (given.length !== 1) throw invalid(given.length === 0 ? 'no filter given (only ports)' : `${given.join(' and ')} exclude each other`);
  const rule = (key: 'header' | 'path' | 'method', value: string, where: string): HttpRule => {
    if (key !== 'method') {
      try {
        new RegExp(value, 'i');
      } catch (error) {
        throw invalid(`${where}: ${(error as Error).message}`);
      }
    } else if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/i.test(value)) {
      throw invalid(`${where}: "${value}" is not an HTTP method`);
    }
    return key === 'header' ? { header: value } : key === 'path' ? { path: value } : { method: value };
  };
  const [kind] = given as [(typeof filterKinds)[number]];
  if (kind === 'all_of' || kind === 'any_of') {
    const leaves = config[kind]!;
    if (leaves.length === 0) throw invalid(`${kind} is empty`);
    const rules = leaves.map((leaf, index) => {
      const keys = (['header', 'path', 'method'] as const).filter((key) => leaf[key] !== undefined);
      if (keys.length !== 1) throw invalid(`${kind}[${index}] needs exactly one of header, path, method`);
      return rule(keys[0]!, leaf[keys[0]!]!, `${kind}[${index}].${keys[0]}`);
    });
    return { match: kind === 'all_of' ? 'all' : 'any', rules };
  }
  const key = kind === 'header_filter' ? 'header' : kind === 'path_filter' ? 'path' : 'method';
  return { match: 'all', rules: [rule(key, config[kind]!, kind)] };
}
