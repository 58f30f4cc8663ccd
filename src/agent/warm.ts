// A parked agent's wait for the next session: a Unix socket (in the CLI's 0700 directory, named for the target and
// this agent) that takes one client within the ttl. The socket file goes as soon as a client is taken, and on every
// way out, so nothing of a warm agent outlives it.
import { existsSync, renameSync, rmSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import process from 'node:process';
import { parseWarmLine, WARM_MAX_LINE, WARM_OK, type WarmClient } from '../protocol/warm-preface.ts';

/** A client that connected without saying who it is within this time is not one of ours. */
const PREFACE_TIMEOUT_MS = 2000;

export interface Warm {
  /** The next client and its stream, or undefined when the ttl passes or `stop` settles first. */
  next(stop: Promise<unknown>): Promise<{ stream: Socket; client: WarmClient } | undefined>;
  close(): void;
}

export async function listenWarm({ socket: path, ttlMs }: { socket: string; ttlMs: number }, targetPid: number): Promise<Warm> {
  const waiting: Socket[] = [];
  let arrived: (() => void) | undefined;
  const server: Server = createServer((socket) => {
    waiting.push(socket);
    arrived?.();
  });
  // Bound under another name and renamed once it listens: a client that finds the socket never finds it refusing
  // (which would make it take the socket for a dead agent's, and the agent for gone).
  const binding = `${path}.new`;
  rmSync(binding, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(binding, () => resolve());
  });
  try {
    renameSync(binding, path);
  } catch (error) {
    server.close();
    rmSync(binding, { force: true });
    throw error;
  }
  let removed = false;
  const remove = () => {
    if (removed) return;
    removed = true;
    server.close();
    try {
      unlinkSync(path);
    } catch {
      // already gone
    }
  };
  process.once('exit', remove);
  return {
    async next(stop) {
      let over = false;
      const expired = new Promise<void>((resolve) => setTimeout(resolve, ttlMs).unref());
      void Promise.race([expired, stop]).then(() => {
        over = true;
        arrived?.();
      });
      for (;;) {
        if (waiting.length === 0 && !over) await new Promise<void>((resolve) => (arrived = resolve));
        const socket = waiting.shift();
        if (over || !socket) {
          socket?.destroy();
          return undefined;
        }
        const client = await readPreface(socket);
        // A target that went in the last half second has no session to give.
        if (!client || !existsSync(`/proc/${targetPid}`)) {
          socket.destroy();
          continue;
        }
        // One client only: whoever comes later starts an agent of its own.
        remove();
        for (const other of waiting.splice(0)) other.destroy();
        socket.write(WARM_OK);
        return { stream: socket, client };
      }
    },
    close() {
      remove();
      process.off('exit', remove);
      for (const other of waiting.splice(0)) other.destroy();
    },
  };
}

/** The client's one line; it waits for our answer before it speaks the protocol, so nothing may follow it. */
function readPreface(socket: Socket): Promise<WarmClient | undefined> {
  return new Promise((resolve) => {
    let line = '';
    const finish = (client: WarmClient | undefined) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.pause();
      resolve(client);
    };
    const timer = setTimeout(() => finish(undefined), PREFACE_TIMEOUT_MS);
    const onClose = () => finish(undefined);
    const onData = (chunk: Buffer) => {
      line += chunk.toString('latin1');
      const end = line.indexOf('\n');
      if (end < 0 && line.length <= WARM_MAX_LINE) return;
      finish(end === line.length - 1 ? parseWarmLine(line.slice(0, end)) : undefined);
    };
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.on('error', () => undefined);
  });
}
