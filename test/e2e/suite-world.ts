// A test world for one describe block: made before its tests, destroyed after them, and checked after each test for
// what a session must not leave behind (by default an agent process or a socket directory).
import assert from 'node:assert/strict';
import { after, afterEach, before } from 'node:test';
import { createWorld, type World } from '../world/world.ts';
import { leftoversAfter } from './leftovers.ts';

const noAgentsNorDirs = async (world: World) =>
  assert.deepEqual(await leftoversAfter(world.target.pid), { agents: [], dirs: [] }, 'a session left an agent process or a socket directory behind');

/** Call inside describe(); the returned function gives the world once `before` has run. */
export function suiteWorld(nothingLeft: (world: World) => Promise<void> = noAgentsNorDirs): () => World {
  let world: World | undefined;
  before(async () => {
    world = await createWorld();
  });
  after(async () => {
    await world?.destroy();
  });
  afterEach(async () => {
    if (world) await nothingLeft(world);
  });
  return () => world!;
}
