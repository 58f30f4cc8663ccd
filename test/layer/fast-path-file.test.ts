// The fast rules a process reads at load from the proxy's `fast-path` file: a local path is decided without asking,
// the process's hello goes out without its answer being waited for, and a file the layer cannot read whole or parse
// means every path is asked. The proxy here is a fake (it answers every request "local" and records it), since a
// real one never writes a damaged file.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { encodeFastPath, FAST_PATH_FILE, Op, REQ_HEADER, RESP_HEADER } from '../../src/proxy/layer-wire.ts';

const layer = fileURLToPath(new URL('../../layer/build/libdoppel.so', import.meta.url));
const rules = encodeFastPath({ loopbackTcpLocal: true, remoteWrites: false, rules: [{ match: 'prefix', verdict: 'local', text: '/usr/' }] });

/** Runs `stat` on /usr/bin/env and /etc/hostname under the layer with `file` as the proxy's fast-path file. */
async function run(file: Buffer): Promise<{ ops: { op: number; path: string }[]; stderr: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'doppel-fast-path-file-'));
  const socketPath = join(dir, 'layer.sock');
  writeFileSync(join(dir, FAST_PATH_FILE), file);
  const ops: { op: number; path: string }[] = [];
  const server = createServer((socket) => {
    let buffered = Buffer.alloc(0);
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= REQ_HEADER && buffered.length >= REQ_HEADER + buffered.readUInt32LE(0)) {
        const length = buffered.readUInt32LE(0);
        const op = buffered.readUInt32LE(4);
        const seq = buffered.readUInt32LE(8);
        const payload = buffered.subarray(REQ_HEADER, REQ_HEADER + length);
        buffered = buffered.subarray(REQ_HEADER + length);
        ops.push({ op, path: op === Op.hello ? '' : payload.subarray(4, payload.indexOf(0, 4)).toString() });
        // "local" to everything, the hello included (an answer the layer must pass over when it did not wait for it).
        const answer = Buffer.alloc(RESP_HEADER);
        answer.writeInt32LE(1, 4);
        answer.writeUInt32LE(seq, 8);
        socket.write(answer);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  try {
    const child = spawn('stat', ['-c', '%F', '/usr/bin/env', '/etc/hostname'], { env: { ...process.env, LD_PRELOAD: layer, DOPPEL_LAYER_SOCKET: socketPath, DOPPEL_LAYER_LOG: 'debug' } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (data: string) => (stdout += data));
    child.stderr.setEncoding('utf8').on('data', (data: string) => (stderr += data));
    const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(status, 0, stderr);
    assert.equal(stdout, 'regular file\nregular file\n');
    return { ops, stderr };
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const asked = (ops: { op: number; path: string }[], path: string) => ops.some((o) => o.op === Op.stat && o.path === path);

test('rules read from the file: local paths are not asked, and the hello is not waited for', async () => {
  const { ops, stderr } = await run(rules);
  assert.match(stderr, /fast-path: 1 fast rules/);
  assert.ok(!asked(ops, '/usr/bin/env'));
  assert.ok(asked(ops, '/etc/hostname'));
  // One connection, its hello first; the answers after it were told apart from the hello's.
  assert.equal(ops[0]?.op, Op.hello);
  assert.equal(ops.filter(({ op }) => op === Op.hello).length, 1);
  assert.deepEqual(ops.filter(({ op }) => op === Op.stat).map(({ path }) => path), ['/etc/hostname']);
  assert.doesNotMatch(stderr, /dropped the answer/);
});

test('a damaged file: cut inside a rule, or longer than the layer reads, and every path is asked', async () => {
  const cut = await run(rules.subarray(0, rules.length - 2));
  assert.match(cut.stderr, /fast-path: malformed fast rules/);
  assert.ok(asked(cut.ops, '/usr/bin/env') && asked(cut.ops, '/etc/hostname'));
  // Too long to be one: the layer falls back to the hello, whose answer here carries no rules.
  const long = await run(Buffer.concat([rules, Buffer.alloc(64 * 1024)]));
  assert.doesNotMatch(long.stderr, /fast rules/);
  assert.ok(asked(long.ops, '/usr/bin/env') && asked(long.ops, '/etc/hostname'));
});
