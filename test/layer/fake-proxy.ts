// A fake proxy for the layer's tests of faults a real proxy never shows (a damaged fast-path file, a proxy that does
// not know the hello, a target process that is not the one named): it records every request and answers each "local",
// echoing the request's sequence number.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeRequest, FAST_PATH_FILE, Op, REQ_HEADER, RESP_HEADER } from '../../src/proxy/layer-wire.ts';

const layer = fileURLToPath(new URL('../../layer/build/libdoppel.so', import.meta.url));

export interface Asked {
  op: number;
  /** The path the request names ('' for none). */
  path: string;
}

/** A fake proxy listening next to its fast-path file; `env` puts a program under the layer against it. */
export interface FakeProxy {
  ops: Asked[];
  env: NodeJS.ProcessEnv;
  close(): void;
}

/** The path a request names, as the real proxy decodes it. */
function pathOf(op: number, payload: Buffer): string {
  if (op === Op.hello) return '';
  try {
    const request = decodeRequest(op, payload);
    return 'path' in request ? request.path : '';
  } catch {
    return '';
  }
}

/**
 * Starts the fake proxy. `fastPathFile`: what the proxy's fast-path file holds; `closeOnHello`: the proxy drops a
 * connection that says hello, as an older build's wire decoder does on an unknown op.
 */
export async function startFakeProxy(options: { fastPathFile?: Buffer; closeOnHello?: boolean } = {}): Promise<FakeProxy> {
  const dir = mkdtempSync(join(tmpdir(), 'doppel-fake-proxy-'));
  const socketPath = join(dir, 'layer.sock');
  if (options.fastPathFile) writeFileSync(join(dir, FAST_PATH_FILE), options.fastPathFile);
  const ops: Asked[] = [];
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
        ops.push({ op, path: pathOf(op, payload) });
        if (op === Op.hello && options.closeOnHello) {
          socket.destroy();
          return;
        }
        // "local" to everything, the hello included (an answer the layer must pass over when it did not wait for it).
        const answer = Buffer.alloc(RESP_HEADER);
        answer.writeInt32LE(1, 4);
        answer.writeUInt32LE(seq, 8);
        socket.write(answer);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    ops,
    env: { ...process.env, LD_PRELOAD: layer, DOPPEL_LAYER_SOCKET: socketPath, DOPPEL_LAYER_LOG: 'debug' },
    close() {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs command under the layer against proxy (in `env`, proxy.env by default): its exit status and output. */
export async function runUnderFakeProxy(proxy: FakeProxy, command: string, args: string[], env = proxy.env): Promise<{ status: number | null; stdout: string; stderr: string }> {
  // Run asynchronously: the fake proxy answers on this process's event loop.
  const child = spawn(command, args, { env });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (data: string) => (stdout += data));
  child.stderr.setEncoding('utf8').on('data', (data: string) => (stderr += data));
  const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { status, stdout, stderr };
}

/**
 * Runs `stat -c %F` on `paths` under the layer against the fake proxy (startFakeProxy's options), and checks each is a
 * regular file.
 */
export async function statUnderFakeProxy(paths: string[], options: { fastPathFile?: Buffer; closeOnHello?: boolean } = {}): Promise<{ ops: Asked[]; stderr: string }> {
  const proxy = await startFakeProxy(options);
  try {
    const { status, stdout, stderr } = await runUnderFakeProxy(proxy, 'stat', ['-c', '%F', ...paths]);
    assert.equal(status, 0, stderr);
    assert.equal(stdout, 'regular file\n'.repeat(paths.length));
    return { ops: proxy.ops, stderr };
  } finally {
    proxy.close();
  }
}
