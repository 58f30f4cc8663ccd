// --trace's line for one call: each agent round trip in turn, and those made at once (a port subscribed on every
// replica's agent) as one step, so that no share of the time comes out negative.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hopText } from '../../src/cli/exec/call-trace.ts';

test('round trips one after the other, then two at once: each share of the time in order, none negative', () => {
  assert.equal(hopText(0, 10, [{ op: 'fs.stat', sent: 1, answered: 4, servedMs: 1 }, { op: 'fs.open', sent: 5, answered: 9, servedMs: 2 }]), 'proxy 1.000 | fs.stat link 2.000 + agent 1.000 | proxy 1.000 | fs.open link 2.000 + agent 2.000 | proxy 1.000 = 10.000 ms');
  const together = hopText(0, 100, [
    { op: 'incoming.subscribe', sent: 1, answered: 90, servedMs: 85 },
    { op: 'incoming.subscribe', sent: 2, answered: 96, servedMs: 90 },
    { op: 'fs.stat', sent: 97, answered: 98 },
  ]);
  assert.equal(together, 'proxy 1.000 | (incoming.subscribe link 4.000 + agent 85.000 & incoming.subscribe link 4.000 + agent 90.000) | proxy 1.000 | fs.stat link 1.000 | proxy 2.000 = 100.000 ms');
  assert.doesNotMatch(together, /-\d/);
});
