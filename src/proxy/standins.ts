// Local stand-ins for remote directories: remote path P is mirrored at <root>/P as a real directory holding an empty
// entry of the same kind for each remote entry, so the kernel lists it (getdents64, fdopendir, fchdir all work);
// the layer maps paths under <root> back to the remote ones, and stats, opens and reads go to the target as usual.
import fs from 'node:fs';
import { join, posix } from 'node:path';
import type { DirEntry } from './layer-handler.ts';

const DT_DIR = 4;
const DT_LNK = 10;

type Kind = 'dir' | 'link' | 'file';

export interface StandIns {
  /** Makes the stand-in of remote directory `path` hold exactly `entries`; returns its local path. */
  mirror(path: string, entries: DirEntry[]): Promise<string>;
}

const kindOf = (type: number): Kind => (type === DT_DIR ? 'dir' : type === DT_LNK ? 'link' : 'file');
const safeName = (name: string) => name !== '' && name !== '.' && name !== '..' && !/[/\0]/.test(name);

export function createStandIns(root: string): StandIns {
  // One update per directory at a time; different directories proceed together.
  const queues = new Map<string, Promise<string>>();

  /** Each component a directory: an entry mirrored as a file or link before is replaced. */
  async function ensureDir(path: string): Promise<string> {
    await fs.promises.mkdir(root, { recursive: true, mode: 0o700 });
    let dir = root;
    for (const part of path.split('/').filter(Boolean)) {
      dir = join(dir, part);
      const stat = await fs.promises.lstat(dir).catch(() => undefined);
      if (stat?.isDirectory()) continue;
      if (stat) await fs.promises.rm(dir, { recursive: true, force: true });
      await fs.promises.mkdir(dir).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'EEXIST') throw error;
      });
    }
    return dir;
  }

  async function sync(path: string, entries: DirEntry[]): Promise<string> {
    const dir = await ensureDir(path);
    const wanted = new Map(entries.filter((entry) => safeName(entry.name)).map((entry) => [entry.name, kindOf(entry.type)]));
    const present = await fs.promises.readdir(dir, { withFileTypes: true });
    const have = new Map<string, Kind>(present.map((entry) => [entry.name, entry.isDirectory() ? 'dir' : entry.isSymbolicLink() ? 'link' : 'file']));
    await Promise.all(present.filter((entry) => !wanted.has(entry.name)).map((entry) => fs.promises.rm(join(dir, entry.name), { recursive: true, force: true })));
    await Promise.all(
      [...wanted].map(async ([name, kind]) => {
        const current = have.get(name);
        // A link to a directory that was opened became that directory's stand-in: keep it.
        if (current === kind || (current === 'dir' && kind === 'link')) return;
        const local = join(dir, name);
        if (current !== undefined) await fs.promises.rm(local, { recursive: true, force: true });
        if (kind === 'dir') await fs.promises.mkdir(local);
        // The link's target does not matter: the layer asks the target about anything under a stand-in.
        else if (kind === 'link') await fs.promises.symlink('.doppel-remote-link', local);
        else await fs.promises.writeFile(local, '');
      }),
    );
    return dir;
  }

  return {
    mirror(path, entries) {
      const key = posix.join('/', path).replace(/(.)\/+$/, '$1');
      const next = (queues.get(key) ?? Promise.resolve('')).catch(() => '').then(() => sync(key, entries));
      queues.set(key, next);
      const forget = () => {
        if (queues.get(key) === next) queues.delete(key);
      };
      next.then(forget, forget);
      return next;
    },
  };
}
