// Waits for an agent container to run (a Job's pod, or an ephemeral container in the target pod), tells the progress
// line what it waits for, and says why when it cannot run: the image, the pod's admission, a crash.
import { Watch, type CoreV1Event, type V1ContainerStatus, type V1Pod } from '@kubernetes/client-node';
import { DoppelError } from '../../errors.ts';
import { lastWord } from '../agent-transport.ts';
import { AGENT_CONTAINER, AGENT_LABEL } from './agent-job.ts';
import type { KubeContext } from './kube-context.ts';
import { apiStatus, kubeError } from './kube-error.ts';
import { oneLine } from './target-pod.ts';

const imageReasons = new Set(['ErrImagePull', 'ImagePullBackOff', 'ErrImageNeverPull', 'InvalidImageName']);
const startReasons = new Set(['CreateContainerConfigError', 'CreateContainerError', 'RunContainerError', 'CrashLoopBackOff']);
/** How often the events of a container that does not run yet are checked for an image pull. */
const PULL_CHECK_MS = 1000;

export interface AgentContainerWait {
  namespace: string;
  /** Selects the one pod that holds the agent container. */
  query: { labelSelector: string } | { fieldSelector: string };
  container: string;
  /** An ephemeral container reports its state in its own status list. */
  ephemeral: boolean;
  timeoutMs: number;
  /** Says what the wait is on now, for the progress line. */
  report(text: string): void;
  /** The error for a container that did not run in time. */
  timedOut(): Promise<DoppelError>;
  /** While there is no pod yet: why the cluster will not make one, if it said so. */
  refused?(): Promise<DoppelError | undefined>;
  /** Told once the pod has a node, so that linking can start before the kubelet reports the container running. */
  placed?(pod: string): void;
  /** Ends the wait early: the caller got what it needed another way, or gave up. */
  signal?: AbortSignal;
}

/** The agent Job's pod name once its container runs; a clear DoppelError when it will not. */
export function waitForAgentPod(
  kube: KubeContext,
  namespace: string,
  job: string,
  timeoutMs: number,
  report: (text: string) => void = () => {},
  early: Pick<AgentContainerWait, 'placed' | 'signal'> = {},
): Promise<string> {
  return waitForAgentContainer(kube, {
    ...early,
    namespace,
    query: { labelSelector: `${AGENT_LABEL}=${job}` },
    container: AGENT_CONTAINER,
    ephemeral: false,
    timeoutMs,
    report,
    timedOut: () => whyNoPod(kube, namespace, job, timeoutMs),
    refused: () => refusal(kube, namespace, job),
  });
}

/** The name of the pod whose agent container runs; rejects with a DoppelError when it will not. */
export async function waitForAgentContainer(kube: KubeContext, wait: AgentContainerWait): Promise<string> {
  let settle: { resolve(pod: string): void; reject(error: Error): void } | undefined;
  const outcome = new Promise<string>((resolve, reject) => (settle = { resolve, reject }));
  let latest: V1Pod | undefined;
  let placed = false;
  let said = '';
  wait.signal?.addEventListener('abort', () => settle?.reject(new Error('the wait for the agent was called off')), { once: true });
  const report = (text: string) => {
    if (text === said) return;
    said = text;
    wait.report(text);
  };
  const watching = new Watch(kube.config).watch(
    `/api/v1/namespaces/${wait.namespace}/pods`,
    wait.query,
    (phase, pod: V1Pod) => {
      latest = pod;
      if (pod.spec?.nodeName && !placed) {
        placed = true;
        wait.placed?.(pod.metadata?.name ?? '');
      }
      const verdict = phase === 'DELETED' ? deleted(pod, wait) : judge(kube, pod, wait);
      if (verdict === undefined) return report(waitingText(pod, statusOf(pod, wait)));
      if (typeof verdict === 'string') settle?.resolve(verdict);
      else verdict.then((error) => settle?.reject(error), (error: Error) => settle?.reject(error));
    },
    (error: unknown) => {
      if (!error) return;
      // An answer from the API server (a 403 most likely) is its own error; anything else is a watch lost on the way.
      if (apiStatus(error) !== undefined) settle?.reject(kubeError(error, { verb: 'watch', resource: 'pods', namespace: wait.namespace, kube }));
      else settle?.reject(new DoppelError('E_AGENT_START', `lost the watch on the agent's pod: ${(error as Error).message}`, { category: 'agent' }));
    },
  );
  // A pull, and a failed one, show first (or only) in events: while the container is not running, look at them.
  const pulling = setInterval(() => {
    if (latest === undefined) {
      wait.refused?.().then((error) => error && settle?.reject(error), () => undefined);
      return;
    }
    if (statusOf(latest, wait)?.state?.running) return;
    const pod = latest;
    pullEvent(kube, pod, wait.container).then((pull) => {
      if (pull?.pulling) report(pull.pulling);
      else if (pull?.failed) settle?.reject(imageError(pod, wait, pull.failed));
    }, () => undefined);
  }, PULL_CHECK_MS);
  const timer = setTimeout(() => {
    wait.timedOut().then(
      (error) => settle?.reject(error),
      (error: Error) => settle?.reject(error),
    );
  }, wait.timeoutMs);
  try {
    return await Promise.race([outcome, watching.then(() => outcome)]);
  } finally {
    clearTimeout(timer);
    clearInterval(pulling);
    (await watching.catch(() => undefined))?.abort();
  }
}

function statusOf(pod: V1Pod, wait: AgentContainerWait): V1ContainerStatus | undefined {
  const statuses = wait.ephemeral ? pod.status?.ephemeralContainerStatuses : pod.status?.containerStatuses;
  return statuses?.find((c) => c.name === wait.container);
}

function deleted(pod: V1Pod, wait: AgentContainerWait): Promise<DoppelError> {
  const name = pod.metadata?.name ?? '';
  const what = wait.ephemeral ? `the target pod ${name}` : `the agent pod ${name}`;
  return Promise.resolve(new DoppelError('E_AGENT_START', `${what} was deleted before the agent ran`, { category: 'agent', hint: 'run doppel exec again' }));
}

/** A running pod's name, an error (fetched with the container's log) for one that will not run, or undefined to wait on. */
function judge(kube: KubeContext, pod: V1Pod, wait: AgentContainerWait): string | Promise<DoppelError> | undefined {
  const name = pod.metadata?.name ?? '';
  const status = statusOf(pod, wait);
  if (status?.state?.running) return name;
  const waiting = status?.state?.waiting;
  if (waiting?.reason && imageReasons.has(waiting.reason)) {
    return Promise.resolve(imageError(pod, wait, `${waiting.reason}${waiting.message ? ` (${oneLine(waiting.message)})` : ''}`));
  }
  const terminated = status?.state?.terminated;
  if ((waiting?.reason && startReasons.has(waiting.reason)) || terminated || pod.status?.phase === 'Failed' || pod.status?.phase === 'Succeeded') {
    const why = terminated ? `exited with code ${terminated.exitCode}${terminated.reason ? ` (${terminated.reason})` : ''}` : waiting?.reason ? `${waiting.reason}${waiting.message ? `: ${oneLine(waiting.message)}` : ''}` : `ended (${pod.status?.phase})`;
    const where = wait.ephemeral ? `container ${wait.container} in pod ${name}` : `pod ${name}`;
    return agentLogTail(kube, pod.metadata?.namespace ?? '', name, wait.container).then(
      (log) =>
        new DoppelError('E_AGENT_START', `the agent ${where} ${why} before it was ready${lastWord(log) ? `: ${lastWord(log)}` : ''}`, {
          category: 'agent',
          hint: 'run with --agent-log-level debug to see more of the agent\'s log',
        }),
    );
  }
  return undefined;
}

/** What the agent waits for, as the pod's status says it: scheduling, its container being created, ... */
function waitingText(pod: V1Pod, status: V1ContainerStatus | undefined): string {
  const unscheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
  if (unscheduled) return `pod ${pod.metadata?.name ?? ''} is Pending, not scheduled: ${oneLine(unscheduled.message ?? unscheduled.reason ?? '')}`;
  const waiting = status?.state?.waiting?.reason;
  if (waiting) return `${waiting === 'ContainerCreating' ? 'creating the container' : waiting} on ${pod.spec?.nodeName ?? '?'}`;
  return pod.spec?.nodeName ? `pod ${pod.metadata?.name ?? ''} placed on ${pod.spec.nodeName}` : `pod ${pod.metadata?.name ?? ''} created`;
}

/** The image as the pod's spec names it: a container's status may name none while its pull fails. */
function imageError(pod: V1Pod, wait: AgentContainerWait, why: string): DoppelError {
  const containers = wait.ephemeral ? pod.spec?.ephemeralContainers : pod.spec?.containers;
  const image = containers?.find((c) => c.name === wait.container)?.image || statusOf(pod, wait)?.image || '(unnamed)';
  return new DoppelError('E_AGENT_IMAGE', `the agent image ${image} cannot be pulled on node ${pod.spec?.nodeName ?? '?'}: ${why}`, {
    category: 'agent',
    hint: 'check agent.image (or --agent-image), agent.image_pull_policy and agent.image_pull_secrets; the image must be reachable from the cluster\'s nodes',
  });
}

/** The node's newest word on pulling the agent's image: "pulling image X on node N", or why the pull failed. */
async function pullEvent(kube: KubeContext, pod: V1Pod, container: string): Promise<{ pulling?: string; failed?: string } | undefined> {
  const namespace = pod.metadata?.namespace ?? '';
  const fieldSelector = `involvedObject.kind=Pod,involvedObject.name=${pod.metadata?.name ?? ''}`;
  const events = (await kube.core.listNamespacedEvent({ namespace, fieldSelector })).items.filter((event) => event.involvedObject.fieldPath?.includes(`{${container}}`) === true);
  // Event times have whole seconds, so a pull's start and its failure often tie: judge by what was said at all.
  // The kubelet says "Failed" for other troubles too; only a failed pull is final here, as ErrImagePull is.
  const failed = events.find((event) => (event.reason === 'Failed' && /^Failed to pull image/.test(event.message ?? '')) || event.reason === 'ErrImageNeverPull');
  if (failed) return { failed: `${failed.reason === 'Failed' ? 'ErrImagePull' : 'ErrImageNeverPull'} (${oneLine(failed.message ?? '').replace(/^Failed to pull image "[^"]*": /, '')})` };
  const pulling = events.find((event) => event.reason === 'Pulling');
  if (pulling && !events.some((event) => event.reason === 'Pulled')) return { pulling: `${oneLine(pulling.message ?? '').replace(/^Pulling/, 'pulling')} on ${pod.spec?.nodeName ?? '?'}` };
  return undefined;
}

/** The last lines the agent wrote, or '' when the log cannot be read. */
export async function agentLogTail(kube: KubeContext, namespace: string, pod: string, container = AGENT_CONTAINER): Promise<string> {
  try {
    return await kube.core.readNamespacedPodLog({ name: pod, namespace, container, tailLines: 20 });
  } catch {
    return '';
  }
}

/** The Job controller's last refusal to create the agent's pod (admission, quota), from the Job's events. */
async function refusal(kube: KubeContext, namespace: string, job: string): Promise<DoppelError | undefined> {
  const events: CoreV1Event[] = await kube.core
    .listNamespacedEvent({ namespace, fieldSelector: `involvedObject.name=${job}` })
    .then((list) => list.items)
    .catch(() => []);
  const refused = events.filter((event) => event.reason === 'FailedCreate').at(-1);
  if (refused === undefined) return undefined;
  return new DoppelError('E_AGENT_REFUSED', `the cluster refused the agent's pod: ${oneLine(refused.message ?? 'FailedCreate')}`, {
    category: 'agent',
    hint: 'the agent needs hostPID and the NET_ADMIN, SYS_PTRACE and SYS_ADMIN capabilities; a namespace under the baseline or restricted Pod Security level refuses them: use agent.namespace for a namespace that allows them',
  });
}

/** When no pod ran in time: a refusal to create it, or the pod's scheduling state, says why. */
async function whyNoPod(kube: KubeContext, namespace: string, job: string, timeoutMs: number): Promise<DoppelError> {
  const refused = await refusal(kube, namespace, job);
  if (refused) return refused;
  const pods = await kube.core.listNamespacedPod({ namespace, labelSelector: `${AGENT_LABEL}=${job}` }).then((list) => list.items).catch(() => []);
  const unscheduled = pods[0]?.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
  const detail = unscheduled ? `: Pending, ${unscheduled.reason ?? ''} ${oneLine(unscheduled.message ?? '')}`.trimEnd() : pods[0] ? `: ${pods[0].status?.phase ?? 'Pending'}` : ': no pod was created';
  return agentTimeout(`the agent's pod did not run within ${timeoutMs / 1000}s${detail}`);
}

export function agentTimeout(message: string): DoppelError {
  return new DoppelError('E_AGENT_TIMEOUT', message, { category: 'agent', hint: 'raise agent.startup_timeout if the image is large or the cluster slow' });
}
