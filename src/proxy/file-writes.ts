// Write mode: files opened for writing on the target, their write-backs from the layer's memfds, and path changes (mkdir, rename, ...).
import { createRequire } from 'node:module';
import { constants } from 'node:fs';
import type { AgentClient } from './agent-client.ts';
import { remote } from './answer.ts';
import { routePath, type FsDecider } from './files.ts';
import type { Answer, LayerHandler, RemoteStat } from './layer-handler.ts';

const { O_APPEND } = constants;
/** A write-back the layer started and never finished (its process was killed midway) is dropped after this long. */
const PENDING_TIMEOUT_MS = 60_000;

/** A file of the target opened for writing: where its content goes back, and what the target has of it already. */
interface Written {
  path: string;
  append: boolean;
  /** Bytes of the content the target has (for append: what later write-backs add to). */
  base: number;
  /** Of the content the target has, when it is known whole: an unchanged file is not sent again. */
  digest: string | undefined;
}

/** One write-back under way: the content from `from` on, arriving in pieces. */
interface Pending {
  written: Written;
  from: number;
  pieces: Buffer[];
  received: number;
  timer: NodeJS.Timeout;
}

export type FileWriteRequests = Pick<LayerHandler, 'writeback' | 'writebackData' | 'mkdir' | 'rmdir' | 'unlink' | 'rename' | 'chmod' | 'fchmod'> & {
  /** An open that writes, already routed to the target's `path`. */
  openForWrite(path: string, flags: number, mode: number): Promise<Answer<{ stat: RemoteStat; data: Uint8Array; handle: number }>>;
};

/** node:crypto is loaded at the first file opened for writing, not by every session: it costs a start 3-5 ms of CPU. */
const digestOf = (data: Uint8Array): string => {
  const { createHash } = createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto');
  return createHash('sha256').update(data).digest('base64');
};
const error = (code: string): Answer<never> => ({ kind: 'error', code });

/** `notice` tells the user, once, that an older agent makes every write fail. */
export function createFileWriteRequests(agent: AgentClient, policy: FsDecider, notice: (text: string) => void = () => {}): FileWriteRequests {
  const written = new Map<number, Written>();
  const pending = new Map<number, Pending>();
  let nextHandle = 1;
  let nextToken = 1;
  let told = false;
  /**
   * An agent older than protocol 5 has no writes: the file system is read-only to the program. A target this machine
   * reaches is written by the session itself, with no agent to wait for.
   */
  const writable = async () => {
    if (agent.localTarget?.()) return true;
    await agent.connected;
    if (agent.connection.supports('fs.open')) return true;
    if (!told) {
      const { software, version } = agent.connection.peer;
      notice(`the agent (${software}) speaks protocol ${version} and cannot write the target's files (protocol 5): writes fail with EROFS; use an agent.image of this doppel version`);
      told = true;
    }
    return false;
  };
  const change = (path: string, work: (remotePath: string) => Promise<void>) =>
    routePath(policy, path, true, async (remotePath) => ((await writable()) ? remote(() => work(remotePath)) : error('EROFS')));

  async function finish(job: Pending): Promise<void> {
    const content = Buffer.concat(job.pieces);
    const { written: file } = job;
    if (file.append && job.from === file.base) {
      if (content.length === 0) return;
      await agent.writeBack(file.path, content, 0, true);
      file.base += content.length;
      file.digest = undefined;
      return;
    }
    const digest = digestOf(content);
    if (digest === file.digest) return;
    await agent.writeBack(file.path, content, 0, false);
    file.base = content.length;
    file.digest = digest;
  }

  return {
    async openForWrite(path, flags, mode) {
      if (!(await writable())) return error('EROFS');
      return remote(async () => {
        const file = await agent.openForWrite(path, flags, mode);
        const handle = nextHandle++;
        written.set(handle, { path, append: (flags & O_APPEND) !== 0, base: file.data.length, digest: digestOf(file.data) });
        return { ...file, handle };
      });
    },
    async writeback(handle, size) {
      const file = written.get(handle);
      if (!file) return error('EBADF');
      // Appends send only what was added, so that the target's own appends in the meantime stay; a file cut shorter is sent whole.
      const from = file.append && size >= file.base ? file.base : 0;
      const token = nextToken++;
      const timer = setTimeout(() => pending.delete(token), PENDING_TIMEOUT_MS).unref();
      pending.set(token, { written: file, from, pieces: [], received: 0, timer });
      return { kind: 'remote', value: { from, token } };
    },
    async writebackData(token, offset, data, last) {
      const job = pending.get(token);
      if (!job) return error('EBADF');
      if (offset !== job.from + job.received) {
        clearTimeout(job.timer);
        pending.delete(token);
        return error('EIO');
      }
      job.pieces.push(data);
      job.received += data.length;
      if (!last) return { kind: 'remote', value: undefined };
      clearTimeout(job.timer);
      pending.delete(token);
      return remote(() => finish(job));
    },
    fchmod(handle, mode) {
      const file = written.get(handle);
      if (!file) return Promise.resolve(error('EBADF'));
      return remote(() => agent.chmod(file.path, mode, true));
    },
    mkdir: (path, mode) => change(path, (remotePath) => agent.mkdir(remotePath, mode)),
    rmdir: (path) => change(path, (remotePath) => agent.rmdir(remotePath)),
    unlink: (path) => change(path, (remotePath) => agent.unlink(remotePath)),
    chmod: (path, mode, follow) => change(path, (remotePath) => agent.chmod(remotePath, mode, follow)),
    async rename(from, to, noReplace) {
      const source = policy.decide(from, { write: true });
      const target = policy.decide(to, { write: true });
      if (source.action === 'not_found' || target.action === 'not_found') return error('ENOENT');
      if (source.action === 'local' && target.action === 'local') {
        return source.path === from && target.path === to ? { kind: 'local' } : { kind: 'local', path: `${source.path}\0${target.path}` };
      }
      // One side here, the other there: as between two file systems, so that mv copies instead.
      if (source.action !== target.action) return error('EXDEV');
      if (!(await writable())) return error('EROFS');
      return remote(() => agent.rename(source.path, target.path, noReplace));
    },
  };
}
