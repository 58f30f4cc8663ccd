// Command lines and configuration files of each component: etcd, the control plane, containerd, kubelet, kube-proxy.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { kubeconfigFor, pki } from './certs.ts';
import { containerd, images, network, nodeName, ports, stateDir } from './settings.ts';

const file = (name: string, text: string): string => {
  const target = path.join(stateDir, name);
  mkdirSync(path.dirname(target), { recursive: true });
  writeFileSync(target, text);
  return target;
};

export function etcdArgs(): string[] {
  const client = `http://127.0.0.1:${ports.etcdClient}`;
  const peer = `http://127.0.0.1:${ports.etcdPeer}`;
  return [
    '--name=doppel',
    `--data-dir=${path.join(stateDir, 'etcd')}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=doppel=${peer}`,
    '--listen-metrics-urls=http://127.0.0.1:23810',
    // One node on a shared disk: fsync stalls should not cost leadership.
    '--unsafe-no-fsync',
  ];
}

export function apiserverArgs(): string[] {
  return [
    `--etcd-servers=http://127.0.0.1:${ports.etcdClient}`,
    `--advertise-address=${network.nodeIP}`,
    `--bind-address=${network.nodeIP}`,
    `--secure-port=${ports.apiserver}`,
    `--service-cluster-ip-range=${network.serviceCIDR}`,
    `--tls-cert-file=${pki('apiserver.crt')}`,
    `--tls-private-key-file=${pki('apiserver.key')}`,
    `--client-ca-file=${pki('ca.crt')}`,
    `--kubelet-client-certificate=${pki('apiserver-kubelet-client.crt')}`,
    `--kubelet-client-key=${pki('apiserver-kubelet-client.key')}`,
    `--service-account-issuer=https://kubernetes.default.svc`,
    `--service-account-key-file=${pki('service-account.pub')}`,
    `--service-account-signing-key-file=${pki('service-account.key')}`,
    '--authorization-mode=Node,RBAC',
    // The agent pod needs hostPID and NET_ADMIN.
    '--allow-privileged=true',
    '--kubelet-preferred-address-types=InternalIP',
    '--profiling=false',
  ];
}

/** What the controller manager and the scheduler share: one identity, loopback only, no election. */
function controlPlaneArgs(identity: string): string[] {
  const kubeconfig = kubeconfigFor(identity);
  return [
    `--kubeconfig=${kubeconfig}`,
    `--authentication-kubeconfig=${kubeconfig}`,
    `--authorization-kubeconfig=${kubeconfig}`,
    '--bind-address=127.0.0.1',
    '--leader-elect=false',
    '--profiling=false',
  ];
}

export function controllerManagerArgs(): string[] {
  return [
    ...controlPlaneArgs('controller-manager'),
    `--service-account-private-key-file=${pki('service-account.key')}`,
    `--root-ca-file=${pki('ca.crt')}`,
    '--use-service-account-credentials=true',
    `--cluster-cidr=${network.podCIDR}`,
    `--service-cluster-ip-range=${network.serviceCIDR}`,
  ];
}

export function schedulerArgs(): string[] {
  return controlPlaneArgs('scheduler');
}

export const cniConfDir = path.join(stateDir, 'cni', 'net.d');
/** The node's pod addresses: the first /24 of the pod range. */
export const nodePodSubnet = network.podCIDR.replace(/\.0\/\d+$/, '.0/24');

export function writeCniConfig(): void {
  file(
    'cni/net.d/10-doppel.conflist',
    `${JSON.stringify(
      {
        cniVersion: '0.4.0',
        name: 'doppel',
        plugins: [
          {
            type: 'bridge',
            bridge: network.bridge,
            isGateway: true,
            // Pods reach only the cluster's own range, so their traffic needs no masquerade.
            ipMasq: false,
            hairpinMode: true,
            ipam: {
              type: 'host-local',
              dataDir: path.join(stateDir, 'cni', 'ipam'),
              ranges: [[{ subnet: nodePodSubnet }]],
              routes: [{ dst: '0.0.0.0/0' }],
            },
          },
        ],
      },
      null,
      2,
    )}\n`,
  );
}

const runcRoot = path.join(path.dirname(containerd.state), 'runc');

export function containerdConfig(): string {
  return file(
    'containerd.toml',
    `version = 2
root = "${containerd.root}"
state = "${containerd.state}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "${containerd.socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${images.pause}"
  enable_selinux = false
  # This machine withholds CAP_SYS_RESOURCE even from root, so no container may ask for an OOM
  # score below containerd's own (the pause container asks for -998).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "${runcRoot}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${cniConfDir}"
`,
  );
}

export function kubeletArgs(): string[] {
  const config = file(
    'kubelet.yaml',
    `${JSON.stringify(
      {
        apiVersion: 'kubelet.config.k8s.io/v1beta1',
        kind: 'KubeletConfiguration',
        address: network.nodeIP,
        port: ports.kubelet,
        readOnlyPort: 0,
        healthzBindAddress: '127.0.0.1',
        healthzPort: 10248,
        authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: pki('ca.crt') } },
        authorization: { mode: 'Webhook' },
        // This machine mounts cgroup v1 and runs no systemd.
        cgroupDriver: 'cgroupfs',
        failCgroupV1: false,
        containerRuntimeEndpoint: `unix://${containerd.socket}`,
        failSwapOn: false,
        // Images come only from imports; none may ever be collected or pulled.
        imageGCHighThresholdPercent: 100,
        imageGCLowThresholdPercent: 99,
        evictionHard: { 'memory.available': '0%', 'nodefs.available': '0%', 'imagefs.available': '0%' },
        serializeImagePulls: false,
        podLogsDir: path.join(stateDir, 'pod-logs'),
        clusterDNS: [network.clusterDNSIP],
        clusterDomain: 'cluster.local',
        // Pods get the cluster's resolver only, nothing of the host's.
        resolvConf: '',
        makeIPTablesUtilChains: false,
        protectKernelDefaults: false,
      },
      null,
      2,
    )}\n`,
  );
  return [
    `--config=${config}`,
    `--kubeconfig=${kubeconfigFor('kubelet')}`,
    `--root-dir=${path.join(stateDir, 'kubelet')}`,
    `--cert-dir=${path.join(stateDir, 'kubelet', 'pki')}`,
    `--node-ip=${network.nodeIP}`,
    `--hostname-override=${nodeName}`,
    '--v=1',
  ];
}

export function kubeProxyArgs(): string[] {
  const config = file(
    'kube-proxy.yaml',
    `${JSON.stringify(
      {
        apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
        kind: 'KubeProxyConfiguration',
        clientConnection: { kubeconfig: kubeconfigFor('kube-proxy') },
        mode: 'iptables',
        clusterCIDR: network.podCIDR,
        hostnameOverride: nodeName,
        bindAddress: network.nodeIP,
        healthzBindAddress: '127.0.0.1:10256',
        metricsBindAddress: '127.0.0.1:10249',
        // Leave the host's conntrack table size and localhost routing alone.
        conntrack: { maxPerCore: 0 },
        iptables: { localhostNodePorts: false },
      },
      null,
      2,
    )}\n`,
  );
  return [`--config=${config}`];
}
