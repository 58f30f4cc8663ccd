// The Kubernetes platform: resolves the target to its ready pods, runs an agent Job next to each (or one plain
// agent, targetless), links to each through a port-forward, follows the replicas, and removes every Job it made.
import { randomBytes } from 'node:crypto';
import type { ResolvedConfig } from '../../config/schema.ts';
import type { Target } from '../../config/target.ts';
import type { AgentTransport } from '../agent-transport.ts';
import type { Platform, ReplicaEvents, StepReporter } from '../platform.ts';
import { agentJob, type AgentTarget } from './agent-job.ts';
import { agentLogTail, waitForAgentPod } from './agent-pod.ts';
import { linkToAgent } from './agent-link.ts';
import { followTargetPods } from './follow-pods.ts';
import { loadKubeContext, type KubeContext } from './kube-context.ts';
import { resolveTarget, type ResolvedTarget, type TargetPod } from './resolve-target.ts';
import { sweepDeadAgents } from './sweep-agents.ts';
import { volumeMountPaths } from './volume-mounts.ts';

/** No session outlives this, whatever happens to the CLI or the link. */
const DEADLINE_SECONDS = 24 * 3600;

export async function createKubernetesPlatform(target: Exclude<Target, { kind: 'process' | 'container' }>, config: ResolvedConfig): Promise<Platform> {
  const kube = await loadKubeContext({ kubeconfig: config.kubeconfig, context: config.kube_context, namespace: config.target.namespace });
  const sessionId = randomBytes(4).toString('hex');
  const token = randomBytes(24).toString('base64url');
  const agentNamespace = config.agent.namespace ?? kube.namespace;
  const agents = new Map<string, KubeAgent>();
  let resolved: ResolvedTarget | undefined;
  const description = target.kind === 'targetless' ? `targetless in ${kube.namespace}` : `${target.kind}/${target.name} in ${kube.namespace}`;

  const startAgent = async (pod: TargetPod | undefined): Promise<AgentTransport> => {
    const agentTarget: AgentTarget | undefined = pod && { pod: pod.name, namespace: pod.namespace, nodeName: pod.nodeName, containerId: pod.containerId };
    const agent = await runAgent(kube, { namespace: agentNamespace, sessionId, token, target: agentTarget, config });
    agents.set(pod?.name ?? '', agent);
    return agent.transport;
  };

  return {
    description,
    hasTargetProcess: target.kind !== 'targetless',
    async start(progress: StepReporter) {
      void sweepDeadAgents(kube, agentNamespace);
      if (target.kind === 'targetless') {
        return [await progress.step(`starting the agent in namespace ${agentNamespace} (image ${config.agent.image})`, () => startAgent(undefined))];
      }
      const found = await progress.step(`resolving ${description}`, () => resolveTarget(kube, target));
      resolved = found;
      const pods = found.pods;
      const nodes = [...new Set(pods.map((pod) => pod.nodeName))].join(', ');
      return progress.step(`starting ${pods.length === 1 ? 'the agent' : `${pods.length} agents`} next to ${pods.map((p) => p.name).join(', ')} on ${nodes} (image ${config.agent.image})`, () =>
        Promise.all(pods.map((pod) => startAgent(pod))),
      );
    },
    follow(events: ReplicaEvents) {
      if (!resolved) return { stop() {} };
      return followTargetPods(kube, resolved, {
        joined(pod) {
          if (agents.has(pod.name)) return;
          startAgent(pod).then(events.joined, (error: Error) => events.failed(`pod ${pod.name}`, error));
        },
        left(pod, why) {
          const agent = agents.get(pod.name);
          if (!agent) return;
          agents.delete(pod.name);
          events.left(agent.transport, why);
          void agent.transport.stop();
        },
      });
    },
    async remoteMounts() {
      const pod = resolved?.pods[0];
      return pod ? volumeMountPaths(kube, pod) : [];
    },
    async stop() {
      await Promise.all([...agents.values()].map((agent) => agent.transport.stop()));
    },
    killNow() {
      // Nothing synchronous reaches the API server; each agent ends by itself once its link is gone (agent.ttl).
    },
  };
}

interface KubeAgent {
  job: string;
  transport: AgentTransport;
}

interface AgentRun {
  namespace: string;
  sessionId: string;
  token: string;
  target: AgentTarget | undefined;
  config: ResolvedConfig;
}

async function runAgent(kube: KubeContext, run: AgentRun): Promise<KubeAgent> {
  const { namespace, config } = run;
  const job = `doppel-agent-${run.sessionId}-${randomBytes(3).toString('hex')}`;
  const spec = agentJob({ name: job, sessionId: run.sessionId, target: run.target, agent: config.agent, token: run.token, deadlineSeconds: DEADLINE_SECONDS });
  await kube.call({ verb: 'create', resource: 'jobs.batch', namespace }, () => kube.batch.createNamespacedJob({ namespace, body: spec }));
  const removeJob = () =>
    kube.batch.deleteNamespacedJob({ name: job, namespace, propagationPolicy: 'Background', gracePeriodSeconds: 0 }).then(
      () => undefined,
      () => undefined,
    );
  try {
    const startupMs = config.agent.startup_timeout * 1000;
    const pod = await waitForAgentPod(kube, namespace, job, startupMs);
    const link = await linkToAgent(kube, namespace, pod, run.token, startupMs);
    let stopping: Promise<void> | undefined;
    const transport: AgentTransport = {
      stream: link.stream,
      description: run.target ? `pod ${run.target.pod} (agent pod ${pod})` : `agent pod ${pod}`,
      exited: link.closed,
      logTail: () => agentLogTail(kube, namespace, pod),
      stop() {
        stopping ??= (async () => {
          link.stream.destroy();
          await removeJob();
        })();
        return stopping;
      },
      killNow() {},
    };
    return { job, transport };
  } catch (error) {
    await removeJob();
    throw error;
  }
}
