// Every write-mode hook from a C program against a real agent: the target holds what it wrote.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { writeHooks } from './write-scenario.ts';

describe('the write hooks', needsRoot('doppel exec against a process target'), () => {
  let world: World;
  before(async () => {
    world = await createWorld();
  });
  after(async () => {
    await world?.destroy();
  });

  test('creat/open/fopen, write, pwrite, ftruncate, fsync, dup/fork, mkdir, rmdir, unlink, rename, chmod and their *at forms', async () => {
    assert.equal(await writeHooks(world), '');
  });
});
