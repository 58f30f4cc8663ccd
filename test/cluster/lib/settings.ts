// Versions, paths and addresses of the test cluster: the one place a reader or another test looks them up.
import { createHash } from 'node:crypto';
import path from 'node:path';
import process from 'node:process';

export const versions = {
  kubernetes: 'v1.34.4',
  /** The staging modules (k8s.io/api, client-go, …) carry the same release as v0.x. */
  kubernetesStaging: 'v0.34.4',
  etcd: 'v3.6.16',
  coredns: 'v1.14.7',
} as const;

/** Build inputs that change the binaries; part of the cache key. */
export const goBuild = {
  tags: 'selinux,notest,grpcnotrace',
  env: { CGO_ENABLED: '0', GOTOOLCHAIN: 'local', GOFLAGS: '-mod=mod -trimpath' },
} as const;

export const kubeCommands = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kube-proxy', 'kubectl'] as const;

/** Survives `down` and re-clones: module and build caches, built binaries and images. */
export const cacheDir = process.env.DOPPEL_CLUSTER_CACHE ?? '/var/cache/doppel-cluster';
/** One cluster's state: certificates, configs, logs, etcd data, pid files. `down` removes it. */
export const stateDir = process.env.DOPPEL_CLUSTER_STATE ?? '/var/lib/doppel-cluster';
export const kubeconfigPath = path.join(stateDir, 'admin.kubeconfig');
/** The cluster's binaries, kubectl among them, linked here while it is up. */
export const binDir = path.join(stateDir, 'bin');
export const logDir = path.join(stateDir, 'logs');

export const nodeName = 'doppel-node';
/** Everything below sits in 198.19.0.0/16, reserved for the cluster and unreachable off this machine. */
export const network = {
  reserved: '198.19.0.0/16',
  nodeInterface: 'doppel0',
  nodeIP: '198.19.0.1',
  podCIDR: '198.19.128.0/17',
  bridge: 'doppelcni0',
  serviceCIDR: '198.19.64.0/20',
  kubernetesServiceIP: '198.19.64.1',
  clusterDNSIP: '198.19.64.10',
} as const;

export const ports = { apiserver: 6443, etcdClient: 2379, etcdPeer: 2380, kubelet: 10250 } as const;

/** The image contract other tests rely on. */
export const images = {
  pause: 'registry.k8s.io/pause:3.10.1',
  testApp: 'doppel.test/app:1',
  coredns: 'doppel.test/coredns:1.14.7',
} as const;

export const containerd = {
  root: path.join(stateDir, 'containerd', 'root'),
  state: '/run/doppel-cluster/containerd',
  socket: '/run/doppel-cluster/containerd/containerd.sock',
  namespace: 'k8s.io',
} as const;

export function cacheKey(...parts: unknown[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 12);
}
