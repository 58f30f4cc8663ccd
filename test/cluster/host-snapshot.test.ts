// The host comparison of the cluster suite, checked against real iptables in a throwaway network namespace:
// tables the kernel loaded with empty built-in chains compare equal to no tables at all; anything we add does not.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { significantRules } from './host-snapshot.ts';

/** Runs `setup` in a fresh network namespace (where no table was ever loaded), then dumps both families. */
function rulesAfter(setup: string): string[] {
  const script = `${setup}\necho '@@'; iptables-save; echo '@@'; ip6tables-save`;
  const [, v4 = '', v6 = ''] = execFileSync('unshare', ['--net', 'sh', '-ec', script], { encoding: 'utf8' }).split('@@\n');
  return [...significantRules('iptables-save', v4), ...significantRules('ip6tables-save', v6)];
}

describe('host snapshot: iptables comparison', needsRoot('the iptables comparison'), () => {
  const pristine = rulesAfter('true');

  test('a namespace where no table was ever loaded has no rules', () => {
    assert.deepEqual(pristine, []);
  });

  test('built-in tables loaded since, with empty built-in chains, compare equal to none', () => {
    const loaded = rulesAfter(['filter', 'nat', 'mangle'].map((t) => `iptables -t ${t} -N doppel-probe; iptables -t ${t} -X doppel-probe; ip6tables -t ${t} -N doppel-probe; ip6tables -t ${t} -X doppel-probe`).join('\n'));
    assert.deepEqual(loaded, pristine);
  });

  test('a chain left behind is seen', () => {
    assert.deepEqual(rulesAfter('iptables -t nat -N KUBE-SERVICES'), ['iptables-save nat: :KUBE-SERVICES -']);
  });

  test('a rule left in a built-in chain is seen', () => {
    assert.deepEqual(rulesAfter('ip6tables -A FORWARD -d 2001:db8::/64 -j DROP'), ['ip6tables-save filter: -A FORWARD -d 2001:db8::/64 -j DROP']);
  });

  test('a built-in chain whose policy was changed is seen', () => {
    assert.deepEqual(rulesAfter('iptables -P FORWARD DROP'), ['iptables-save filter: :FORWARD DROP']);
  });
});
