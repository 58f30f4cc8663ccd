// The target's own mounts (from /proc/PID/mountinfo): those its mount namespace has and ours does not, minus kernel
// filesystems. Files under them come from the target even under local roots, as a pod's volumes do.
import { readFile } from 'node:fs/promises';

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
  const [theirs, ours] = await Promise.all([readFile(`/proc/${pid}/mountinfo`, 'utf8'), readFile('/proc/self/mountinfo', 'utf8')]).catch(() => ['', '']);
  const shared = new Set(parse(ours).map((m) => `${m.point} ${m.identity}`));
  return [
    ...new Set(
      parse(theirs)
        .filter((m) => m.point !== '/' && !kernelRoots.test(m.point) && !kernelFilesystems.has(m.fstype) && !shared.has(`${m.point} ${m.identity}`))
        .map((m) => m.point),
    ),
  ];
}
