// A Java program (Debian's default JDK, compiled with javac here) under doppel: Files.readString of a remote file,
// Files.list of a remote directory (open + fdopendir), InetAddress of a name only the target resolves, HttpClient GET.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { leftoversAfter } from './leftovers.ts';
import { execIn } from './run-doppel.ts';

describe('java under doppel', needsRoot('doppel exec against a process target'), () => {
  let world: World;
  let classes: string;
  before(async () => {
    classes = mkdtempSync(join(tmpdir(), 'doppel-java-'));
    execFileSync('javac', ['-d', classes, fileURLToPath(new URL('fixtures/RemoteWorld.java', import.meta.url))]);
    world = await createWorld();
  });
  after(async () => {
    await world?.destroy();
    rmSync(classes, { recursive: true, force: true });
  });
  afterEach(async () => {
    if (world) assert.deepEqual(await leftoversAfter(world.target.pid), { agents: [], dirs: [] });
  });

  test('Files.readString, Files.list, InetAddress.getByName and HttpClient see the target', async () => {
    const settings = '/srv/app/config/settings.json';
    const { http } = world.services;
    const result = await execIn(world.target.pid, ['java', '-cp', classes, 'RemoteWorld', settings, world.target.dir.path, http.name, `http://${http.name}:${http.port}/`], { timeoutMs: 120_000 });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, `${world.target.files[settings]}${world.target.dir.entries.join(',')}\n${http.address}\n200 ${http.body}\n`);
  });
});
