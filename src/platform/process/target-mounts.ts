// The target's own mounts (from /proc/PID/mountinfo): those its mount namespace has and ours does not, minus kernel
// filesystems. Files under them come from the target even under local roots, as a pod's volumes do.
import { readFileSync } from 'node:fs';

const kernelFilesystems = new Set(['proc', 'sysfs', 'cgroup', 'cgroup2', 'devpts', 'devtmpfs', 'mqueue', 'securityfs', 'debugfs', 'tracefs', 'bpf', 'pstore', 'hugetlbfs', 'fusectl', 'configfs', 'binfmt_misc', 'autofs', 'nsfs']);
const kernelRoots = /^\/(proc|sys|dev)(\/|$)/;

interface Mount {
  point: string;
  /** What is mounted, independent of where: device, root within it, filesystem. */
  identity: string;
  fstype: string;
}

function parse(mountinfo: string): Mount[] {
  return mountinfo
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [left = '', right = ''] = line.split(' - ');
      const fields = left.split(' ');
      const [fstype = '', source = ''] = right.split(' ');
      const point = (fields[4] ?? '').replace(/\\(\d{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
      return { point, identity: `${fields[2]} ${fields[3]} ${fstype} ${source}`, fstype };
    });
}

export async function targetMounts(pid: number): Promise<string[]> {
  // Read at once: two small files of the kernel's, where a FileHandle's open, stat and reads cost more than the read.
  const [theirs, ours] = readBoth(`/proc/${pid}/mountinfo`, '/proc/self/mountinfo');
  const shared = new Set(parse(ours).map((m) => `${m.point} ${m.identity}`));
  return [
    ...new Set(
      parse(theirs)
        .filter((m) => m.point !== '/' && !kernelRoots.test(m.point) && !kernelFilesystems.has(m.fstype) && !shared.has(`${m.point} ${m.identity}`))
        .map((m) => m.point),
    ),
  ];
}

function readBoth(first: string, second: string): [string, string] {
  try {
    return [readFileSync(first, 'utf8'), readFileSync(second, 'utf8')];
  } catch {
    return ['', ''];
  }
}
