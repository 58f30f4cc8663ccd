// A proxy that does not know the layer's hello (it closes the connection, as an older build's wire decoder does on an
// unknown op): the layer reconnects without it and asks the proxy about every path, so the program runs unchanged.
// The proxy here is a fake: both ship together, so an older proxy cannot be had for real.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { Op, REQ_HEADER, RESP_HEADER } from '../../src/proxy/layer-wire.ts';

const layer = fileURLToPath(new URL('../../layer/build/libdoppel.so', import.meta.url));

test('a failed hello: the layer falls back to asking the proxy about every path', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'doppel-hello-'));
  const socketPath = join(dir, 'layer.sock');
  const seen: { op: number; path: string }[] = [];
  const server = createServer((socket) => {
    let buffered = Buffer.alloc(0);
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= REQ_HEADER && buffered.length >= REQ_HEADER + buffered.readUInt32LE(0)) {
        const length = buffered.readUInt32LE(0);
        const op = buffered.readUInt32LE(4);
        const header = buffered.subarray(0, REQ_HEADER);
        const payload = buffered.subarray(REQ_HEADER, REQ_HEADER + length);
        buffered = buffered.subarray(REQ_HEADER + length);
        if (op === Op.hello) {
          seen.push({ op, path: '' });
          socket.destroy();
          return;
        }
        seen.push({ op, path: payload.subarray(4, payload.indexOf(0, 4)).toString() });
        // Every answer "local" (the one a proxy gives for /usr), echoing the request's sequence number.
        const answer = Buffer.alloc(RESP_HEADER);
        answer.writeInt32LE(1, 4);
        answer.writeUInt32LE(header.readUInt32LE(8), 8);
        socket.write(answer);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  try {
    // Run asynchronously: the fake proxy answers on this process's event loop.
    const child = spawn('stat', ['-c', '%F', '/usr/bin/env', '/usr/bin/env'], { env: { ...process.env, LD_PRELOAD: layer, DOPPEL_LAYER_SOCKET: socketPath, DOPPEL_LAYER_LOG: 'debug' } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (data: string) => (stdout += data));
    child.stderr.setEncoding('utf8').on('data', (data: string) => (stderr += data));
    const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(status, 0, stderr);
    assert.equal(stdout, 'regular file\nregular file\n');
    assert.doesNotMatch(stderr, /proxy is gone|fast rules/);
    // One hello only; both stats asked, none kept local by rules the layer never got.
    assert.equal(seen.filter(({ op }) => op === Op.hello).length, 1);
    assert.equal(seen.filter(({ op, path }) => op === Op.stat && path === '/usr/bin/env').length, 2);
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
