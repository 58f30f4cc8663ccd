// Removes agent Jobs that dead sessions left: ones whose CLI ran on this host and is gone, and ones already finished.
import { hostname } from 'node:os';
import { isAlive } from '../../proxy/proxy.ts';
import { CLIENT_ANNOTATION, MANAGED_BY } from './agent-job.ts';
import type { KubeContext } from './kube-context.ts';

/** Best effort, in the background of a start: a Job it cannot list or delete ends by its own deadline anyway. */
export async function sweepDeadAgents(kube: KubeContext, namespace: string): Promise<void> {
  const [key, value] = Object.entries(MANAGED_BY)[0]!;
  const jobs = await kube.batch.listNamespacedJob({ namespace, labelSelector: `${key}=${value}` }).then((list) => list.items, () => []);
  const here = hostname();
  for (const job of jobs) {
    const [host, pid] = (job.metadata?.annotations?.[CLIENT_ANNOTATION] ?? '').split('/');
    const finished = job.status?.completionTime !== undefined || (job.status?.failed ?? 0) > 0;
    const orphaned = host === here && pid !== undefined && !isAlive(Number(pid));
    if (!finished && !orphaned) continue;
    await kube.batch.deleteNamespacedJob({ name: job.metadata!.name!, namespace, propagationPolicy: 'Background' }).catch(() => undefined);
  }
}
