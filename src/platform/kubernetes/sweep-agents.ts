// Removes agent Jobs that dead sessions left: ones whose CLI ran on this host and is gone, ones already finished, and
// parked ones whose ttl has passed; a parked one still within its ttl waits for the next session, whatever its CLI.
import { hostname } from 'node:os';
import { isAlive } from '../../process-alive.ts';
import { CLIENT_ANNOTATION, MANAGED_BY } from './agent-job.ts';
import type { KubeContext } from './kube-context.ts';
import { finished, parkedUntil } from './warm-agents.ts';

/** Best effort, in the background of a start: a Job it cannot list or delete ends by its own deadline anyway. */
export async function sweepDeadAgents(kube: KubeContext, namespace: string): Promise<void> {
  const [key, value] = Object.entries(MANAGED_BY)[0]!;
  const jobs = await kube.batch.listNamespacedJob({ namespace, labelSelector: `${key}=${value}` }).then((list) => list.items, () => []);
  const here = hostname();
  const now = Date.now();
  for (const job of jobs) {
    const [host, pid] = (job.metadata?.annotations?.[CLIENT_ANNOTATION] ?? '').split('/');
    const parked = parkedUntil(job);
    const orphaned = parked === undefined ? host === here && pid !== undefined && !isAlive(Number(pid)) : !(parked > now);
    if (!finished(job) && !orphaned) continue;
    await kube.batch.deleteNamespacedJob({ name: job.metadata!.name!, namespace, propagationPolicy: 'Background' }).catch(() => undefined);
  }
}
