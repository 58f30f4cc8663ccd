// A whole remote file for the layer's memfd: streamed on a channel (`fs.fetch`) so other requests keep flowing, or read in pieces from a version 1 agent.
import { INITIAL_WINDOW, type Channel } from '../protocol/channel.ts';
import type { Connection } from '../protocol/connection.ts';
import { ProtocolError, RemoteError } from '../protocol/errors.ts';
import type { Stat } from '../protocol/messages.ts';

export interface FetchedFile {
  stat: Stat;
  data: Uint8Array;
}

/** The reader takes every byte at once, so a wider window costs no memory and keeps a 20 ms round trip from capping a file near 12 MB/s. */
const FETCH_WINDOW = 1024 * 1024;
/** `fs.read` pieces from a version 1 agent; each is one control frame that other requests wait behind. */
const READ_PIECE = 4 * 1024 * 1024;

/**
 * Files up to this size come inside the answer (`fs.get`): most a program opens (sources, configuration, modules).
 * Bigger ones stream on a channel, so that a big file does not hold back the requests behind it in one control frame.
 */
export const INLINE_LIMIT = 64 * 1024;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;

/** Fails with E_PROTOCOL_TIMEOUT when the answer, or the content, stops coming for `idleTimeoutMs`. */
export async function fetchFile(connection: Connection, path: string, idleTimeoutMs: number): Promise<FetchedFile> {
  if (connection.supports('fs.get')) {
    const { stat, data } = await connection.request('fs.get', { path, upTo: INLINE_LIMIT });
    if (data !== undefined) return { stat, data };
    // A directory has no content; a file too big (or grown since its stat) or a special one streams as before.
    if ((stat.mode & S_IFMT) === S_IFDIR) return { stat, data: new Uint8Array(0) };
  }
  if (!connection.supports('fs.fetch')) return readInPieces(connection, path);
  return receive(connection, path, idleTimeoutMs, (channel) => connection.request('fs.fetch', { path, channel }));
}

/** A file opened on the target for writing (`fs.open`): its stat, and its content unless it was created or truncated. */
export function openForWrite(connection: Connection, path: string, flags: number, mode: number, idleTimeoutMs: number): Promise<FetchedFile> {
  return receive(connection, path, idleTimeoutMs, (channel) => connection.request('fs.open', { path, flags, mode, channel }));
}

/** Writes `data` back into the target's file (`fs.write`) on a channel of its own. */
export async function writeFile(connection: Connection, path: string, data: Uint8Array, offset: number, append: boolean): Promise<void> {
  const channel = connection.openChannel();
  const answer = connection.request('fs.write', { path, channel: channel.id, offset, append });
  // After the request, which the agent attaches the channel on; the channel's credit paces the bytes. The agent ends
  // its side once it has them all.
  channel.end(data);
  channel.resume();
  try {
    await answer;
  } catch (error) {
    channel.destroy();
    throw error;
  }
}

async function receive(connection: Connection, path: string, idleTimeoutMs: number, ask: (channel: number) => Promise<{ stat: Stat }>): Promise<FetchedFile> {
  const channel = connection.openChannel();
  const answer = ask(channel.id);
  // Only after the request: the agent attaches the channel when the request arrives, and ignores frames for channels it does not know.
  channel.widen(FETCH_WINDOW - INITIAL_WINDOW);
  channel.end();
  const content = collect(channel, path, idleTimeoutMs);
  // Handled here too: the content may fail while the answer is still awaited.
  content.catch(() => undefined);
  try {
    const { stat } = await answer;
    return { stat, data: await content };
  } catch (error) {
    channel.destroy();
    throw error;
  }
}

function collect(channel: Channel, path: string, idleTimeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const pieces: Buffer[] = [];
    let ended = false;
    const idle = setTimeout(
      () => channel.destroy(new ProtocolError('E_PROTOCOL_TIMEOUT', `the agent sent nothing more of ${path} for ${idleTimeoutMs / 1000} s`, 'the agent or the link to it is stuck or slow; raise agent.communication_timeout if it is only slow')),
      idleTimeoutMs,
    );
    idle.unref();
    channel.on('data', (piece: Buffer) => {
      pieces.push(piece);
      idle.refresh();
    });
    channel.once('end', () => {
      ended = true;
      clearTimeout(idle);
      resolve(pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces));
    });
    channel.once('error', (error: Error & { code?: string }) => {
      clearTimeout(idle);
      // A reset from the agent means it could not read the file to the end.
      reject(error.code === 'ECONNRESET' ? new RemoteError('EIO', `${path}: the agent could not read it to the end`) : error);
    });
    channel.once('close', () => {
      clearTimeout(idle);
      if (!ended) reject(new ProtocolError('E_PROTOCOL_CLOSED', `the agent connection closed while sending ${path}`, 'the agent or its target may have exited'));
    });
  });
}

async function readInPieces(connection: Connection, path: string): Promise<FetchedFile> {
  const first = await connection.request('fs.read', { path, offset: 0, length: READ_PIECE });
  if (first.eof) return { stat: first.stat, data: first.data };
  const pieces = [first.data];
  let offset = first.data.length;
  for (;;) {
    const next = await connection.request('fs.read', { path, offset, length: READ_PIECE });
    pieces.push(next.data);
    offset += next.data.length;
    if (next.eof || next.data.length === 0) return { stat: first.stat, data: Buffer.concat(pieces) };
  }
}
