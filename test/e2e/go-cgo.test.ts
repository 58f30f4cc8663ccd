// A cgo Go program under bin/doppel, built here at test time (Go is test infrastructure only). Its cgo resolver calls
// libc's getaddrinfo, which the layer answers with the target's DNS. Go makes its other system calls itself, not
// through libc (connect among them), so its HTTP GET is not relayed: the test shows that boundary too.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { execIn } from './run-doppel.ts';
import { suiteWorld } from './suite-world.ts';

const gate = needsRoot('a cgo Go program against a process target');
const source = fileURLToPath(new URL('./fixtures/go-lookup/', import.meta.url));

describe('a cgo Go program', gate, () => {
  const world = suiteWorld();
  let dir: string;
  let program: string;
  const pid = () => world().target.pid;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'doppel-go-'));
    program = join(dir, 'go-lookup');
    // Offline and with this machine's toolchain: the program needs nothing but the standard library.
    execFileSync('go', ['build', '-o', program, '.'], { cwd: source, env: { ...process.env, CGO_ENABLED: '1', GOTOOLCHAIN: 'local', GOPROXY: 'off', GOFLAGS: '-mod=mod' }, stdio: ['ignore', 'ignore', 'pipe'] });
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('net.LookupHost through the cgo resolver gets the target\'s answer; the GET dials from the developer machine', async () => {
    const { http } = world().services;
    // GODEBUG=netdns=cgo: Go's own resolver would read resolv.conf with its own system calls, out of the layer's reach.
    const result = await execIn(pid(), [program, http.name, `http://${http.name}:${http.port}/`], { env: { ...process.env, GODEBUG: 'netdns=cgo' } });
    const [address, get] = result.stdout.split('\n');
    assert.equal(address, http.address, result.stderr);
    assert.match(get ?? '', /get error: .*dial tcp .*: connect: (no route to host|network is unreachable)/);
  });
});
