// The API calls behind each Kubernetes target kind: read one object, list them in a namespace or in all of them.
import type { KubernetesObject, V1LabelSelector, V1ObjectMeta } from '@kubernetes/client-node';
import type { KubernetesKind } from '../../config/target.ts';
import { DoppelError } from '../../errors.ts';
import { isNotFound, type KubeOperation } from './kube-error.ts';
import type { KubeContext } from './kube-context.ts';

export type Scope = { namespace: string } | { allNamespaces: true };

/** The RBAC resource of each kind, as `kubectl auth can-i` takes it. */
export const kindResources: Record<KubernetesKind, string> = {
  pod: 'pods',
  deployment: 'deployments.apps',
  statefulset: 'statefulsets.apps',
  replicaset: 'replicasets.apps',
  job: 'jobs.batch',
  cronjob: 'cronjobs.batch',
  rollout: 'rollouts.argoproj.io',
  service: 'services',
};

/** Argo Rollouts' API, served only when its CRD is installed. */
const rollouts = { group: 'argoproj.io', version: 'v1alpha1', plural: 'rollouts' } as const;

/** The fields doppel reads from an Argo Rollout (the CRD has no generated type). */
export interface ArgoRollout extends KubernetesObject {
  metadata?: V1ObjectMeta;
  spec?: { replicas?: number; selector?: V1LabelSelector; workloadRef?: { kind?: string; name?: string } };
}

interface ObjectList {
  items: KubernetesObject[];
}

function operation(kind: KubernetesKind, verb: string, scope: Scope, name?: string): Omit<KubeOperation, 'kube'> {
  return 'allNamespaces' in scope ? { verb, resource: kindResources[kind], allNamespaces: true } : { verb, resource: kindResources[kind], namespace: scope.namespace, name };
}

/** Objects of one kind; a field selector narrows them (e.g. `metadata.name=api`). */
export async function listKind(kube: KubeContext, kind: KubernetesKind, scope: Scope, fieldSelector?: string): Promise<KubernetesObject[]> {
  const all = 'allNamespaces' in scope;
  const namespace = all ? '' : scope.namespace;
  const list = (): Promise<ObjectList> => {
    switch (kind) {
      case 'pod':
        return all ? kube.core.listPodForAllNamespaces({ fieldSelector }) : kube.core.listNamespacedPod({ namespace, fieldSelector });
      case 'service':
        return all ? kube.core.listServiceForAllNamespaces({ fieldSelector }) : kube.core.listNamespacedService({ namespace, fieldSelector });
      case 'deployment':
        return all ? kube.apps.listDeploymentForAllNamespaces({ fieldSelector }) : kube.apps.listNamespacedDeployment({ namespace, fieldSelector });
      case 'statefulset':
        return all ? kube.apps.listStatefulSetForAllNamespaces({ fieldSelector }) : kube.apps.listNamespacedStatefulSet({ namespace, fieldSelector });
      case 'replicaset':
        return all ? kube.apps.listReplicaSetForAllNamespaces({ fieldSelector }) : kube.apps.listNamespacedReplicaSet({ namespace, fieldSelector });
      case 'job':
        return all ? kube.batch.listJobForAllNamespaces({ fieldSelector }) : kube.batch.listNamespacedJob({ namespace, fieldSelector });
      case 'cronjob':
        return all ? kube.batch.listCronJobForAllNamespaces({ fieldSelector }) : kube.batch.listNamespacedCronJob({ namespace, fieldSelector });
      case 'rollout':
        return (all
          ? kube.custom.listCustomObjectForAllNamespaces({ group: rollouts.group, version: rollouts.version, resourcePlural: rollouts.plural, fieldSelector })
          : kube.custom.listNamespacedCustomObject({ ...rollouts, namespace, fieldSelector })) as Promise<ObjectList>;
    }
  };
  try {
    return (await kube.call(operation(kind, 'list', scope), list)).items;
  } catch (error) {
    if (kind === 'rollout' && error instanceof DoppelError && isNotFound(error.cause)) throw rolloutsMissing(kube);
    throw error;
  }
}

/** One object, or undefined when it does not exist. */
export async function readKind(kube: KubeContext, kind: KubernetesKind, namespace: string, name: string): Promise<KubernetesObject | undefined> {
  const read = (): Promise<KubernetesObject> => {
    switch (kind) {
      case 'pod':
        return kube.core.readNamespacedPod({ namespace, name });
      case 'service':
        return kube.core.readNamespacedService({ namespace, name });
      case 'deployment':
        return kube.apps.readNamespacedDeployment({ namespace, name });
      case 'statefulset':
        return kube.apps.readNamespacedStatefulSet({ namespace, name });
      case 'replicaset':
        return kube.apps.readNamespacedReplicaSet({ namespace, name });
      case 'job':
        return kube.batch.readNamespacedJob({ namespace, name });
      case 'cronjob':
        return kube.batch.readNamespacedCronJob({ namespace, name });
      case 'rollout':
        return kube.custom.getNamespacedCustomObject({ ...rollouts, namespace, name }) as Promise<KubernetesObject>;
    }
  };
  try {
    return await kube.call(operation(kind, 'get', { namespace }, name), read);
  } catch (error) {
    if (error instanceof DoppelError && isNotFound(error.cause)) {
      // A missing Rollout and a missing Rollout CRD both answer 404; only the list tells them apart.
      if (kind === 'rollout' && !(await rolloutsInstalled(kube, namespace))) throw rolloutsMissing(kube);
      return undefined;
    }
    throw error;
  }
}

/** Whether the API server serves Argo Rollouts (its CRD is installed). */
export async function rolloutsInstalled(kube: KubeContext, namespace: string): Promise<boolean> {
  try {
    await kube.call({ verb: 'list', resource: kindResources.rollout, namespace }, () => kube.custom.listNamespacedCustomObject({ ...rollouts, namespace, limit: 1 }));
    return true;
  } catch (error) {
    if (error instanceof DoppelError && isNotFound(error.cause)) return false;
    throw error;
  }
}

function rolloutsMissing(kube: KubeContext): DoppelError {
  return new DoppelError('E_TARGET_CRD_MISSING', `rollout targets need Argo Rollouts, and the cluster of context ${kube.contextName} does not serve rollouts.argoproj.io`, {
    category: 'target',
    hint: 'install Argo Rollouts in the cluster, or target the Deployment or pods instead (`doppel ls` lists them)',
  });
}
