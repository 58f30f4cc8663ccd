// Warm agents on Kubernetes, seen from the CLI: a session that ends with its agent answering leaves the agent's Job
// running and marks it parked until its ttl passes (the launcher waits that long for the next client, its agent already
// started); the next session on the same target pod (same uid, same container) with the same agent settings claims it
// by one conditional patch, so that of two CLIs at once one reuses it and the other starts a fresh agent.
import { PatchStrategy, setHeaderOptions, type V1Job } from '@kubernetes/client-node';
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import process from 'node:process';
import type { ResolvedConfig } from '../../config/schema.ts';
import { tracing } from '../../trace.ts';
import { AGENT_CONFIG_LABEL, AGENT_CONTAINER, AGENT_POD_ANNOTATION, CLIENT_ANNOTATION, MANAGED_BY, PARKED_UNTIL_ANNOTATION, SESSION_LABEL, TARGET_CONTAINER_ANNOTATION, TARGET_UID_LABEL } from './agent-job.ts';
import type { KubeContext } from './kube-context.ts';
import { apiStatus } from './kube-error.ts';
import type { TargetPod } from './target-pod.ts';

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

export interface ParkedAgent {
  job: string;
  namespace: string;
  pod: string;
  token: string;
  targetUid: string;
  containerId: string;
  /** Its parked-until mark: the same mark on a second read means the same parking, unclaimed. */
  parkedUntil: number;
  resourceVersion: string;
}

/** Everything the agent's Job is made of but the session's own values (names, token, target): equal digests, same agent. */
export function agentConfigDigest(agent: ResolvedConfig['agent'], deadlineSeconds: number): string {
  return createHash('sha256')
    .update(JSON.stringify({ agent, deadlineSeconds, trace: tracing() }))
    .digest('hex')
    .slice(0, 32);
}

/** Parked agents with these settings in the namespace whose ttl has not passed; [] when they cannot be listed. */
export async function listParkedAgents(kube: KubeContext, namespace: string, digest: string): Promise<ParkedAgent[]> {
  const [key, value] = Object.entries(MANAGED_BY)[0]!;
  const jobs = await kube.batch.listNamespacedJob({ namespace, labelSelector: `${key}=${value},${AGENT_CONFIG_LABEL}=${digest}` }).then(
    (list) => list.items,
    () => [],
  );
  const now = Date.now();
  return jobs.flatMap((job) => {
    const parked = parkedUntil(job);
    const annotations = job.metadata?.annotations ?? {};
    const token = job.spec?.template.spec?.containers.find((c) => c.name === AGENT_CONTAINER)?.env?.find((e) => e.name === 'DOPPEL_AGENT_TOKEN')?.value;
    const pod = annotations[AGENT_POD_ANNOTATION];
    if (parked === undefined || !(parked > now) || finished(job) || job.metadata?.deletionTimestamp || !token || !pod) return [];
    return [
      {
        job: job.metadata!.name!,
        namespace,
        pod,
        token,
        targetUid: job.metadata?.labels?.[TARGET_UID_LABEL] ?? '',
        containerId: annotations[TARGET_CONTAINER_ANNOTATION] ?? '',
        parkedUntil: parked,
        resourceVersion: job.metadata?.resourceVersion ?? '',
      },
    ];
  });
}

export const parkedFor = (parked: ParkedAgent[], pod: TargetPod) => parked.find((agent) => agent.targetUid === pod.uid && agent.containerId === pod.containerId);

/**
 * Takes a parked agent for this session: the patch holds only if nobody changed the Job since it was read (a
 * resourceVersion precondition), so one of two CLIs wins and the other is told no (409) and starts its own. The Job
 * controller's status updates change the version too: a Job still parked the same way is read again and claimed anew.
 */
export async function claimParkedAgent(kube: KubeContext, agent: ParkedAgent, sessionId: string): Promise<boolean> {
  const { job: name, namespace } = agent;
  let resourceVersion = agent.resourceVersion;
  for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
    const body = {
      metadata: {
        resourceVersion,
        labels: { [SESSION_LABEL]: sessionId },
        annotations: { [PARKED_UNTIL_ANNOTATION]: null, [AGENT_POD_ANNOTATION]: null, [CLIENT_ANNOTATION]: `${hostname()}/${process.pid}` },
      },
    };
    const claimed = await kube.batch.patchNamespacedJob({ name, namespace, body }, mergePatch).then(
      () => true,
      (error: unknown) => (apiStatus(error) === 409 ? undefined : false),
    );
    // Gone (404), not ours to patch (403), ...: this session starts its own.
    if (claimed !== undefined) return claimed;
    const now = await kube.batch.readNamespacedJob({ name, namespace }).catch(() => undefined);
    if (!now || parkedUntil(now) !== agent.parkedUntil || now.metadata?.deletionTimestamp || finished(now)) return false;
    resourceVersion = now.metadata?.resourceVersion ?? '';
  }
  return false;
}

/** A Job the controller keeps updating is not worth more tries than this. */
const CLAIM_ATTEMPTS = 3;

/** Marks a Job whose session ended cleanly as parked for `ttlSeconds`, naming its pod for the next session. */
export async function parkAgent(kube: KubeContext, namespace: string, job: string, pod: string, ttlSeconds: number): Promise<void> {
  const body = { metadata: { annotations: { [PARKED_UNTIL_ANNOTATION]: String(Date.now() + ttlSeconds * 1000), [AGENT_POD_ANNOTATION]: pod } } };
  await kube.batch.patchNamespacedJob({ name: job, namespace, body }, mergePatch);
}

/** When a parked Job's wait ends (ms since the epoch), or undefined for a Job in use. */
export function parkedUntil(job: V1Job): number | undefined {
  const value = job.metadata?.annotations?.[PARKED_UNTIL_ANNOTATION];
  return value === undefined ? undefined : Number(value);
}

export const finished = (job: V1Job): boolean => job.status?.completionTime !== undefined || (job.status?.failed ?? 0) > 0;
