// One pod as a target: which of its containers doppel attaches to, whether it is ready for that, and if not, why.
import type { V1ContainerStatus, V1LabelSelector, V1Pod } from '@kubernetes/client-node';
import { isMeshSidecar } from './mesh-sidecars.ts';

/** A running, ready pod and the container an agent attaches to. */
export interface TargetPod {
  name: string;
  namespace: string;
  uid: string;
  nodeName: string;
  podIP: string;
  container: string;
  /** As the pod's status has it, runtime prefix included: `containerd://0123...`. */
  containerId: string;
}

const defaultContainerAnnotation = 'kubectl.kubernetes.io/default-container';

/** Every container a target may name: the regular ones and native sidecars (init containers that keep running). */
export function containerNames(pod: V1Pod): string[] {
  const sidecars = (pod.spec?.initContainers ?? []).filter((c) => c.restartPolicy === 'Always').map((c) => c.name);
  return [...(pod.spec?.containers ?? []).map((c) => c.name), ...sidecars];
}

/** The named container, else the default-container annotation's, else the first that is not a mesh sidecar; undefined when a named one does not exist. */
export function chooseContainer(pod: V1Pod, requested: string | undefined): string | undefined {
  const names = containerNames(pod);
  if (requested !== undefined) return names.includes(requested) ? requested : undefined;
  const annotated = pod.metadata?.annotations?.[defaultContainerAnnotation];
  if (annotated !== undefined && names.includes(annotated)) return annotated;
  const regular = (pod.spec?.containers ?? []).map((c) => c.name);
  return regular.find((name) => !isMeshSidecar(name)) ?? regular[0];
}

function containerStatus(pod: V1Pod, container: string): V1ContainerStatus | undefined {
  return [...(pod.status?.containerStatuses ?? []), ...(pod.status?.initContainerStatuses ?? [])].find((s) => s.name === container);
}

/** Whether the pod still runs `target`'s container (the same one: its id unchanged), ready or not, and is not going away. */
export function stillRuns(pod: V1Pod, target: TargetPod): boolean {
  const status = containerStatus(pod, target.container);
  return pod.metadata?.deletionTimestamp === undefined && status?.state?.running !== undefined && status.containerID === target.containerId;
}

/** The pod as a target if it is running, ready, not going away, and its chosen container runs; else undefined. */
export function readyTargetPod(pod: V1Pod, requested: string | undefined): TargetPod | undefined {
  const container = chooseContainer(pod, requested);
  if (container === undefined || pod.metadata?.deletionTimestamp !== undefined || pod.status?.phase !== 'Running') return undefined;
  const ready = pod.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
  const status = containerStatus(pod, container);
  if (!ready || status?.state?.running === undefined || !status.containerID || !pod.status.podIP || !pod.spec?.nodeName) return undefined;
  return {
    name: pod.metadata?.name ?? '',
    namespace: pod.metadata?.namespace ?? '',
    uid: pod.metadata?.uid ?? '',
    nodeName: pod.spec.nodeName,
    podIP: pod.status.podIP,
    container,
    containerId: status.containerID,
  };
}

export interface NotReady {
  /** Completes "pod NAME ...": "is Pending: 0/1 nodes are available: ...". */
  reason: string;
  hint: string;
  /** Higher is more telling: a crash or an unschedulable pod beats "not ready yet". */
  weight: number;
}

const imagePullReasons = new Set(['ImagePullBackOff', 'ErrImagePull', 'InvalidImageName', 'ErrImageNeverPull', 'RegistryUnavailable']);

/** Why a pod does not count as ready, from its status alone (events can add detail, see resolve-target). */
export function whyNotReady(pod: V1Pod, container: string): NotReady {
  const name = pod.metadata?.name ?? '';
  const namespace = pod.metadata?.namespace ?? '';
  const describe = `\`kubectl describe pod ${name} -n ${namespace}\` shows its events`;
  if (pod.metadata?.deletionTimestamp !== undefined) return { reason: 'is terminating', hint: 'wait for its replacement to start', weight: 1 };
  const phase = pod.status?.phase ?? 'Unknown';
  if (phase === 'Succeeded' || phase === 'Failed') {
    const why = pod.status?.reason ? ` (${pod.status.reason}${pod.status.message ? `: ${pod.status.message}` : ''})` : '';
    return { reason: `has ended: ${phase}${why}`, hint: 'a pod that has ended cannot be a target; start the workload again', weight: 2 };
  }
  const scheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled');
  if (phase === 'Pending' && scheduled?.status === 'False') {
    return {
      reason: `is Pending, not scheduled: ${oneLine(scheduled.message ?? scheduled.reason ?? 'no node chosen yet')}`,
      hint: `check its nodeSelector, affinity, tolerations and resource requests against the nodes; ${describe}`,
      weight: 5,
    };
  }
  for (const status of [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])]) {
    const waiting = status.state?.waiting;
    if (waiting?.reason === undefined || waiting.reason === 'ContainerCreating' || waiting.reason === 'PodInitializing') continue;
    const said = waiting.message ? `: ${oneLine(waiting.message)}` : '';
    const last = status.lastState?.terminated;
    const lastExit = last ? ` (last exit code ${last.exitCode}${last.reason ? `, ${last.reason}` : ''})` : '';
    if (imagePullReasons.has(waiting.reason)) {
      return { reason: `cannot pull the image of container ${status.name}: ${waiting.reason}${said}`, hint: `check the image name, that the registry is reachable from the node, and the pod's imagePullSecrets; ${describe}`, weight: 4 };
    }
    if (waiting.reason === 'CrashLoopBackOff') {
      return {
        reason: `container ${status.name} is in CrashLoopBackOff${lastExit}${said}`,
        hint: `the container keeps exiting; \`kubectl logs ${name} -c ${status.name} --previous -n ${namespace}\` shows why`,
        weight: 4,
      };
    }
    return { reason: `container ${status.name} is waiting: ${waiting.reason}${lastExit}${said}`, hint: describe, weight: 3 };
  }
  const status = containerStatus(pod, container);
  if (phase === 'Pending') return { reason: 'is Pending: its containers are being created', hint: `wait a moment and try again; ${describe}`, weight: 1 };
  if (status?.state?.terminated !== undefined) {
    const ended = status.state.terminated;
    return { reason: `container ${container} has exited (code ${ended.exitCode}${ended.reason ? `, ${ended.reason}` : ''})`, hint: `\`kubectl logs ${name} -c ${container} -n ${namespace}\` shows why`, weight: 3 };
  }
  const readyCondition = pod.status?.conditions?.find((c) => c.type === 'Ready');
  const detail = readyCondition?.message ? `: ${oneLine(readyCondition.message)}` : '';
  return { reason: `is running but not ready${detail}`, hint: `its readiness probe is failing or it is still starting; ${describe}`, weight: 2 };
}

/** A LabelSelector as the `labelSelector` query parameter writes it; undefined when it selects nothing by labels. */
export function selectorString(selector: V1LabelSelector | undefined): string | undefined {
  const parts = Object.entries(selector?.matchLabels ?? {}).map(([key, value]) => `${key}=${value}`);
  for (const expression of selector?.matchExpressions ?? []) {
    const values = (expression.values ?? []).join(',');
    if (expression.operator === 'In') parts.push(`${expression.key} in (${values})`);
    else if (expression.operator === 'NotIn') parts.push(`${expression.key} notin (${values})`);
    else if (expression.operator === 'Exists') parts.push(expression.key);
    else if (expression.operator === 'DoesNotExist') parts.push(`!${expression.key}`);
  }
  return parts.length === 0 ? undefined : parts.join(',');
}

export function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
