// The ephemeral-container agent (`-e`): the launcher joins the target pod itself, in the target container's PID
// namespace and the pod's network, and is reached by a port-forward to the target pod on a random high port.
import { PatchStrategy, setHeaderOptions, type V1EphemeralContainer } from '@kubernetes/client-node';
import { randomBytes, randomInt } from 'node:crypto';
import { DoppelError } from '../../errors.ts';
import type { AgentTransport } from '../agent-transport.ts';
import { howAgentEnded } from './agent-end.ts';
import { agentContainer, type AgentContainerPlan } from './agent-job.ts';
import { linkToAgent } from './agent-link.ts';
import { agentLink } from './direct-link.ts';
import { agentLogTail, agentTimeout, waitForAgentContainer } from './agent-pod.ts';
import type { KubeContext } from './kube-context.ts';
import { serverMessage } from './kube-error.ts';
import type { TargetPod } from './target-pod.ts';

/**
 * The launcher shares the pod's network namespace with the target's own listeners, so it takes a port they are
 * unlikely to use: above the usual service ports, below Linux's range for outgoing connections (32768-60999).
 */
const PORTS = { from: 20_000, to: 32_000 };

export interface EphemeralAgentPlan extends Omit<AgentContainerPlan, 'name' | 'port' | 'target'> {
  sessionId: string;
  pod: TargetPod;
  /** Says what the wait is on now, for the progress line. */
  report(text: string): void;
}

/** Adds the agent container to the target pod, waits for it to run, and links to it. It cannot be removed again. */
export async function runEphemeralAgent(kube: KubeContext, plan: EphemeralAgentPlan): Promise<AgentTransport> {
  const { pod } = plan;
  const name = `doppel-agent-${plan.sessionId}-${randomBytes(2).toString('hex')}`;
  const port = randomInt(PORTS.from, PORTS.to);
  const target = { pod: pod.name, namespace: pod.namespace, nodeName: pod.nodeName, uid: pod.uid, containerId: pod.containerId };
  // Kubernetes allows no resources on an ephemeral container: it runs within what the pod already has.
  const container: V1EphemeralContainer = { ...agentContainer({ ...plan, name, port, target }), targetContainerName: pod.container };
  const operation = { verb: 'patch', resource: 'pods/ephemeralcontainers', namespace: pod.namespace, name: pod.name };
  await kube.call(operation, () =>
    kube.core
      .patchNamespacedPodEphemeralcontainers(
        { name: pod.name, namespace: pod.namespace, body: { spec: { ephemeralContainers: [container] } } },
        setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
      )
      .catch((error: unknown) => {
        throw refusedByPodSecurity(error, pod.name) ?? error;
      }),
  );
  const timeoutMs = plan.agent.startup_timeout * 1000;
  await waitForAgentContainer(kube, {
    namespace: pod.namespace,
    query: { fieldSelector: `metadata.name=${pod.name}` },
    container: name,
    ephemeral: true,
    timeoutMs,
    report: plan.report,
    timedOut: async () => agentTimeout(`the agent container ${name} in pod ${pod.name} did not run within ${timeoutMs / 1000}s`),
  });
  plan.report(`container ${name} runs; port-forwarding to ${pod.name}:${port}`);
  const link = agentLink(await linkToAgent(kube, pod.namespace, pod.name, plan.token, timeoutMs, port), pod.name, plan.agent.direct_link);
  let stopping = false;
  return {
    stream: link.stream,
    afterHandshake: link.afterHandshake,
    description: `pod ${pod.name} (ephemeral agent container ${name})`,
    exited: link.closed.then((why) => (stopping ? why : howAgentEnded(kube, { namespace: pod.namespace, pod: pod.name, container: name, ephemeral: true }, why))),
    logTail: () => agentLogTail(kube, pod.namespace, pod.name, name),
    // The launcher ends itself agent.ttl after its client; the container stays in the pod's spec, terminated.
    async stop() {
      stopping = true;
      link.destroy();
    },
    killNow() {},
  };
}

/** Pod Security admission answers 403 too, but no Role would help: the pod's namespace forbids the agent's rights. */
function refusedByPodSecurity(error: unknown, pod: string): DoppelError | undefined {
  const said = serverMessage(error) ?? '';
  if (!said.includes('violates PodSecurity')) return undefined;
  return new DoppelError('E_AGENT_REFUSED', `the cluster refused the agent container in pod ${pod}: ${said.replace(/\s*\n\s*/g, ' ')}`, {
    category: 'agent',
    hint: 'the agent needs the NET_ADMIN, SYS_PTRACE and SYS_ADMIN capabilities, which the namespace\'s Pod Security level forbids; run without -e (the agent Job can live in another namespace: agent.namespace)',
  });
}
