// Writes on the target's files (write mode): confined to its root as reads are, and checked as its own user would be.
// Synchronous file calls, as the reads' (root-path.ts): a few µs each, where a trip through libuv's thread pool costs
// tens and comes back behind whatever the event loop has queued; a create and its write-back took a dozen.
import {
  chmodSync, closeSync, constants, createReadStream, fchmodSync, fchownSync, fstatSync, ftruncateSync, lchownSync, lstatSync,
  mkdirSync, openSync, readFileSync, renameSync, rmdirSync, unlinkSync, writeSync, type BigIntStats,
} from 'node:fs';
import { dirname } from 'node:path/posix';
import { pipeline } from 'node:stream/promises';
import type { Connection } from '../protocol/connection.ts';
import { RemoteError } from '../protocol/errors.ts';
import { MAX_DATA_CHUNK } from '../protocol/frame.ts';
import type { Operations, Stat } from '../protocol/messages.ts';
import { toStat } from './files.ts';
import { resolveInRoot } from './root-path.ts';

const { O_ACCMODE, O_WRONLY, O_RDONLY, O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_NOFOLLOW, O_NONBLOCK } = { ...constants, O_ACCMODE: 3 };
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const R = 4;
const W = 2;
const X = 1;

/** Who the target process is, for the permission checks the agent (root) would otherwise skip. */
export interface Credentials {
  uid: number;
  gid: number;
  groups: number[];
  umask: number;
}

type Result<O extends keyof Operations> = Promise<Operations[O]['result']>;

export interface FileWrites {
  /**
   * Opens `path` for writing as the target's process would: its stat, and a descriptor to read the content the opener
   * gets from (none when it was created or truncated), which the caller closes.
   */
  openChecked(args: Omit<Operations['fs.open']['args'], 'channel'>): Promise<{ stat: Stat; content: number | undefined }>;
  /** Writes `pieces` into the file at `offset` and cuts it after them, or appends them. */
  writeAt(path: string, pieces: AsyncIterable<Buffer> | Iterable<Buffer>, offset: number, append: boolean): Promise<void>;
  /** `openChecked` with the content streamed on the request's channel. */
  open(args: Operations['fs.open']['args'], connection: Connection): Result<'fs.open'>;
  /** `writeAt` with the pieces from the request's channel. */
  write(args: Operations['fs.write']['args'], connection: Connection): Result<'fs.write'>;
  mkdir(args: Operations['fs.mkdir']['args']): Result<'fs.mkdir'>;
  rmdir(args: Operations['fs.rmdir']['args']): Result<'fs.rmdir'>;
  unlink(args: Operations['fs.unlink']['args']): Result<'fs.unlink'>;
  rename(args: Operations['fs.rename']['args']): Result<'fs.rename'>;
  chmod(args: Operations['fs.chmod']['args']): Result<'fs.chmod'>;
}

/** The fs* ids, groups and umask of a process, from /proc/PID/status. */
export async function readCredentials(pid: number): Promise<Credentials> {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => status.split('\n').find((line) => line.startsWith(`${name}:`))?.slice(name.length + 1).trim().split(/\s+/).filter((word) => word !== '') ?? [];
  // Uid and Gid list the real, effective, saved and filesystem ids; the filesystem one decides file access.
  return { uid: Number(field('Uid')[3] ?? 0), gid: Number(field('Gid')[3] ?? 0), groups: field('Groups').map(Number), umask: parseInt(field('Umask')[0] ?? '022', 8) };
}

export function createFileWrites(root: string, credentials: () => Promise<Credentials>): FileWrites {
  const resolve = (path: string, followLast: boolean) => resolveInRoot(root, path, followLast);
  const statOrNull = (host: string) => {
    try {
      return lstatSync(host, { bigint: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
  };

  /** Mode bits only, as the kernel checks them (no ACLs); root passes. */
  async function allow(stat: BigIntStats, want: number, path: string): Promise<void> {
    const who = await credentials();
    if (who.uid === 0) return;
    const mode = Number(stat.mode);
    const bits = Number(stat.uid) === who.uid ? mode >> 6 : [who.gid, ...who.groups].includes(Number(stat.gid)) ? mode >> 3 : mode;
    if ((bits & want) !== want) throw new RemoteError('EACCES', `permission denied: ${path}`);
  }
  /** Creating or removing an entry needs write and search on its directory. */
  async function allowInParent(host: string, path: string): Promise<void> {
    // An entry of the target's / has the root for parent: `/proc/PID/root` is a link, so lstat must see the directory behind it.
    const parentHost = dirname(host);
    const parent = lstatSync(parentHost === root.replace(/\/+$/, '') ? `${parentHost}/` : parentHost, { bigint: true });
    if ((Number(parent.mode) & S_IFMT) !== S_IFDIR) throw new RemoteError('ENOTDIR', `not a directory: ${dirname(path)}`);
    await allow(parent, W | X, dirname(path));
  }
  /** What the target's process creates belongs to it. */
  async function own(chown: (uid: number, gid: number) => void): Promise<void> {
    const who = await credentials();
    if (who.uid !== 0 || who.gid !== 0) chown(who.uid, who.gid);
  }

  async function openChecked({ path, flags, mode }: Omit<Operations['fs.open']['args'], 'channel'>): Promise<{ stat: Stat; content: number | undefined }> {
    const exclusive = (flags & O_CREAT) !== 0 && (flags & O_EXCL) !== 0;
    const { host } = await resolve(path, !exclusive && (flags & O_NOFOLLOW) === 0);
    const before = statOrNull(host);
    const access = flags & O_ACCMODE;
    if (before === null) {
      if ((flags & O_CREAT) === 0) throw new RemoteError('ENOENT', `no such file: ${path}`);
      await allowInParent(host, path);
    } else {
      if (exclusive) throw new RemoteError('EEXIST', `file exists: ${path}`);
      const type = Number(before.mode) & S_IFMT;
      if (type === S_IFDIR) throw new RemoteError('EISDIR', `is a directory: ${path}`);
      if (type !== S_IFREG) throw new RemoteError('EOPNOTSUPP', `not a regular file, which is all write mode sends to the target: ${path}`);
      if (access !== O_WRONLY) await allow(before, R, path);
      if (access !== O_RDONLY || (flags & O_TRUNC) !== 0) await allow(before, W, path);
    }
    const { umask } = await credentials();
    const opened = openSync(host, (flags & (O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND)) | O_NOFOLLOW | O_NONBLOCK);
    let content: number | undefined;
    try {
      if (before === null) {
        // The asked mode less the target's umask, not the agent's.
        fchmodSync(opened, mode & ~umask & 0o7777);
        await own((uid, gid) => fchownSync(opened, uid, gid));
      }
      const stat = toStat(fstatSync(opened, { bigint: true }));
      if (before !== null && (flags & O_TRUNC) === 0) content = access === O_WRONLY ? openSync(host, O_RDONLY | O_NOFOLLOW | O_NONBLOCK) : opened;
      return { stat, content };
    } finally {
      if (content !== opened) closeSync(opened);
    }
  }

  async function writeAt(path: string, pieces: AsyncIterable<Buffer> | Iterable<Buffer>, offset: number, append: boolean): Promise<void> {
    const { host } = await resolve(path, true);
    const fd = openSync(host, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | (append ? O_APPEND : 0));
    try {
      let at = offset;
      for await (const piece of pieces) {
        let done = 0;
        while (done < piece.length) {
          const written = writeSync(fd, piece, done, piece.length - done, append ? null : at);
          done += written;
          at += written;
        }
      }
      if (!append) ftruncateSync(fd, at);
    } finally {
      closeSync(fd);
    }
  }

  return {
    openChecked,
    writeAt,
    async open({ channel: id, ...args }, connection) {
      // Attached first, so the client's reset after its deadline finds the channel.
      const channel = connection.attachChannel(id);
      try {
        const { stat, content } = await openChecked(args);
        // As fs.fetch: read to the end; the stream closes the reader, and a failure resets the channel.
        if (content !== undefined) pipeline(createReadStream('', { fd: content, highWaterMark: MAX_DATA_CHUNK, start: 0 }), channel).catch(() => undefined);
        else channel.end();
        return { stat };
      } catch (error) {
        channel.end();
        throw error;
      }
    },
    async write({ path, channel: id, offset, append }, connection) {
      const channel = connection.attachChannel(id);
      try {
        await writeAt(path, channel as AsyncIterable<Buffer>, offset, append);
        channel.end();
        return {};
      } catch (error) {
        channel.destroy();
        throw error;
      }
    },
    async mkdir({ path, mode }) {
      const { host } = await resolve(path, false);
      await allowInParent(host, path);
      mkdirSync(host, mode & 0o7777);
      chmodSync(host, mode & ~(await credentials()).umask & 0o7777);
      await own((uid, gid) => lchownSync(host, uid, gid));
      return {};
    },
    async rmdir({ path }) {
      const { host } = await resolve(path, false);
      await allowInParent(host, path);
      rmdirSync(host);
      return {};
    },
    async unlink({ path }) {
      const { host } = await resolve(path, false);
      await allowInParent(host, path);
      unlinkSync(host);
      return {};
    },
    async rename({ from, to, noReplace }) {
      const source = await resolve(from, false);
      const target = await resolve(to, false);
      await allowInParent(source.host, from);
      await allowInParent(target.host, to);
      // renameat2 is not in Node: the check and the rename are two steps, so a file created between them is replaced.
      if (noReplace && statOrNull(target.host) !== null) throw new RemoteError('EEXIST', `file exists: ${to}`);
      renameSync(source.host, target.host);
      return {};
    },
    async chmod({ path, mode, follow }) {
      const { host } = await resolve(path, follow);
      const stat = lstatSync(host, { bigint: true });
      if ((Number(stat.mode) & S_IFMT) === 0o120000) throw new RemoteError('EOPNOTSUPP', `cannot change the mode of a symbolic link: ${path}`);
      const who = await credentials();
      if (who.uid !== 0 && Number(stat.uid) !== who.uid) throw new RemoteError('EPERM', `not the owner: ${path}`);
      // Through a descriptor opened without following links, so a link swapped in after the walk changes nothing outside.
      let fd: number | undefined;
      try {
        fd = openSync(host, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
      } catch {
        chmodSync(host, mode & 0o7777);
      }
      if (fd !== undefined) {
        try {
          fchmodSync(fd, mode & 0o7777);
        } finally {
          closeSync(fd);
        }
      }
      return {};
    },
  };
}
