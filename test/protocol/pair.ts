// Two ends of a real Unix stream socket, for protocol tests that need a byte stream between two connections.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function socketPair(): Promise<{ a: Socket; b: Socket; close(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'doppel-pair-'));
  const path = join(dir, 's');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const a = connect(path);
  const b = await accepted;
  server.close();
  rmSync(dir, { recursive: true, force: true });
  return {
    a,
    b,
    close() {
      a.destroy();
      b.destroy();
    },
  };
}
