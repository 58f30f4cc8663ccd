// Waits for an agent Job's pod to run, and says why when it cannot: the image, the pod's admission, a crash.
import { Watch, type CoreV1Event, type V1Pod } from '@kubernetes/client-node';
import { DoppelError } from '../../errors.ts';
import { lastWord } from '../agent-transport.ts';
import { AGENT_CONTAINER, AGENT_LABEL } from './agent-job.ts';
import type { KubeContext } from './kube-context.ts';

const imageReasons = new Set(['ErrImagePull', 'ImagePullBackOff', 'ErrImageNeverPull', 'InvalidImageName']);
const startReasons = new Set(['CreateContainerConfigError', 'CreateContainerError', 'RunContainerError', 'CrashLoopBackOff']);

/** The agent pod's name once its container runs; a clear DoppelError when it will not. */
export async function waitForAgentPod(kube: KubeContext, namespace: string, job: string, timeoutMs: number): Promise<string> {
  let settle: { resolve(pod: string): void; reject(error: Error): void } | undefined;
  const outcome = new Promise<string>((resolve, reject) => (settle = { resolve, reject }));
  const watching = new Watch(kube.config).watch(
    `/api/v1/namespaces/${namespace}/pods`,
    { labelSelector: `${AGENT_LABEL}=${job}` },
    (_phase, pod: V1Pod) => {
      const verdict = judge(pod, kube);
      if (verdict === undefined) return;
      if (typeof verdict === 'string') settle?.resolve(verdict);
      else verdict.then((error) => settle?.reject(error), (error: Error) => settle?.reject(error));
    },
    (error: unknown) => {
      if (error) settle?.reject(new DoppelError('E_AGENT_START', `lost the watch on the agent's pod: ${(error as Error).message}`, { category: 'agent' }));
    },
  );
  const timer = setTimeout(() => {
    whyNoPod(kube, namespace, job, timeoutMs).then(
      (error) => settle?.reject(error),
      (error: Error) => settle?.reject(error),
    );
  }, timeoutMs);
  try {
    return await Promise.race([outcome, watching.then(() => outcome)]);
  } finally {
    clearTimeout(timer);
    (await watching.catch(() => undefined))?.abort();
  }
}

/** A running pod's name, an error (fetched with the pod's log) for a pod that will not run, or undefined to wait on. */
function judge(pod: V1Pod, kube: KubeContext): string | Promise<DoppelError> | undefined {
  const name = pod.metadata?.name ?? '';
  const status = pod.status?.containerStatuses?.find((c) => c.name === AGENT_CONTAINER);
  if (status?.state?.running) return name;
  const waiting = status?.state?.waiting;
  if (waiting?.reason && imageReasons.has(waiting.reason)) {
    return Promise.resolve(
      new DoppelError('E_AGENT_IMAGE', `the agent image ${status?.image ?? ''} cannot be pulled on node ${pod.spec?.nodeName ?? '?'}: ${waiting.reason}${waiting.message ? ` (${waiting.message})` : ''}`, {
        category: 'agent',
        hint: 'check agent.image (or --agent-image) and agent.image_pull_secrets; the image must be reachable from the cluster\'s nodes',
      }),
    );
  }
  const terminated = status?.state?.terminated;
  if ((waiting?.reason && startReasons.has(waiting.reason)) || terminated || pod.status?.phase === 'Failed') {
    const why = terminated ? `exited with code ${terminated.exitCode}${terminated.reason ? ` (${terminated.reason})` : ''}` : `${waiting?.reason}${waiting?.message ? `: ${waiting.message}` : ''}`;
    return agentLogTail(kube, pod.metadata?.namespace ?? '', name).then(
      (log) =>
        new DoppelError('E_AGENT_START', `the agent pod ${name} ${why} before it was ready${lastWord(log) ? `: ${lastWord(log)}` : ''}`, {
          category: 'agent',
          hint: 'run with --agent-log-level debug to see more of the agent\'s log',
        }),
    );
  }
  return undefined;
}

/** The last lines the agent wrote, or '' when the log cannot be read. */
export async function agentLogTail(kube: KubeContext, namespace: string, pod: string): Promise<string> {
  try {
    return await kube.core.readNamespacedPodLog({ name: pod, namespace, container: AGENT_CONTAINER, tailLines: 20 });
  } catch {
    return '';
  }
}

/** When no pod ran in time: the Job's events (admission refusals) or the pod's scheduling state say why. */
async function whyNoPod(kube: KubeContext, namespace: string, job: string, timeoutMs: number): Promise<DoppelError> {
  const events: CoreV1Event[] = await kube.core
    .listNamespacedEvent({ namespace, fieldSelector: `involvedObject.name=${job}` })
    .then((list) => list.items)
    .catch(() => []);
  const refused = events.filter((event) => event.reason === 'FailedCreate').at(-1);
  if (refused) {
    return new DoppelError('E_AGENT_REFUSED', `the cluster refused the agent's pod: ${refused.message ?? 'FailedCreate'}`, {
      category: 'agent',
      hint: 'the agent needs hostPID and the NET_ADMIN, SYS_PTRACE and SYS_ADMIN capabilities; a namespace under the restricted Pod Security level refuses them: use agent.namespace for a namespace that allows them',
    });
  }
  const pods = await kube.core.listNamespacedPod({ namespace, labelSelector: `${AGENT_LABEL}=${job}` }).then((list) => list.items).catch(() => []);
  const unscheduled = pods[0]?.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
  const detail = unscheduled ? `: Pending, ${unscheduled.reason ?? ''} ${unscheduled.message ?? ''}`.trimEnd() : pods[0] ? `: ${pods[0].status?.phase ?? 'Pending'}` : ': no pod was created';
  return new DoppelError('E_AGENT_TIMEOUT', `the agent's pod did not run within ${timeoutMs / 1000}s${detail}`, {
    category: 'agent',
    hint: 'raise agent.startup_timeout if the image is large or the cluster slow',
  });
}
