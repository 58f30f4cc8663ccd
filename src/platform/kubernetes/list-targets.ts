// Every Kubernetes target `--target` accepts in a namespace (or all of them), as `kind/name[/container/c]`.
import type { KubernetesObject, V1Pod, V1Service } from '@kubernetes/client-node';
import { kubernetesKinds, type KubernetesKind } from '../../config/target.ts';
import { DoppelError } from '../../errors.ts';
import { AGENT_LABEL } from './agent-job.ts';
import type { KubeContext } from './kube-context.ts';
import { apiStatus } from './kube-error.ts';
import { kindResources, listKind, type Scope } from './target-kinds.ts';
import { containerNames } from './target-pod.ts';

export interface ListedTarget {
  namespace: string;
  /** `deployment/api`, `pod/api-7d9f-x2k/container/app`. */
  target: string;
}

export interface TargetList {
  targets: ListedTarget[];
  /** Resources left out because this user may not list them (`cronjobs.batch`), for a warning. */
  denied: string[];
}

/**
 * Lists what can be targeted. Pods are listed once per container, and only while Running. ReplicaSets owned by a
 * Deployment and Jobs owned by a CronJob are left out: they come and go with their owner, which is listed.
 * Rollouts only when Argo Rollouts is installed; Services only with a selector. doppel's own agents are no targets.
 */
export async function listTargets(kube: KubeContext, scope: Scope): Promise<TargetList> {
  const denied: string[] = [];
  let firstDenial: DoppelError | undefined;
  let answered = 0;
  const lists = await Promise.all(
    kubernetesKinds.map(async (kind) => {
      try {
        const objects = await listKind(kube, kind, scope);
        answered += 1;
        return objects.flatMap((object) => entries(kind, object));
      } catch (error) {
        if (error instanceof DoppelError && error.code === 'E_TARGET_CRD_MISSING') return [];
        if (error instanceof DoppelError && apiStatus(error.cause) === 403) {
          firstDenial ??= error;
          denied.push(kindResources[kind]);
          return [];
        }
        throw error;
      }
    }),
  );
  // Denied everything: that is the answer, not a warning.
  if (firstDenial !== undefined && answered === 0) throw firstDenial;
  const targets = lists.flat().sort((a, b) => a.namespace.localeCompare(b.namespace) || a.target.localeCompare(b.target));
  return { targets, denied: denied.sort() };
}

function entries(kind: KubernetesKind, object: KubernetesObject): ListedTarget[] {
  const namespace = object.metadata?.namespace ?? '';
  const name = object.metadata?.name ?? '';
  const owners = object.metadata?.ownerReferences ?? [];
  if (object.metadata?.labels?.[AGENT_LABEL] !== undefined) return [];
  switch (kind) {
    case 'pod': {
      const pod = object as V1Pod;
      if (pod.status?.phase !== 'Running' || pod.metadata?.deletionTimestamp !== undefined) return [];
      return containerNames(pod).map((container) => ({ namespace, target: `pod/${name}/container/${container}` }));
    }
    case 'replicaset':
      return owners.some((owner) => owner.kind === 'Deployment') ? [] : [{ namespace, target: `replicaset/${name}` }];
    case 'job':
      return owners.some((owner) => owner.kind === 'CronJob') ? [] : [{ namespace, target: `job/${name}` }];
    case 'service':
      return Object.keys((object as V1Service).spec?.selector ?? {}).length === 0 ? [] : [{ namespace, target: `service/${name}` }];
    default:
      return [{ namespace, target: `${kind}/${name}` }];
  }
}
