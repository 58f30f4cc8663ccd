// Paths of the target's files as seen from the agent, which keeps the host's mount namespace: every component walked
// under /proc/PID/root by hand, so that no symlink or `..` leads outside the target's root.
import { lstatSync, readlinkSync } from 'node:fs';
import { RemoteError } from '../protocol/errors.ts';

/** As in Linux's path walk: more links than this in one lookup is ELOOP. */
const MAX_LINKS = 40;

/**
 * Walks `path` component by component under `root`: `..` stops at the root, and an
 * absolute symlink restarts at the root, as if the target had chrooted there.
 */
export async function resolveInRoot(root: string, path: string, followLast: boolean): Promise<{ host: string; inside: string }> {
  if (!path.startsWith('/')) throw new RemoteError('EINVAL', `not an absolute path: ${path}`);
  const pending = path.split('/').filter((part) => part !== '');
  const resolved: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const candidate = `${root}/${[...resolved, part].join('/')}`;
    const last = pending.length === 0;
    let isLink = false;
    try {
      // Synchronous: a few µs each on the target's own filesystem, where a trip through libuv's thread pool costs
      // tens and comes back behind whatever else the event loop has queued: one per path component, on every call.
      isLink = lstatSync(candidate).isSymbolicLink();
    } catch (error) {
      if (last && (error as NodeJS.ErrnoException).code === 'ENOENT') {
        resolved.push(part);
        break;
      }
      throw error;
    }
    if (isLink && (!last || followLast)) {
      if (++links > MAX_LINKS) throw new RemoteError('ELOOP', `too many levels of symbolic links: ${path}`);
      const target = readlinkSync(candidate);
      if (target.startsWith('/')) resolved.length = 0;
      pending.unshift(...target.split('/').filter((p) => p !== ''));
      continue;
    }
    resolved.push(part);
  }
  const inside = `/${resolved.join('/')}`;
  // The root itself with a trailing slash: `/proc/PID/root` is a link, and lstat must see the directory behind it.
  return { host: resolved.length === 0 ? `${root}/` : `${root}${inside}`, inside };
}
