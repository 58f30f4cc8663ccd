// File requests from the layer: the fs policy picks local, remote or not-found; remote ones are served by the agent (on a
// process target by the proxy itself, and a file opened to read by its path on this machine: local-files.ts).
import { constants } from 'node:fs';
import type { AgentClient } from './agent-client.ts';
import { remote } from './answer.ts';
import type { Answer, LayerHandler, Opened } from './layer-handler.ts';
import type { StandIns } from './standins.ts';

/** The part of the fs policy the proxy needs (see src/config/fs-policy.ts). */
export interface FsDecider {
  decide(path: string, options: { write: boolean }): { action: 'local' | 'remote' | 'not_found'; path: string };
}

const { O_RDONLY, O_CREAT, O_TRUNC, O_APPEND, O_DIRECTORY } = constants;
const O_ACCMODE = 3;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;

type FileRequests = Pick<LayerHandler, 'open' | 'stat' | 'access' | 'readlink' | 'realpath'>;

/** Applies the policy's decision: local (maybe on a rewritten path), ENOENT, or `work` on the target's path. */
export function routePath<T>(policy: FsDecider, path: string, write: boolean, work: (remotePath: string) => Promise<Answer<T>>): Promise<Answer<T>> {
  const decision = policy.decide(path, { write });
  if (decision.action === 'local') return Promise.resolve(decision.path === path ? { kind: 'local' } : { kind: 'local', path: decision.path });
  if (decision.action === 'not_found') return Promise.resolve({ kind: 'error', code: 'ENOENT' });
  return work(decision.path);
}

/** Whether open(2) flags can change the file. */
export const opensForWrite = (flags: number) => (flags & O_ACCMODE) !== O_RDONLY || (flags & (O_CREAT | O_TRUNC | O_APPEND)) !== 0;

const isDirectory = (mode: number) => (mode & S_IFMT) === S_IFDIR;
const failure = (code: string, message: string) => Object.assign(new Error(message), { code });

/** `openForWrite` serves the opens that write to the target (src/proxy/file-writes.ts); remote directories open as stand-ins. */
export function createFileRequests(agent: AgentClient, policy: FsDecider, openForWrite: LayerHandler['open'], standIns: StandIns): FileRequests {
  const route = <T>(path: string, write: boolean, work: (remotePath: string) => Promise<Answer<T>>) => routePath(policy, path, write, work);

  return {
    open(path, flags, mode, hostFile) {
      const write = opensForWrite(flags);
      return route(path, write, async (remotePath) => {
        // Remote files arrive whole and are read locally from then on; written ones go back on fsync and the last close.
        if (write) return openForWrite(remotePath, flags, mode);
        return remote<Opened>(async () => {
          // Where the program can reach the file itself (a local target), it reads the file, not a copy.
          const found = hostFile && (flags & O_DIRECTORY) === 0 ? await agent.hostFile?.(remotePath) : undefined;
          if (found) return found;
          // opendir and scandir ask with O_DIRECTORY: only a stat, never a file's content.
          const opened = (flags & O_DIRECTORY) !== 0 ? { stat: await agent.stat(remotePath, true) } : await agent.fetch(remotePath);
          if (isDirectory(opened.stat.mode)) return { stat: opened.stat, directory: await standIns.mirror(path, await agent.readdir(remotePath)) };
          if (!('data' in opened)) throw failure('ENOTDIR', 'not a directory');
          return opened;
        });
      });
    },
    stat: (path, follow) => route(path, false, (remotePath) => remote(() => agent.stat(remotePath, follow))),
    access: (path, mode) => route(path, false, (remotePath) => remote(() => agent.access(remotePath, mode))),
    readlink: (path) => route(path, false, (remotePath) => remote(() => agent.readlink(remotePath))),
    realpath: (path) => route(path, false, (remotePath) => remote(() => agent.realpath(remotePath))),
  };
}
