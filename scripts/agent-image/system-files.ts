// The image's base layer: the directories and few /etc files a Debian slim image has, Node.js, and the host's nsenter, iptables and conntrack with their libraries.
import type { Entry } from './entries.ts';
import { hostEntries } from './host-files.ts';
import type { NodePackage } from './node-binary.ts';

export const nodePath = '/usr/local/bin/node';

const base: Entry[] = [
  ...['/dev', '/proc', '/sys', '/run', '/var', '/etc'].map((dir): Entry => ({ kind: 'dir', path: dir, mode: 0o755 })),
  { kind: 'dir', path: '/root', mode: 0o700 },
  { kind: 'dir', path: '/tmp', mode: 0o1777 },
  { kind: 'text', path: '/etc/passwd', content: 'root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n', mode: 0o644 },
  { kind: 'text', path: '/etc/group', content: 'root:x:0:\nnogroup:x:65534:\n', mode: 0o644 },
  { kind: 'text', path: '/etc/nsswitch.conf', content: 'passwd: files\ngroup: files\nhosts: files dns\n', mode: 0o644 },
];

export function systemEntries(node: NodePackage): Entry[] {
  return [
    ...base,
    { kind: 'file', path: nodePath, source: node.binary, mode: 0o755 },
    { kind: 'file', path: '/usr/local/share/doc/node/LICENSE', source: node.license, mode: 0o644 },
    ...hostEntries(node.binary),
  ];
}
