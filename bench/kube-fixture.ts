// The Kubernetes benchmark's own namespace on the test cluster: a target Deployment (busybox httpd, a 4 KiB file from a
// ConfigMap under /etc, and a Node container beside it that runs the direct case in the same pod), an HTTP Service and a
// UDP echo Service.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { findContainerProcess } from '../src/agent/find-container-process.ts';
import { defaultAgentImage } from '../src/platform/kubernetes/agent-image.ts';
import { apply, createNamespace, deployment, httpdContainer, kubectl, rolloutStatus } from '../test/kubernetes/support/cluster.ts';

const workloads = fileURLToPath(new URL('./workloads/', import.meta.url));
/** The workloads the direct container runs, mounted at /bench from a ConfigMap. */
const workloadFiles = ['file-loop.mjs', 'dns-loop.mjs', 'http-loop.mjs', 'udp-loop.mjs', 'resolve-loop.mjs'];
/** A UDP echo in Node (the test app image has no UDP server). */
const udpEcho = "const s = require('dgram').createSocket('udp4'); s.on('message', (m, r) => s.send(m, r.port, r.address)); s.bind(7007)";

export interface KubeFixture {
  namespace: string;
  /** `deployment/NAME`, one replica. */
  target: string;
  /** The 4 KiB file, mounted from a ConfigMap at the same path in both containers of the target pod. */
  filePath: string;
  /** The Service's short name and port: another Deployment's httpd. */
  service: { name: string; port: number };
  /** The UDP echo Service's cluster IP and port. */
  udpEcho: { address: string; port: number };
  /** The HTTP Service's full name, for resolvers that do not search (c-ares). */
  serviceFqdn: string;
  /** The host PID of the target container's main process, for the process platform. */
  appPid: number;
  /** Runs a workload with Node in the target pod's `direct` container (same network namespace, same mounts); its JSON output. */
  runDirect(script: string, args: string[]): Promise<number[]>;
  remove(): Promise<void>;
}

export async function createKubeFixture(): Promise<KubeFixture> {
  const ns = await createNamespace('bench');
  const namespace = ns.name;
  try {
    const filePath = '/etc/bench/4k.bin';
    // Printable, so that it travels in a ConfigMap's data.
    const content = 'doppel-bench-4k\n'.repeat(256);
    const bench = { name: 'bench', mountPath: '/etc/bench' };
    const direct = {
      name: 'direct',
      image: defaultAgentImage(),
      imagePullPolicy: 'Never',
      command: ['/usr/local/bin/node', '-e', "process.on('SIGTERM', () => process.exit(0)); setInterval(() => {}, 3600e3)"],
      volumeMounts: [bench, { name: 'workloads', mountPath: '/bench' }],
    };
    await apply([
      { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'bench-file', namespace }, data: { '4k.bin': content } },
      {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: 'bench-workloads', namespace },
        data: Object.fromEntries(workloadFiles.map((file) => [file, readFileSync(`${workloads}${file}`, 'utf8')])),
      },
      deployment(namespace, 'bench-app', 1, [{ ...httpdContainer(), volumeMounts: [bench] }, direct], {
        volumes: [
          { name: 'bench', configMap: { name: 'bench-file' } },
          { name: 'workloads', configMap: { name: 'bench-workloads' } },
        ],
      }),
      deployment(namespace, 'bench-svc', 1),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'bench-svc', namespace }, spec: { selector: { app: 'bench-svc' }, ports: [{ port: 80, targetPort: 8080 }] } },
      deployment(namespace, 'bench-echo', 1, [{ name: 'echo', image: defaultAgentImage(), imagePullPolicy: 'Never', command: ['/usr/local/bin/node', '-e', udpEcho] }]),
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'bench-echo', namespace }, spec: { selector: { app: 'bench-echo' }, ports: [{ port: 7007, protocol: 'UDP' }] } },
    ]);
    await rolloutStatus('deployment/bench-app', namespace);
    await rolloutStatus('deployment/bench-svc', namespace);
    await rolloutStatus('deployment/bench-echo', namespace);
    const echoAddress = (await kubectl(['get', 'service', 'bench-echo', '-n', namespace, '-o', 'jsonpath={.spec.clusterIP}'])).trim();
    const [pod, containerId] = (await kubectl(['get', 'pods', '-n', namespace, '-l', 'app=bench-app', '-o', 'jsonpath={.items[0].metadata.name} {.items[0].status.containerStatuses[?(@.name=="app")].containerID}'])).split(' ');
    const appPid = await findContainerProcess(containerId ?? '');
    if (!pod || appPid === undefined) throw new Error(`no process found for the bench-app pod's app container (${containerId})`);
    return {
      namespace,
      target: 'deployment/bench-app',
      filePath,
      service: { name: 'bench-svc', port: 80 },
      udpEcho: { address: echoAddress, port: 7007 },
      serviceFqdn: `bench-svc.${namespace}.svc.cluster.local`,
      appPid,
      async runDirect(script, args) {
        const out = await kubectl(['exec', '-n', namespace, pod, '-c', 'direct', '--', '/usr/local/bin/node', `/bench/${script}`, ...args]);
        return JSON.parse(out) as number[];
      },
      remove: () => ns.remove(),
    };
  } catch (error) {
    await ns.remove();
    throw error;
  }
}
