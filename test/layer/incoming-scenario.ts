// The incoming hooks driven by real callers: incoming-server.c (bind on a port taken locally, getsockname, listen,
// accept, accept4, getpeername, dup/fork/close) and a node server (libuv: accept4, getpeername, syscall(SYS_close)).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serveUnderDoppel, type RunningServer } from '../e2e/serve-under-doppel.ts';
import { curlTarget, targetAnswersAgain } from '../e2e/target-http.ts';
import type { World } from '../world/world.ts';

const source = fileURLToPath(new URL('incoming-server.c', import.meta.url));

/** Connects from the host to the target's port and reads the server's one line; also says which port we called from. */
async function call(world: World): Promise<{ line: string; from: string }> {
  const socket = connect(world.target.http.port, world.target.address);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const from = `${socket.localAddress}:${socket.localPort}`;
  let line = '';
  // A caller that reached the target's HTTP server instead would wait for an answer that never comes.
  socket.setTimeout(5000, () => socket.destroy(new Error(`no answer from the server within 5 s (got "${line}")`)));
  socket.setEncoding('utf8').on('data', (chunk: string) => (line += chunk));
  await new Promise<void>((resolve, reject) => socket.once('end', resolve).once('error', reject));
  socket.destroy();
  return { line: line.trim(), from };
}

async function ended(server: RunningServer): Promise<string> {
  const result = await server.finished;
  assert.equal(result.status, 0, `doppel exited ${result.status}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  return result.stderr;
}

/** Runs the C server with the port taken on the host (so bind falls back); returns doppel's stderr. */
export async function cServer(world: World, env?: NodeJS.ProcessEnv): Promise<string> {
  const port = world.target.http.port;
  const dir = mkdtempSync(join(tmpdir(), 'doppel-incoming-'));
  const holder = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => holder.once('error', reject).listen(port, '0.0.0.0', resolve));
  try {
    const binary = join(dir, 'incoming-server');
    execFileSync('cc', ['-Wall', '-Wextra', '-Werror', '-o', binary, source]);
    const server = serveUnderDoppel(world.target.pid, [binary, String(port)], { flags: ['--steal'], env });
    assert.equal((await server.line(/^bound (\d+)$/))[1], String(port));
    assert.equal((await server.line(/^listening (\d+)$/))[1], String(port));
    const local = `${world.target.address}:${port}`;
    const first = await call(world);
    assert.equal(first.line, `accept from=${first.from} peer=${first.from} local=${local}`);
    await server.line(/^copies closed$/);
    const second = await call(world);
    assert.equal(second.line, `accept4 from=- peer=${second.from} local=${local}`);
    await server.line(/^closed$/);
    await targetAnswersAgain(world);
    server.signal('SIGTERM');
    return await ended(server);
  } finally {
    holder.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A node server through one stolen request and its close; returns doppel's stderr. */
export async function nodeServer(world: World, env?: NodeJS.ProcessEnv): Promise<string> {
  const script = `const s = require('http').createServer((q, r) => { r.end('local ' + q.socket.remoteAddress); s.close(); })
    .listen(Number(process.argv[1]), () => console.log('ready'));`;
  const server = serveUnderDoppel(world.target.pid, ['node', '-e', script, String(world.target.http.port)], { flags: ['--steal'], env });
  await server.line(/^ready$/);
  assert.equal(await curlTarget(world, '/'), `local ::ffff:${world.target.hostAddress}`);
  const stderr = await ended(server);
  await targetAnswersAgain(world);
  return stderr;
}
