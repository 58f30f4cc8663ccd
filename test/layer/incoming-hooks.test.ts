// The layer's incoming hooks with real callers from the host: a C server through every hooked call, and node's libuv.
import { describe, test } from 'node:test';
import { suiteWorld } from '../e2e/suite-world.ts';
import { needsRoot } from '../support/root.ts';
import { cServer, nodeServer } from './incoming-scenario.ts';

describe('the incoming hooks', needsRoot('the incoming hooks'), () => {
  const world = suiteWorld();

  test('C: bind falls back from a taken port and getsockname still reports it; accept and accept4 report the real caller; dup and fork copies keep it; close gives it back', async () => {
    await cServer(world());
  });

  test('node: accept4 without an address, getpeername, and close through syscall(SYS_close)', async () => {
    await nodeServer(world());
  });
});
