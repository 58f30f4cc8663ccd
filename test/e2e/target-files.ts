// Reads the target's files from inside its mount namespace (nsenter), never through doppel: what a write really left there.
import { execFileSync } from 'node:child_process';

export interface TreeEntry {
  mode: number;
  /** A regular file's content; directories have none. */
  content?: string;
}

/** Every entry under `dir` in the target (its path relative to `dir`, `.` for itself), with its permission bits and content. */
export function targetTree(pid: number, dir: string): Record<string, TreeEntry> {
  const script = 'cd "$1" && find . -printf "%y %m %P\\n" | sort -k3 && find . -type f -printf "%P\\n" | sort | while read -r f; do printf "=== %s\\n" "$f"; base64 -w0 "$f"; echo; done';
  const out = inTarget(pid, ['sh', '-c', script, 'sh', dir]);
  const [listing = '', ...files] = out.split('=== ');
  const tree: Record<string, TreeEntry> = {};
  for (const line of listing.split('\n').filter((l) => l !== '')) {
    const [type, mode, ...name] = line.split(' ');
    tree[name.join(' ') || '.'] = type === 'f' ? { mode: parseInt(mode!, 8), content: '' } : { mode: parseInt(mode!, 8) };
  }
  for (const file of files) {
    const [name = '', data = ''] = file.split('\n');
    tree[name]!.content = Buffer.from(data, 'base64').toString();
  }
  return tree;
}

/** Runs a command in the target's mount namespace and returns its stdout. */
export function inTarget(pid: number, command: string[]): string {
  return execFileSync('nsenter', ['-t', String(pid), '-m', '--', ...command], { encoding: 'utf8' });
}
