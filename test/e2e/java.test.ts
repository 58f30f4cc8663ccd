// A Java program (Debian's default JDK, compiled with javac here) under doppel: Files.readString of a remote file,
// Files.list of a remote directory (open + fdopendir), InetAddress of a name only the target resolves, HttpClient GET;
// and UDP clients, a DatagramSocket and a DatagramChannel under a Selector.
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
    execFileSync('javac', ['-d', classes, ...['RemoteWorld', 'DatagramEcho'].map((name) => fileURLToPath(new URL(`fixtures/${name}.java`, import.meta.url)))]);
  });
  after(() => rmSync(classes, { recursive: true, force: true }));

  test('Files.readString, Files.list, InetAddress.getByName and HttpClient see the target', async () => {
    const settings = '/srv/app/config/settings.json';
    const { target, services: { http } } = world();
    const result = await execIn(target.pid, ['java', '-cp', classes, 'RemoteWorld', settings, target.dir.path, http.name, `http://${http.name}:${http.port}/`], { timeoutMs: 120_000 });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, `${target.files[settings]}${target.dir.entries.join(',')}\n${http.address}\n200 ${http.body}\n`);
  });

  test('a DatagramSocket and a selected DatagramChannel, bound to any port, exchange with a service only the pod reaches from there', async () => {
    const { target, services: { udpEcho } } = world();
    const result = await execIn(target.pid, ['java', '-cp', classes, 'DatagramEcho', udpEcho.address, String(udpEcho.port)], { timeoutMs: 120_000, env: { ...process.env, DOPPEL_LAYER_LOG: 'debug' } });
    assert.equal(result.status, 0, result.stderr);
    const from = `from ${udpEcho.address}:${udpEcho.port}`;
    assert.equal(result.stdout, [`socket@${udpEcho.seenFrom} ${from} same port true`, `channel@${udpEcho.seenFrom} ${from}`, `again@${udpEcho.seenFrom} ${from}`, 'channel same port true', ''].join('\n'));
    // Each socket was made in the target's network at its first datagram (not relayed), on the port it had here.
    assert.equal(result.stderr.match(/udp: made the socket in process \d+'s network/g)?.length, 2, result.stderr.slice(-3000));
  });
});
