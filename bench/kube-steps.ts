// Times the Kubernetes platform's start one step at a time, with the platform's own functions, on one clock: the Job's
// creation, its pod appearing, the launcher's process start and first log lines, the pod seen running, the port-forward
// admitted, the handshake and the first request; then a second port-forward to the running launcher.
import { Watch, type V1Pod } from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { findContainerProcess } from '../src/agent/find-container-process.ts';
import { resolveConfig } from '../src/config/resolve.ts';
import { parseTarget } from '../src/config/target.ts';
import { AGENT_CONTAINER, AGENT_LABEL, agentJob } from '../src/platform/kubernetes/agent-job.ts';
import { linkToAgent } from '../src/platform/kubernetes/agent-link.ts';
import { waitForAgentPod } from '../src/platform/kubernetes/agent-pod.ts';
import { loadKubeContext, type KubeContext } from '../src/platform/kubernetes/kube-context.ts';
import { resolveTarget, type KubeTarget } from '../src/platform/kubernetes/resolve-target.ts';
import { connectAgent } from '../src/proxy/agent-client.ts';

/** Milliseconds since the run began (before the kubeconfig is read), each a moment on this machine's clock. */
export interface StepTimeline {
  contextLoaded: number;
  targetResolved: number;
  jobCreated: number;
  /** The Job controller's pod, first seen by a watch. */
  podSeen: number;
  /** Kubelet reported the sandbox's IP: the pod's network exists. */
  podIPSeen: number;
  /** The launcher's process began (from /proc/PID/stat, 10 ms resolution). */
  launcherStarted: number;
  /** The launcher's log line after it found the target's process (container runtime's timestamp). */
  launcherFoundTarget: number;
  /** The launcher's log line once it listens. */
  launcherListening: number;
  /** waitForAgentPod returned: the watch saw the container running. */
  podRunningSeen: number;
  /** linkToAgent returned: a port-forward carried the token and the launcher admitted it. */
  linked: number;
  handshaken: number;
  envRead: number;
  /** A second port-forward and admission to the same, running launcher: the link's own cost, in ms. */
  secondLinkMs: number;
}

export async function timePlatformSteps(kubeconfig: string, namespace: string, targetPath: string): Promise<StepTimeline> {
  const start = performance.now();
  const at = () => performance.now() - start;
  const fromEpoch = (epochMs: number) => epochMs - (performance.timeOrigin + start);

  const config = resolveConfig({});
  const kube = await loadKubeContext({ kubeconfig, namespace });
  const contextLoaded = at();
  const resolved = await resolveTarget(kube, parseTarget(targetPath) as KubeTarget);
  const targetResolved = at();
  const pod = resolved.pods[0]!;

  const job = `doppel-agent-bench-${randomBytes(3).toString('hex')}`;
  const token = randomBytes(24).toString('base64url');
  const seen: { pod?: number; podIP?: number } = {};
  const watching = await new Watch(kube.config).watch(
    `/api/v1/namespaces/${namespace}/pods`,
    { labelSelector: `${AGENT_LABEL}=${job}` },
    (_phase, object: V1Pod) => {
      seen.pod ??= at();
      if (object.status?.podIP) seen.podIP ??= at();
    },
    () => {},
  );
  const spec = agentJob({ name: job, sessionId: 'bench', target: { pod: pod.name, namespace: pod.namespace, nodeName: pod.nodeName, uid: pod.uid, containerId: pod.containerId }, agent: config.agent, token, deadlineSeconds: 600, configDigest: 'bench' });
  await kube.batch.createNamespacedJob({ namespace, body: spec });
  const jobCreated = at();
  try {
    const timeoutMs = config.agent.startup_timeout * 1000;
    const agentPod = await waitForAgentPod(kube, namespace, job, timeoutMs);
    const podRunningSeen = at();
    const link = await linkToAgent(kube, namespace, agentPod, token, timeoutMs);
    const linked = at();
    const client = await connectAgent(link.stream, { handshakeTimeoutMs: timeoutMs });
    const handshaken = at();
    await client.env(true);
    const envRead = at();

    const before = performance.now();
    const second = await linkToAgent(kube, namespace, agentPod, token, timeoutMs);
    const secondLinkMs = performance.now() - before;
    second.stream.destroy();

    const launcher = await launcherTimes(kube, namespace, agentPod);
    client.close();
    link.stream.destroy();
    watching.abort();
    return {
      contextLoaded,
      targetResolved,
      jobCreated,
      podSeen: seen.pod ?? NaN,
      podIPSeen: seen.podIP ?? NaN,
      launcherStarted: fromEpoch(launcher.startedEpochMs),
      launcherFoundTarget: fromEpoch(launcher.foundTargetEpochMs),
      launcherListening: fromEpoch(launcher.listeningEpochMs),
      podRunningSeen,
      linked,
      handshaken,
      envRead,
      secondLinkMs,
    };
  } finally {
    watching.abort();
    await kube.batch.deleteNamespacedJob({ name: job, namespace, propagationPolicy: 'Background', gracePeriodSeconds: 0 }).catch(() => undefined);
  }
}

/** When the launcher's process began, and the container runtime's timestamps of its first two log lines (epoch ms). */
async function launcherTimes(kube: KubeContext, namespace: string, pod: string) {
  const object = await kube.core.readNamespacedPod({ name: pod, namespace });
  const containerId = object.status?.containerStatuses?.find((c) => c.name === AGENT_CONTAINER)?.containerID ?? '';
  const pid = await findContainerProcess(containerId);
  if (pid === undefined) throw new Error(`no process for the agent container ${containerId}`);
  const log = await kube.core.readNamespacedPodLog({ name: pod, namespace, container: AGENT_CONTAINER, timestamps: true });
  const stamp = (pattern: RegExp) => {
    const line = log.split('\n').find((l) => pattern.test(l));
    return line ? Date.parse(line.split(' ')[0]!) : NaN;
  };
  return { startedEpochMs: await processStartEpochMs(pid), foundTargetEpochMs: stamp(/target container .* is process/), listeningEpochMs: stamp(/listening on/) };
}

/** A process's start as epoch ms: its start in clock ticks since boot, against the uptime read now. */
async function processStartEpochMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command's closing parenthesis; starttime is field 22 overall, the 20th after it.
  const startTicks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  const now = Date.now();
  const uptimeSeconds = Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]);
  const ticksPerSecond = 100;
  return now - uptimeSeconds * 1000 + (startTicks / ticksPerSecond) * 1000;
}
