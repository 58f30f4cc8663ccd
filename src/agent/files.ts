// File requests, served through /proc/PID/root with every symlink resolved by hand so nothing escapes that root.
// Node's promise and stream-promise modules are taken at first use, not imported: the process platform's CLI reads
// files with this module too, and loads neither on its way to the program's start.
import fs, { accessSync, closeSync, constants, createReadStream, fstatSync, lstatSync, openSync, readlinkSync, readSync, type BigIntStats } from 'node:fs';
import { pipeline } from 'node:stream';
import type { Connection } from '../protocol/connection.ts';
import { MAX_DATA_CHUNK } from '../protocol/frame.ts';
import type { DirEntry, Operations, Stat } from '../protocol/messages.ts';
import { resolveInRoot } from './root-path.ts';

/** O_NOFOLLOW: a symlink swapped in after the walk must not take us outside the root. */
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

export interface Files {
  stat(args: Operations['fs.stat']['args']): Promise<Stat>;
  read(args: Operations['fs.read']['args']): Promise<Operations['fs.read']['result']>;
  fetch(args: Operations['fs.fetch']['args'], connection: Connection): Promise<Operations['fs.fetch']['result']>;
  get(args: Operations['fs.get']['args']): Promise<Operations['fs.get']['result']>;
  readdir(args: Operations['fs.readdir']['args']): Promise<Operations['fs.readdir']['result']>;
  readlink(args: Operations['fs.readlink']['args']): Promise<Operations['fs.readlink']['result']>;
  access(args: Operations['fs.access']['args']): Promise<Record<string, never>>;
  realpath(args: Operations['fs.realpath']['args']): Promise<Operations['fs.realpath']['result']>;
}

export function createFiles(root: string): Files {
  const resolve = (path: string, followLast: boolean) => resolveInRoot(root, path, followLast);
  return {
    // stat, readlink, access and realpath are synchronous, as the path walk is: see openForReading.
    async stat({ path, follow }) {
      const { host } = await resolve(path, follow);
      return toStat(lstatSync(host, { bigint: true }));
    },
    async read({ path, offset, length }) {
      const { host } = await resolve(path, true);
      const handle = await fs.promises.open(host, OPEN_FLAGS);
      try {
        const stat = toStat(await handle.stat({ bigint: true }));
        if ((stat.mode & S_IFMT) === S_IFDIR) return { stat, data: new Uint8Array(0), eof: true };
        const data = Buffer.allocUnsafe(Math.max(0, Math.min(length, 64 * 1024 * 1024)));
        let filled = 0;
        while (filled < data.length) {
          const { bytesRead } = await handle.read(data, filled, data.length - filled, offset + filled);
          if (bytesRead === 0) break;
          filled += bytesRead;
        }
        return { stat, data: data.subarray(0, filled), eof: filled < data.length };
      } finally {
        await handle.close();
      }
    },
    async fetch({ path, channel: id }, connection) {
      // Attached before the first await, so a reset from a client that gave up (its deadline) finds the channel.
      const channel = connection.attachChannel(id);
      let opened: { fd: number; stat: Stat };
      try {
        opened = openForReading((await resolve(path, true)).host);
      } catch (error) {
        channel.end();
        throw error;
      }
      const { fd, stat } = opened;
      if ((stat.mode & S_IFMT) === S_IFDIR) {
        closeSync(fd);
        channel.end();
        return { stat };
      }
      let start = 0;
      if ((stat.mode & S_IFMT) === S_IFREG && stat.size < MAX_DATA_CHUNK) {
        let whole: { data: Buffer; read: number };
        try {
          whole = readWhole(fd, stat.size + 1);
        } catch (error) {
          closeSync(fd);
          channel.end();
          throw error;
        }
        if (whole.read < whole.data.length) {
          closeSync(fd);
          channel.end(whole.data.subarray(0, whole.read));
          return { stat };
        }
        start = whole.read;
        channel.write(whole.data);
      }
      // Read to the end rather than to stat.size: /proc and sysfs files say 0. A failure resets the channel, which the client reports.
      pipeline(createReadStream('', { fd, start, highWaterMark: MAX_DATA_CHUNK }), channel, () => undefined);
      return { stat };
    },
    async get({ path, upTo }) {
      const { fd, stat } = openForReading((await resolve(path, true)).host);
      try {
        if ((stat.mode & S_IFMT) !== S_IFREG || stat.size > upTo) return { stat };
        // A file that says 0 may still have content (/proc, sysfs): a page's worth is looked for.
        const { data, read } = stat.size > 0 ? readWhole(fd, stat.size + 1) : readWhole(fd, EMPTY_LOOKAHEAD, true);
        return read < data.length ? { stat, data: data.subarray(0, read) } : { stat };
      } finally {
        closeSync(fd);
      }
    },
    async readdir({ path }) {
      const { host } = await resolve(path, true);
      const dirents = await fs.promises.readdir(host, { withFileTypes: true });
      const entries: DirEntry[] = await Promise.all(
        dirents.map(async (dirent) => {
          const ino = await fs.promises.lstat(`${host}/${dirent.name}`, { bigint: true }).then((s) => Number(s.ino), () => 0);
          return { name: dirent.name, ino, type: direntType(dirent) };
        }),
      );
      return { entries };
    },
    async readlink({ path }) {
      const { host } = await resolve(path, false);
      return { target: readlinkSync(host) };
    },
    async access({ path, mode }) {
      const { host } = await resolve(path, true);
      accessSync(host, mode);
      return {};
    },
    async realpath({ path }) {
      const { host, inside } = await resolve(path, true);
      lstatSync(host);
      return { path: inside };
    },
  };
}

/** What `fs.get` reads of a file whose stat says it is empty. */
const EMPTY_LOOKAHEAD = 4096;

/**
 * Opened and stat'ed synchronously, as the files a program reads most are small: each trip through libuv's thread
 * pool would cost more than the call itself.
 */
function openForReading(host: string): { fd: number; stat: Stat } {
  const fd = openSync(host, OPEN_FLAGS);
  try {
    return { fd, stat: toStat(fstatSync(fd, { bigint: true })) };
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

/**
 * Reads into a buffer of `room` bytes: a regular file's short read is its end, and one that fills the buffer means the
 * file is bigger (it grew since its stat), and the caller reads on. A file that says 0 bytes (/proc, sysfs) is read
 * until a read gives nothing: /proc's lists come a page of whole lines at a time.
 */
function readWhole(fd: number, room: number, toTheEnd = false): { data: Buffer; read: number } {
  const data = Buffer.allocUnsafe(room);
  let read = readSync(fd, data, 0, room, 0);
  while (toTheEnd && read < room) {
    const n = readSync(fd, data, read, room - read, read);
    if (n === 0) break;
    read += n;
  }
  return { data, read };
}

export function toStat(s: BigIntStats): Stat {
  return {
    dev: Number(s.dev),
    ino: Number(s.ino),
    mode: Number(s.mode),
    nlink: Number(s.nlink),
    uid: Number(s.uid),
    gid: Number(s.gid),
    rdev: Number(s.rdev),
    size: Number(s.size),
    blksize: Number(s.blksize),
    blocks: Number(s.blocks),
    atimeSec: Number(s.atimeNs / 1_000_000_000n),
    atimeNsec: Number(s.atimeNs % 1_000_000_000n),
    mtimeSec: Number(s.mtimeNs / 1_000_000_000n),
    mtimeNsec: Number(s.mtimeNs % 1_000_000_000n),
    ctimeSec: Number(s.ctimeNs / 1_000_000_000n),
    ctimeNsec: Number(s.ctimeNs % 1_000_000_000n),
  };
}

const DT = { unknown: 0, fifo: 1, chr: 2, dir: 4, blk: 6, reg: 8, lnk: 10, sock: 12 };

function direntType(d: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean; isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean }): number {
  if (d.isFile()) return DT.reg;
  if (d.isDirectory()) return DT.dir;
  if (d.isSymbolicLink()) return DT.lnk;
  if (d.isFIFO()) return DT.fifo;
  if (d.isSocket()) return DT.sock;
  if (d.isCharacterDevice()) return DT.chr;
  if (d.isBlockDevice()) return DT.blk;
  return DT.unknown;
}
