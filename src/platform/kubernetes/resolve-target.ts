// Resolves a Kubernetes target (pod, deployment, ..., service) to its running, ready pods, or says exactly why there are none.
import type { KubernetesObject, V1CronJob, V1Deployment, V1Job, V1LabelSelector, V1Pod, V1ReplicaSet, V1Service, V1StatefulSet, CoreV1Event } from '@kubernetes/client-node';
import type { KubernetesKind, Target } from '../../config/target.ts';
import { DoppelError } from '../../errors.ts';
import type { KubeContext } from './kube-context.ts';
import { isNotFound } from './kube-error.ts';
import { closestNames } from './suggest.ts';
import { listKind, readKind, type ArgoRollout } from './target-kinds.ts';
import { chooseContainer, containerNames, oneLine, readyTargetPod, selectorString, whyNotReady, type NotReady, type TargetPod } from './target-pod.ts';

export type { TargetPod } from './target-pod.ts';

export type KubeTarget = Extract<Target, { kind: KubernetesKind }>;

export interface ResolvedTarget {
  kind: KubernetesKind;
  name: string;
  /** For progress lines and errors: "deployment/api in devops-team". */
  description: string;
  namespace: string;
  /** The label selector of the target's pods, for following a workload; unset for a pod target. */
  selector?: string;
  /** A pod target's pod, for following it. */
  podName?: string;
  /** The container the target names, if it names one; pods that join later are held to it too. */
  container?: string;
  /** Running, ready pods whose chosen container runs, sorted by name. */
  pods: TargetPod[];
}

/** What a workload says about the pods it should have. */
interface PodSource {
  selector: string | undefined;
  /** Its desired replica count, when it has one. */
  replicas?: number | undefined;
  /** Why it has no pods when that is by design or by failure: "has finished (Complete)". */
  noPodsBecause?: string | undefined;
  /** A note for the description, e.g. the Job a CronJob runs. */
  via?: string;
}

export async function resolveTarget(kube: KubeContext, target: KubeTarget): Promise<ResolvedTarget> {
  const namespace = kube.namespace;
  const ref = `${target.kind}/${target.name}`;
  const object = await readKind(kube, target.kind, namespace, target.name);
  if (object === undefined) throw await notFound(kube, target, namespace);
  const base = { kind: target.kind, name: target.name, namespace, ...(target.container === undefined ? {} : { container: target.container }) };

  if (target.kind === 'pod') {
    const pod = object as V1Pod;
    const description = `${ref} in ${namespace}`;
    const container = chooseContainer(pod, target.container);
    if (container === undefined) throw missingContainer(description, pod, target.container ?? '');
    const ready = readyTargetPod(pod, target.container);
    if (ready === undefined) {
      const why = await explainPod(kube, pod, container);
      throw new DoppelError('E_TARGET_NOT_READY', `${description} ${why.reason}`, { category: 'target', hint: why.hint });
    }
    return { ...base, description, podName: pod.metadata?.name ?? target.name, pods: [ready] };
  }

  const source = await podSource(kube, target.kind, target.name, object);
  const description = `${ref} in ${namespace}${source.via ? ` (${source.via})` : ''}`;
  const pods = source.selector === undefined ? [] : await listPods(kube, namespace, source.selector);
  if (target.container !== undefined && pods.length > 0 && pods.every((pod) => chooseContainer(pod, target.container) === undefined)) {
    throw missingContainer(description, pods[0]!, target.container);
  }
  const ready = pods
    .map((pod) => readyTargetPod(pod, target.container))
    .filter((pod) => pod !== undefined)
    .sort((a, b) => a.name.localeCompare(b.name));
  if (ready.length === 0) throw await noReadyPod(kube, description, ref, source, pods, target.container);
  return { ...base, description, ...(source.selector === undefined ? {} : { selector: source.selector }), pods: ready };
}

async function podSource(kube: KubeContext, kind: Exclude<KubernetesKind, 'pod'>, name: string, object: KubernetesObject): Promise<PodSource> {
  switch (kind) {
    case 'deployment': {
      const { spec, status } = object as V1Deployment;
      const failed = status?.conditions?.find((c) => (c.type === 'ReplicaFailure' && c.status === 'True') || (c.type === 'Progressing' && c.status === 'False'));
      return { selector: selectorString(spec?.selector), replicas: spec?.replicas, noPodsBecause: failed?.message ? `cannot create its pods: ${oneLine(failed.message)}` : undefined };
    }
    case 'replicaset': {
      const { spec, status } = object as V1ReplicaSet;
      const failed = status?.conditions?.find((c) => c.type === 'ReplicaFailure' && c.status === 'True');
      return { selector: selectorString(spec?.selector), replicas: spec?.replicas, noPodsBecause: failed?.message ? `cannot create its pods: ${oneLine(failed.message)}` : undefined };
    }
    case 'statefulset': {
      const { spec } = object as V1StatefulSet;
      return { selector: selectorString(spec?.selector), replicas: spec?.replicas };
    }
    case 'job':
      return jobSource(object as V1Job);
    case 'cronjob':
      return cronJobSource(kube, object as V1CronJob);
    case 'rollout': {
      const { spec } = object as ArgoRollout;
      return { selector: selectorString(spec?.selector ?? (await referencedSelector(kube, spec?.workloadRef))), replicas: spec?.replicas };
    }
    case 'service': {
      const { spec } = object as V1Service;
      const selector = selectorString({ matchLabels: spec?.selector ?? {} });
      if (selector === undefined) {
        throw new DoppelError('E_TARGET_NOT_READY', `service/${name} in ${kube.namespace} has no selector, so it selects no pods`, {
          category: 'target',
          hint: 'a Service without a selector points at endpoints managed by hand; target their pods or their workload instead',
        });
      }
      return { selector };
    }
  }
}

function jobSource(job: V1Job): PodSource {
  const ended = job.status?.conditions?.find((c) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True');
  const suspended = job.spec?.suspend === true ? 'is suspended' : undefined;
  return { selector: selectorString(job.spec?.selector), noPodsBecause: ended ? `has finished (${ended.type}${ended.message ? `: ${oneLine(ended.message)}` : ''})` : suspended };
}

/** The newest Job of a CronJob that still runs. */
async function cronJobSource(kube: KubeContext, cronJob: V1CronJob): Promise<PodSource> {
  const namespace = kube.namespace;
  const name = cronJob.metadata?.name ?? '';
  const jobs = (await listKind(kube, 'job', { namespace })) as V1Job[];
  const running = jobs
    .filter((job) => job.metadata?.ownerReferences?.some((owner) => owner.uid === cronJob.metadata?.uid))
    .filter((job) => (job.status?.active ?? 0) > 0)
    // Creation times have whole seconds; the CronJob's own Job names grow with the schedule time, so they break ties.
    .sort((a, b) => (b.metadata?.creationTimestamp?.getTime() ?? 0) - (a.metadata?.creationTimestamp?.getTime() ?? 0) || (b.metadata?.name ?? '').localeCompare(a.metadata?.name ?? ''));
  const newest = running[0];
  if (newest === undefined) {
    const last = cronJob.status?.lastScheduleTime;
    const when = last ? `last run ${ago(last)} ago` : 'it has not run yet';
    const suspended = cronJob.spec?.suspend === true ? ', and it is suspended' : '';
    throw new DoppelError('E_TARGET_NOT_READY', `cronjob/${name} in ${namespace} has no running Job (${when}${suspended})`, {
      category: 'target',
      hint: `wait for its next run (schedule "${cronJob.spec?.schedule ?? '?'}"), or start one now: \`kubectl create job --from=cronjob/${name} ${name}-doppel -n ${namespace}\``,
    });
  }
  return { ...jobSource(newest), via: `job ${newest.metadata?.name ?? ''}` };
}

/** Argo Rollouts can take its pod template, and then its selector, from a Deployment (`workloadRef`). */
async function referencedSelector(kube: KubeContext, workloadRef: { kind?: string; name?: string } | undefined): Promise<V1LabelSelector | undefined> {
  if (workloadRef?.kind !== 'Deployment' || workloadRef.name === undefined) return undefined;
  const deployment = (await readKind(kube, 'deployment', kube.namespace, workloadRef.name)) as V1Deployment | undefined;
  return deployment?.spec?.selector;
}

async function listPods(kube: KubeContext, namespace: string, labelSelector: string): Promise<V1Pod[]> {
  const list = await kube.call({ verb: 'list', resource: 'pods', namespace }, () => kube.core.listNamespacedPod({ namespace, labelSelector }));
  return list.items;
}

async function noReadyPod(kube: KubeContext, description: string, ref: string, source: PodSource, pods: V1Pod[], container: string | undefined): Promise<DoppelError> {
  const [kind, name] = ref.split('/') as [string, string];
  const namespace = kube.namespace;
  if (pods.length === 0) {
    if (source.replicas === 0) {
      return new DoppelError('E_TARGET_NOT_READY', `${description} is scaled to zero replicas`, {
        category: 'target',
        hint: `scale it up first: \`kubectl scale ${ref} --replicas=1 -n ${namespace}\``,
      });
    }
    if (source.noPodsBecause !== undefined) {
      return new DoppelError('E_TARGET_NOT_READY', `${description} has no running pod: it ${source.noPodsBecause}`, {
        category: 'target',
        hint: `\`kubectl describe ${kind} ${name} -n ${namespace}\` shows more`,
      });
    }
    return new DoppelError('E_TARGET_NOT_READY', `${description} has no pods${source.selector ? ` (none match ${source.selector})` : ''}`, {
      category: 'target',
      hint: `wait for its pods to be created; \`kubectl describe ${kind} ${name} -n ${namespace}\` shows what its controller says`,
    });
  }
  const reasons = pods
    .map((pod) => ({ pod, why: whyNotReady(pod, chooseContainer(pod, container) ?? '') }))
    .sort((a, b) => b.why.weight - a.why.weight || (a.pod.metadata?.name ?? '').localeCompare(b.pod.metadata?.name ?? ''));
  const { pod } = reasons[0]!;
  const why = await explainPod(kube, pod, chooseContainer(pod, container) ?? '');
  const count = pods.length === 1 ? '1 pod' : `${pods.length} pods`;
  return new DoppelError('E_TARGET_NOT_READY', `${description} has no ready pod (${count}): pod ${pod.metadata?.name ?? ''} ${why.reason}`, { category: 'target', hint: why.hint });
}

/** The status's reason, and for vague ones ("not ready", "being created") the pod's newest warning event. */
async function explainPod(kube: KubeContext, pod: V1Pod, container: string): Promise<NotReady> {
  const why = whyNotReady(pod, container);
  if (why.weight > 2) return why;
  const warning = await latestWarning(kube, pod);
  return warning === undefined ? why : { ...why, reason: `${why.reason} (${warning})` };
}

async function latestWarning(kube: KubeContext, pod: V1Pod): Promise<string | undefined> {
  const namespace = pod.metadata?.namespace ?? kube.namespace;
  let events: CoreV1Event[];
  try {
    const fieldSelector = `involvedObject.kind=Pod,involvedObject.name=${pod.metadata?.name ?? ''},type=Warning`;
    events = (await kube.call({ verb: 'list', resource: 'events', namespace }, () => kube.core.listNamespacedEvent({ namespace, fieldSelector }))).items;
  } catch {
    // Events only add detail; a user who may not read them still gets the status's reason.
    return undefined;
  }
  const time = (event: CoreV1Event) => (event.lastTimestamp ?? event.eventTime ?? event.metadata.creationTimestamp)?.getTime() ?? 0;
  const newest = events.filter((event) => event.involvedObject.uid === pod.metadata?.uid).sort((a, b) => time(b) - time(a))[0];
  return newest === undefined ? undefined : `${newest.reason ?? 'Warning'}: ${oneLine(newest.message ?? '')}`;
}

function missingContainer(description: string, pod: V1Pod, container: string): DoppelError {
  const names = containerNames(pod);
  return new DoppelError('E_TARGET_CONTAINER', `${description} has no container "${container}"`, {
    category: 'target',
    hint: `its containers: ${names.join(', ')}${closestNames(container, names).length > 0 ? `; did you mean ${closestNames(container, names)[0]}?` : ''}`,
  });
}

async function notFound(kube: KubeContext, target: KubeTarget, namespace: string): Promise<DoppelError> {
  const ref = `${target.kind}/${target.name}`;
  // Suggestions are a courtesy: a user who may not list them still gets the plain error.
  const names = await listKind(kube, target.kind, { namespace }).then(namesOf, () => []);
  const similar = closestNames(target.name, names).map((name) => `${target.kind}/${name}`);
  const elsewhere = await listKind(kube, target.kind, { allNamespaces: true }, `metadata.name=${target.name}`).then(
    (objects) => objects.map((object) => object.metadata?.namespace ?? '').filter((ns) => ns !== namespace && ns !== ''),
    () => [],
  );
  const hints: string[] = [];
  if (similar.length > 0) hints.push(`did you mean ${similar.join(' or ')}?`);
  if (elsewhere.length > 0) hints.push(`${ref} exists in namespace ${elsewhere.sort().join(', ')}: pass -n ${elsewhere[0]}`);
  if (names.length === 0 && (await namespaceMissing(kube, namespace))) {
    hints.push('check the namespace given with -n or target.namespace, or the context\'s (`kubectl get namespaces` lists them)');
    return new DoppelError('E_TARGET_NOT_FOUND', `namespace ${namespace} does not exist (looking for ${ref})`, { category: 'target', hint: hints.join('; ') });
  }
  if (hints.length === 0) hints.push(`\`doppel ls -n ${namespace}\` lists the targets there`);
  return new DoppelError('E_TARGET_NOT_FOUND', `${ref} not found in namespace ${namespace}`, { category: 'target', hint: hints.join('; ') });
}

async function namespaceMissing(kube: KubeContext, namespace: string): Promise<boolean> {
  try {
    await kube.core.readNamespace({ name: namespace });
    return false;
  } catch (error) {
    return isNotFound(error);
  }
}

function namesOf(objects: KubernetesObject[]): string[] {
  return objects.map((object) => object.metadata?.name ?? '').filter((name) => name !== '');
}

function ago(time: Date): string {
  const seconds = Math.max(0, Math.round((Date.now() - time.getTime()) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 3600)}h`;
}
