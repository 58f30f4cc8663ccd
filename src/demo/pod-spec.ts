// What the demo pod holds: its variables, its private file, its resolver entries, its cluster-only service and addresses.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { DoppelError } from '../errors.ts';

/** Every demo address is in here; the host gets an `unreachable` route for it while a demo runs. */
export const DEMO_RANGE = '198.18.96.0/20';

export interface PodSpec {
  /** The target app's whole environment, as the pod's process starts with it. */
  env: Record<string, string>;
  /** The variable the sample program reads. */
  variable: string;
  /** A private tmpfs over `mountPoint` in the pod's mount namespace holds `file`. */
  mountPoint: string;
  /** Names the tmpfs, with the demo's PID, so a leftover mount could be traced back to its run. */
  mountSource: string;
  file: { path: string; content: string };
  /** The pod's own /etc/hosts and /etc/resolv.conf. */
  resolver: { hosts: string; resolvConf: string };
  /** The pod's side of the link to the service. */
  podAddress: string;
  service: { name: string; address: string; port: number; url: string; answer: string };
  /** An address in the service's namespace that nothing answers on: the nameserver resolv.conf names. */
  nameserver: string;
  /** Length of the link's prefix, for `ip addr add ADDRESS/PREFIX`. */
  prefix: number;
}

/** Directories any Linux system has and doppel's default file policy reads from the target (not /etc, /tmp, /usr, ...). */
const mountPointChoices = ['/srv', '/mnt', '/media'];

export function createPodSpec(owner: number): PodSpec {
  const mountPoint = mountPointChoices.find((dir) => existsSync(dir));
  if (mountPoint === undefined) {
    throw new DoppelError('E_DEMO_SETUP', `the demo puts the pod's private file under ${mountPointChoices.join(' or ')}, and this machine has none of them`, {
      category: 'usage',
      hint: 'create an empty /srv (mkdir /srv) and run the demo again',
    });
  }
  const token = () => randomBytes(3).toString('hex');
  const podName = `checkout-7c9d5-${token()}`;
  const service = { name: 'orders.shop.svc.cluster.local', address: '198.18.96.20', port: 80 };
  const nameserver = '198.18.96.53';
  return {
    env: {
      PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: '/root',
      HOSTNAME: podName,
      POD_NAME: podName,
      POD_NAMESPACE: 'shop',
    },
    variable: 'POD_NAME',
    mountPoint,
    mountSource: `doppel-demo-${owner}`,
    file: { path: `${mountPoint}/checkout/settings.conf`, content: `payments = sandbox-${token()}\n` },
    resolver: {
      hosts: `127.0.0.1 localhost\n::1 localhost\n${service.address} ${service.name} orders.shop orders\n`,
      resolvConf: `nameserver ${nameserver}\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:1\n`,
    },
    podAddress: '198.18.96.10',
    service: { ...service, url: `http://${service.name}/`, answer: `orders: 3 open (served by orders-${token()})` },
    nameserver,
    prefix: 24,
  };
}
