// feature.network.outgoing.unix_streams end to end: a connect() to a Unix socket path the patterns name reaches the
// target's socket (a redis on a socket file in its mount namespace, a server on an abstract name in its network
// namespace); every other Unix socket stays the developer machine's.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { leftoversAfter } from './leftovers.ts';
import { execIn, ok } from './run-doppel.ts';

const gate = needsRoot('unix_streams against a process target');

describe('unix_streams', gate, () => {
  let world: World;
  let dir: string;
  let local: Server;
  let localPath: string;
  let config: string;
  const pid = () => world.target.pid;
  const unix = () => world.target.unix!;

  before(async () => {
    world = await createWorld({ unixSockets: true });
    dir = mkdtempSync(join(tmpdir(), `${world.name}-unix-`));
    localPath = join(dir, 'local.sock');
    local = createServer((socket) => socket.end('from the developer machine'));
    await new Promise<void>((resolve) => local.listen(localPath, resolve));
    config = join(dir, 'unix.json');
    writeFileSync(config, JSON.stringify({ feature: { network: { outgoing: { unix_streams: ['redis\\.sock$', '^@doppel-'] } } } }));
  });
  after(async () => {
    local?.close();
    await world?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  afterEach(async () => {
    if (!world) return;
    assert.deepEqual(await leftoversAfter(pid()), { agents: [], dirs: [] }, 'a session left an agent process or a socket directory behind');
  });

  test('redis-cli -s reaches the target\'s redis on its socket file', async () => {
    assert.equal(ok(await execIn(pid(), ['redis-cli', '-s', unix().redisPath, 'GET', unix().key], { flags: ['-f', config] })).trim(), unix().value);
  });

  test('python3 reaches a server on the target\'s abstract name; getpeername says that name', async () => {
    const script = `import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect("\\0${unix().abstractName}"); print(repr(s.getpeername())); sys.stdout.write(s.recv(4096).decode())`;
    const [peer, greeting] = ok(await execIn(pid(), ['python3', '-c', script], { flags: ['-f', config] })).split('\n');
    assert.equal(peer, `b'\\x00${unix().abstractName}'`);
    assert.equal(greeting, unix().greeting);
  });

  test('a socket path the patterns do not name stays local', async () => {
    const script = `import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(${JSON.stringify(localPath)}); sys.stdout.write(s.recv(4096).decode())`;
    assert.equal(ok(await execIn(pid(), ['python3', '-c', script], { flags: ['-f', config] })), 'from the developer machine');
  });

  test('without unix_streams the target\'s socket is not reached', async () => {
    const result = await execIn(pid(), ['redis-cli', '-s', unix().redisPath, 'GET', unix().key]);
    assert.doesNotMatch(result.stdout, new RegExp(unix().value));
  });
});
