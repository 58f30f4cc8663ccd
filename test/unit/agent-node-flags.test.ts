// The agent's Node.js flags are written twice: in src/agent/node-flags.ts for the agents the CLI and the launcher
// spawn, and in bin/doppel (a shell script) for the one it starts beside the CLI. They must say the same.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { AGENT_NODE_FLAGS } from '../../src/agent/node-flags.ts';

test('bin/doppel starts the agent with AGENT_NODE_FLAGS, and no other flag', () => {
  const script = readFileSync(new URL('../../bin/doppel', import.meta.url), 'utf8');
  const start = /"\$node" ((?:--[a-z-]+(?:=\S+)? )*)\\\n\s+"\$root\/dist\/agent\/main\.js"/.exec(script);
  assert.ok(start, 'no agent start found in bin/doppel');
  assert.deepEqual(start[1]!.trim().split(' '), AGENT_NODE_FLAGS);
});
