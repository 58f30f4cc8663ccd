// The incoming policy: which of the program's listening sockets take the target's traffic, on which port, how, and the local port to bind.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createIncomingPolicy } from '../../src/config/network-policy.ts';
import { resolveConfig } from '../../src/config/resolve.ts';
import type { ConfigFile } from '../../src/config/schema.ts';

const policyFor = (incoming: NonNullable<NonNullable<NonNullable<ConfigFile['feature']>['network']>['incoming']> | undefined, agent: ConfigFile['agent'] = {}) => {
  const config = resolveConfig({ feature: { network: incoming === undefined ? {} : { incoming } }, agent });
  return createIncomingPolicy(config.feature.network.incoming, config.agent);
};

test('by default every port is mirrored, on the same port of the target, with no flush', () => {
  const policy = policyFor(undefined);
  assert.deepEqual(policy.decide(8080, '0.0.0.0'), { remotePort: 8080 });
  assert.deepEqual(policy.decide(80, '127.0.0.1'), { remotePort: 80 });
  assert.deepEqual(policy.decide(443, '::'), { remotePort: 443 });
  assert.deepEqual(policy.subscription(8080), { mode: 'mirror', flush: false, stealProbes: false, onConcurrentSteal: 'abort' });
});

test('a mode string, true and false read as mirrord reads them', () => {
  assert.deepEqual(policyFor('steal').subscription(8080), { mode: 'steal', flush: true, stealProbes: false, onConcurrentSteal: 'abort' });
  assert.deepEqual(policyFor(true).subscription(8080), { mode: 'mirror', flush: false, stealProbes: false, onConcurrentSteal: 'abort' });
  assert.equal(policyFor(false).decide(8080, '0.0.0.0'), undefined);
  assert.equal(policyFor('off').decide(8080, '0.0.0.0'), undefined);
  assert.equal(policyFor({ mode: 'off', ports: [8080] }).decide(8080, '0.0.0.0'), undefined);
  assert.throws(() => policyFor('off').subscription(8080), /incoming traffic is off/);
});

test('agent.flush_connections applies to a steal only', () => {
  assert.deepEqual(policyFor({ mode: 'steal' }, { flush_connections: false }).subscription(8080), { mode: 'steal', flush: false, stealProbes: false, onConcurrentSteal: 'abort' });
  assert.deepEqual(policyFor({ mode: 'mirror' }, { flush_connections: true }).subscription(8080), { mode: 'mirror', flush: false, stealProbes: false, onConcurrentSteal: 'abort' });
});

test('port 0 (any free port) always stays local', () => {
  assert.equal(policyFor('steal').decide(0, '0.0.0.0'), undefined);
});

test('ignore_localhost keeps loopback binds local, and only those', () => {
  const policy = policyFor({ ignore_localhost: true });
  assert.equal(policy.decide(8080, '127.0.0.1'), undefined);
  assert.equal(policy.decide(8080, '127.0.0.53'), undefined);
  assert.equal(policy.decide(8080, '::1'), undefined);
  assert.equal(policy.decide(8080, '::ffff:127.0.0.1'), undefined);
  assert.deepEqual(policy.decide(8080, '0.0.0.0'), { remotePort: 8080 });
  assert.deepEqual(policyFor({ ignore_localhost: false }).decide(8080, '127.0.0.1'), { remotePort: 8080 });
});

test('port_mapping takes the program\'s port to another target port; ports names target ports, ignore_ports the program\'s', () => {
  const mapped = policyFor({ port_mapping: [[9333, 80]] });
  assert.deepEqual(mapped.decide(9333, '0.0.0.0'), { remotePort: 80 });
  assert.deepEqual(mapped.decide(80, '0.0.0.0'), { remotePort: 80 });

  const only = policyFor({ port_mapping: [[9333, 80]], ports: [80] });
  assert.deepEqual(only.decide(9333, '0.0.0.0'), { remotePort: 80 });
  assert.equal(only.decide(9334, '0.0.0.0'), undefined);

  const ignored = policyFor({ port_mapping: [[9333, 80]], ignore_ports: [9333, 9999] });
  assert.equal(ignored.decide(9333, '0.0.0.0'), undefined);
  assert.equal(ignored.decide(9999, '0.0.0.0'), undefined);
  assert.deepEqual(ignored.decide(8080, '0.0.0.0'), { remotePort: 8080 });
});

test('listen_ports name the local port to bind for a requested one', () => {
  const policy = policyFor({ listen_ports: [[80, 4480]], port_mapping: [[80, 8080]] });
  assert.deepEqual(policy.decide(80, '0.0.0.0'), { remotePort: 8080, localPort: 4480 });
  assert.deepEqual(policy.decide(81, '0.0.0.0'), { remotePort: 81 });
});

test('ports and ignore_ports together are a config error naming the key', () => {
  assert.throws(() => policyFor({ ports: [80], ignore_ports: [81] }), (error: Error & { code?: string }) => {
    assert.equal(error.code, 'E_CONFIG_INVALID');
    assert.match(error.message, /^feature\.network\.incoming: "ports" and "ignore_ports" exclude each other$/);
    return true;
  });
});

test('http_filter: each kind becomes the rules the agent applies, on every port unless http_filter.ports names some', () => {
  const header = policyFor({ mode: 'steal', http_filter: { header_filter: '^x-dev: alice$' } });
  assert.deepEqual(header.subscription(8080), { mode: 'steal', flush: true, stealProbes: false, onConcurrentSteal: 'abort', filter: { match: 'all', rules: [{ header: '^x-dev: alice$' }] } });
  assert.deepEqual(header.subscription(9999).filter, { match: 'all', rules: [{ header: '^x-dev: alice$' }] });
  assert.deepEqual(policyFor({ http_filter: { path_filter: '^/api' } }).subscription(80).filter, { match: 'all', rules: [{ path: '^/api' }] });
  assert.deepEqual(policyFor({ http_filter: { method_filter: 'post' } }).subscription(80).filter, { match: 'all', rules: [{ method: 'post' }] });
  assert.deepEqual(policyFor({ http_filter: { any_of: [{ header: 'x: 1' }, { path: '/a' }] } }).subscription(80).filter, { match: 'any', rules: [{ header: 'x: 1' }, { path: '/a' }] });
  assert.deepEqual(policyFor({ http_filter: { all_of: [{ method: 'GET' }, { path: '/a' }] } }).subscription(80).filter, { match: 'all', rules: [{ method: 'GET' }, { path: '/a' }] });

  // A port outside http_filter.ports is taken whole, as mirrord takes it.
  const some = policyFor({ mode: 'steal', http_filter: { path_filter: '/a', ports: [80] } });
  assert.deepEqual(some.subscription(80).filter, { match: 'all', rules: [{ path: '/a' }] });
  assert.deepEqual(some.subscription(8080), { mode: 'steal', flush: true, stealProbes: false, onConcurrentSteal: 'abort' });
  // http_filter.ports name the target's ports, after port_mapping.
  assert.deepEqual(policyFor({ http_filter: { path_filter: '/a', ports: [80] }, port_mapping: [[3000, 80]] }).decide(3000, '0.0.0.0'), { remotePort: 80 });
});

test('steal_probes (doppel\'s own key) reaches the subscription; it is off by default', () => {
  assert.equal(policyFor({ mode: 'steal', steal_probes: true }).subscription(80).stealProbes, true);
  assert.equal(policyFor({ mode: 'steal' }).subscription(80).stealProbes, false);
});

test('http_filter mistakes are config errors naming the key', () => {
  const rejects = (http_filter: NonNullable<Parameters<typeof policyFor>[0]> & object, message: RegExp) =>
    assert.throws(() => policyFor({ mode: 'steal', http_filter } as never), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'E_CONFIG_INVALID');
      assert.match(error.message, message);
      return true;
    });
  rejects({ header_filter: 'a', path_filter: 'b' } as never, /^feature\.network\.incoming\.http_filter: header_filter and path_filter exclude each other$/);
  rejects({ ports: [80] } as never, /http_filter: no filter given \(only ports\)$/);
  rejects({ any_of: [] } as never, /http_filter: any_of is empty$/);
  rejects({ all_of: [{ header: 'a', path: 'b' }] } as never, /http_filter: all_of\[0\] needs exactly one of header, path, method$/);
  rejects({ header_filter: '(unclosed' } as never, /http_filter: header_filter: Invalid regular expression/);
  rejects({ any_of: [{ path: '/ok' }, { path: '[' }] } as never, /http_filter: any_of\[1\]\.path: Invalid regular expression/);
  rejects({ method_filter: 'GET POST' } as never, /http_filter: method_filter: "GET POST" is not an HTTP method$/);
});
