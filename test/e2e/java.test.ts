// A Java program (Debian's default JDK, compiled with javac here) under doppel: Files.readString of a remote file,
// Files.list of a remote directory (open + fdopendir), InetAddress of a name only the target resolves, HttpClient GET.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { execIn } from './run-doppel.ts';
import { suiteWorld } from './suite-world.ts';

describe('java under doppel', needsRoot('doppel exec against a process target'), () => {
  const world = suiteWorld();
  let classes: string;
  before(() => {
    classes = mkdtempSync(join(tmpdir(), 'doppel-java-'));
    execFileSync('javac', ['-d', classes, fileURLToPath(new URL('fixtures/RemoteWorld.java', import.meta.url))]);
  });
  after(() => rmSync(classes, { recursive: true, force: true }));

  test('Files.readString, Files.list, InetAddress.getByName and HttpClient see the target', async () => {
    const settings = '/srv/app/config/settings.json';
    const { target, services: { http } } = world();
    const result = await execIn(target.pid, ['java', '-cp', classes, 'RemoteWorld', settings, target.dir.path, http.name, `http://${http.name}:${http.port}/`], { timeoutMs: 120_000 });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, `${target.files[settings]}${target.dir.entries.join(',')}\n${http.address}\n200 ${http.body}\n`);
  });
});
