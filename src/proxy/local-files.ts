// The target's files read by the proxy itself, where the platform can reach them (a local process: /proc/PID/root,
// read with the agent's own module): a program's reads skip the round trip through the agent, and do not wait for it
// to start.
import { lstatSync } from 'node:fs';
import { createFiles, toStat } from '../agent/files.ts';
import { resolveInRoot } from '../agent/root-path.ts';
import type { AgentClient } from './agent-client.ts';
import { INLINE_LIMIT } from './fetch-file.ts';

export type FileCalls = Pick<AgentClient, 'stat' | 'fetch' | 'readdir' | 'readlink' | 'access' | 'realpath'> & Required<Pick<AgentClient, 'hostFile'>>;

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

/**
 * The target's files under `root`, in the agent client's shape; a failure carries its errno's name as `code`, as the
 * agent's answers do, which is all the proxy's answers take from it. What the agent would stream (a file over the
 * inline limit, one that grew while read, a special file) is still fetched through the agent (`fetchThroughAgent`),
 * which streams it without blocking the proxy.
 */
export function localFileCalls(root: string, fetchThroughAgent: AgentClient['fetch'], onCall?: (op: string) => (servedMs: number | undefined) => void): FileCalls {
  const files = createFiles(root);
  /** Runs one of the agent's handlers here: told to `--trace` as `<op> (local)`, its whole time as the agent's. */
  const local = async <T>(op: string, call: () => Promise<T>): Promise<T> => {
    const done = onCall?.(`${op} (local)`);
    const start = done && performance.now();
    try {
      return await call();
    } finally {
      done?.(performance.now() - start!);
    }
  };
  return {
    stat: (path, follow) => local('fs.stat', () => files.stat({ path, follow })),
    async fetch(path) {
      const { stat, data } = await local('fs.get', () => files.get({ path, upTo: INLINE_LIMIT }));
      if (data !== undefined) return { stat, data };
      if ((stat.mode & S_IFMT) === S_IFDIR) return { stat, data: new Uint8Array(0) };
      return fetchThroughAgent(path);
    },
    readdir: async (path) => (await local('fs.readdir', () => files.readdir({ path }))).entries,
    readlink: async (path) => (await local('fs.readlink', () => files.readlink({ path }))).target,
    access: async (path, mode) => {
      await local('fs.access', () => files.access({ path, mode }));
    },
    realpath: async (path) => (await local('fs.realpath', () => files.realpath({ path }))).path,
    hostFile: (path) =>
      local('fs.hostPath', async () => {
        const { host } = await resolveInRoot(root, path, true);
        const stat = toStat(lstatSync(host, { bigint: true }));
        return (stat.mode & S_IFMT) === S_IFREG ? { stat, hostPath: host } : undefined;
      }),
  };
}
