// File requests from the layer: the fs policy picks local, remote or not-found; remote ones are served by the agent.
import { constants } from 'node:fs';
import type { AgentClient } from './agent-client.ts';
import { remote } from './answer.ts';
import type { Answer, DirEntry, LayerHandler, RemoteStat } from './layer-handler.ts';

/** The part of the fs policy the proxy needs (see src/config/fs-policy.ts). */
export interface FsDecider {
  decide(path: string, options: { write: boolean }): { action: 'local' | 'remote' | 'not_found'; path: string };
}

const { O_RDONLY, O_CREAT, O_TRUNC, O_APPEND, O_DIRECTORY } = constants;
const O_ACCMODE = 3;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
/** Whole files come over in pieces this size, so other requests interleave with a big read. */
const READ_PIECE = 4 * 1024 * 1024;

type FileRequests = Pick<LayerHandler, 'open' | 'stat' | 'access' | 'readlink' | 'listdir' | 'realpath'>;

export function createFileRequests(agent: AgentClient, policy: FsDecider): FileRequests {
  function route<T>(path: string, write: boolean, work: (remotePath: string) => Promise<Answer<T>>): Promise<Answer<T>> {
    const decision = policy.decide(path, { write });
    if (decision.action === 'local') return Promise.resolve(decision.path === path ? { kind: 'local' } : { kind: 'local', path: decision.path });
    if (decision.action === 'not_found') return Promise.resolve({ kind: 'error', code: 'ENOENT' });
    return work(decision.path);
  }

  return {
    open(path, flags) {
      const write = (flags & O_ACCMODE) !== O_RDONLY || (flags & (O_CREAT | O_TRUNC | O_APPEND)) !== 0;
      return route(path, write, async (remotePath) => {
        // Remote files arrive whole and are read locally from then on; writing them back is not supported yet.
        if (write) return { kind: 'error', code: 'EROFS' };
        return remote(async () => {
          const first = await agent.read(remotePath, 0, READ_PIECE);
          const isDir = (first.stat.mode & S_IFMT) === S_IFDIR;
          if (isDir) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
          if ((flags & O_DIRECTORY) !== 0) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
          return { stat: first.stat, data: await readRest(agent, remotePath, first) };
        });
      });
    },
    stat: (path, follow) => route(path, false, (remotePath) => remote(() => agent.stat(remotePath, follow))),
    access: (path, mode) => route(path, false, (remotePath) => remote(() => agent.access(remotePath, mode))),
    readlink: (path) => route(path, false, (remotePath) => remote(() => agent.readlink(remotePath))),
    listdir: (path) => route(path, false, (remotePath) => remote<DirEntry[]>(() => agent.readdir(remotePath))),
    realpath: (path) => route(path, false, (remotePath) => remote(() => agent.realpath(remotePath))),
  };
}

async function readRest(agent: AgentClient, path: string, first: { stat: RemoteStat; data: Uint8Array; eof: boolean }): Promise<Uint8Array> {
  if (first.eof) return first.data;
  const pieces = [first.data];
  let offset = first.data.length;
  for (;;) {
    const next = await agent.read(path, offset, READ_PIECE);
    pieces.push(next.data);
    offset += next.data.length;
    if (next.eof || next.data.length === 0) return Buffer.concat(pieces);
  }
}
