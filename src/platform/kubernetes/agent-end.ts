// Says how an agent ended once its port-forward closed: its container's exit, its pod's deletion, or only the link.
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubeContext } from './kube-context.ts';

export interface AgentWhereabouts {
  namespace: string;
  pod: string;
  container: string;
  ephemeral: boolean;
}

/** The kubelet reports a container's end a moment after its processes go; this long is worth waiting for the reason. */
const SETTLE_MS = 3000;

/** Completes "the agent in ... <how> while the program ran": "was killed (exit code 137)", "went away with its pod", ... */
export async function howAgentEnded(kube: KubeContext, where: AgentWhereabouts, linkSaid: string): Promise<string> {
  const deadline = Date.now() + SETTLE_MS;
  for (;;) {
    const pod = await kube.core.readNamespacedPod({ name: where.pod, namespace: where.namespace }).catch(() => undefined);
    if (pod === undefined || pod.metadata?.deletionTimestamp !== undefined) return `went away: pod ${where.pod} was deleted`;
    const statuses = where.ephemeral ? pod.status?.ephemeralContainerStatuses : pod.status?.containerStatuses;
    const ended = statuses?.find((s) => s.name === where.container)?.state?.terminated;
    if (ended) return ended.exitCode === 137 ? `was killed (exit code 137${ended.reason && ended.reason !== 'Error' ? `, ${ended.reason}` : ''})` : `exited with code ${ended.exitCode}`;
    if (Date.now() > deadline) return `lost its link (${linkSaid})`;
    await sleep(250);
  }
}
