// The Kubernetes platform: resolves the target to its ready pods, runs an agent next to each (a Job on its node, or
// with -e an ephemeral container in it; targetless, one plain Job), links to each through a port-forward, follows
// the replicas, and removes every Job it made.
import { randomBytes } from 'node:crypto';
import type { ResolvedConfig } from '../../config/schema.ts';
import type { Target } from '../../config/target.ts';
import { trace } from '../../trace.ts';
import type { AgentTransport } from '../agent-transport.ts';
import type { Platform, ReplicaEvents, StepReporter } from '../platform.ts';
import { runEphemeralAgent } from './agent-ephemeral.ts';
import { howAgentEnded } from './agent-end.ts';
import { AGENT_CONTAINER, AGENT_PORT, agentJob, type AgentTarget } from './agent-job.ts';
import { agentLogTail, waitForAgentPod } from './agent-pod.ts';
import { linkToAgent } from './agent-link.ts';
import { followTargetPods } from './follow-pods.ts';
import { loadKubeContext, type KubeContext } from './kube-context.ts';
import { resolveTarget, type ResolvedTarget, type TargetPod } from './resolve-target.ts';
import { stillRuns } from './target-pod.ts';
import { sweepDeadAgents } from './sweep-agents.ts';
import { volumeMountPaths } from './volume-mounts.ts';

/** No session outlives this, whatever happens to the CLI or the link. */
const DEADLINE_SECONDS = 24 * 3600;

export async function createKubernetesPlatform(target: Exclude<Target, { kind: 'process' | 'container' }>, config: ResolvedConfig): Promise<Platform> {
  const kube = await loadKubeContext({ kubeconfig: config.kubeconfig, context: config.kube_context, namespace: config.target.namespace });
  trace(`kubernetes: kubeconfig loaded (API server ${kube.server}, namespace ${kube.namespace})`);
  const sessionId = randomBytes(4).toString('hex');
  const token = randomBytes(24).toString('base64url');
  const agentNamespace = config.agent.namespace ?? kube.namespace;
  const agents = new Map<string, AgentTransport>();
  /** Agents being started; stop() waits for them, so none is created after the session ended. */
  const starting = new Set<Promise<unknown>>();
  /** Called off by stop(): a Job agent still starting then is removed at once. */
  const ending = new AbortController();
  let replicas: ReplicaEvents | undefined;
  /** Agents stopped because their pod left the session: their end is no loss. */
  const dismissed = new WeakSet<AgentTransport>();
  let resolved: ResolvedTarget | undefined;
  let stopped = false;
  let sweeping: Promise<void> = Promise.resolve();
  const oneReplica = config.target.replicas === 'one';
  const description = target.kind === 'targetless' ? `targetless in ${kube.namespace}` : `${target.kind}/${target.name} in ${kube.namespace}`;

  const startAgent = async (pod: TargetPod | undefined, report: (text: string) => void): Promise<AgentTransport> => {
    const run = { sessionId, token, agent: config.agent, deadlineSeconds: DEADLINE_SECONDS, report };
    const started =
      pod && config.agent.ephemeral
        ? runEphemeralAgent(kube, { ...run, pod })
        : runJobAgent(kube, { ...run, namespace: agentNamespace, target: pod && { pod: pod.name, namespace: pod.namespace, nodeName: pod.nodeName, containerId: pod.containerId }, cancelled: ending.signal });
    starting.add(started);
    const transport = await started.finally(() => starting.delete(started));
    // An agent that was still starting when the session ended must not wait for its startup timeout to go.
    if (stopped) {
      await transport.stop();
      throw new Error('the session ended while the agent started');
    }
    agents.set(pod?.name ?? '', transport);
    if (pod) void transport.exited.then(() => replaceLost(pod, transport));
    return transport;
  };
  /**
   * An agent that ended while its pod's container still runs (killed, its pod deleted, its link dropped) is replaced:
   * the session gets the pod's traffic back, and the new launcher removes the rules the lost one could not, which
   * would otherwise refuse the pod's own connections and probes. Ready or not: a pod those rules made unready is
   * exactly the one to mend. A pod that went or restarted is the follower's to report.
   */
  const replaceLost = async (pod: TargetPod, lost: AgentTransport) => {
    if (stopped || !replicas) return;
    const now = await kube.core.readNamespacedPod({ name: pod.name, namespace: pod.namespace }).catch(() => undefined);
    if (stopped || dismissed.has(lost) || !now || !stillRuns(now, pod) || (agents.has(pod.name) && agents.get(pod.name) !== lost)) return;
    agents.delete(pod.name);
    const events = replicas;
    startAgent(pod, () => {}).then(events.joined, (error: Error) => stopped || events.failed(`pod ${pod.name}`, error));
  };
  const where = config.agent.ephemeral && target.kind !== 'targetless' ? 'in' : 'next to';

  return {
    description,
    hasTargetProcess: target.kind !== 'targetless',
    async start(progress: StepReporter) {
      // In the background of the start; stop() waits for it, so a short session still finishes the sweep.
      sweeping = sweepDeadAgents(kube, agentNamespace).catch(() => undefined);
      if (target.kind === 'targetless') {
        return [await progress.step(`starting the agent in namespace ${agentNamespace} (image ${config.agent.image})`, (status) => startAgent(undefined, status))];
      }
      const found = await progress.step(`resolving ${description}`, () => resolveTarget(kube, target));
      resolved = found;
      trace(`kubernetes: ${description} resolved: ready pods ${found.pods.map((pod) => pod.name).join(', ')}`);
      const pods = oneReplica ? found.pods.slice(0, 1) : found.pods;
      const nodes = [...new Set(pods.map((pod) => pod.nodeName))].join(', ');
      return progress.step(`starting ${pods.length === 1 ? 'the agent' : `${pods.length} agents`} ${where} ${pods.map((p) => p.name).join(', ')} on ${nodes} (image ${config.agent.image})`, async (status) => {
        // All settle before a failure is reported, so no agent is still starting when the CLI cleans up.
        const started = await Promise.allSettled(pods.map((pod) => startAgent(pod, (text) => status(pods.length === 1 ? text : `${pod.name}: ${text}`))));
        const failed = started.find((result) => result.status === 'rejected');
        if (failed) throw failed.reason;
        return started.map((result) => (result as PromiseFulfilledResult<AgentTransport>).value);
      });
    },
    follow(events: ReplicaEvents) {
      if (!resolved) return { stop() {} };
      replicas = events;
      return followTargetPods(kube, resolved, {
        joined(pod) {
          // With one replica asked for, a pod joins only to replace the one that left.
          if (agents.has(pod.name) || (oneReplica && agents.size > 0)) return;
          startAgent(pod, () => {}).then(events.joined, (error: Error) => stopped || events.failed(`pod ${pod.name}`, error));
        },
        left(pod, why) {
          const agent = agents.get(pod.name);
          if (!agent) return;
          agents.delete(pod.name);
          dismissed.add(agent);
          events.left(agent, why);
          void agent.stop();
        },
      });
    },
    async remoteMounts() {
      const pod = resolved?.pods[0];
      return pod ? volumeMountPaths(kube, pod) : [];
    },
    async stop() {
      stopped = true;
      ending.abort();
      await Promise.allSettled(starting);
      await Promise.all([...agents.values()].map((agent) => agent.stop()));
      await sweeping;
    },
    killNow() {
      // Nothing synchronous reaches the API server; each agent ends by itself once its link is gone (agent.ttl).
    },
  };
}

interface JobAgentRun {
  namespace: string;
  sessionId: string;
  token: string;
  target: AgentTarget | undefined;
  agent: ResolvedConfig['agent'];
  deadlineSeconds: number;
  report(text: string): void;
  cancelled: AbortSignal;
}

async function runJobAgent(kube: KubeContext, run: JobAgentRun): Promise<AgentTransport> {
  const { namespace, agent } = run;
  const job = `doppel-agent-${run.sessionId}-${randomBytes(3).toString('hex')}`;
  const spec = agentJob({ ...run, name: job });
  await kube.call({ verb: 'create', resource: 'jobs.batch', namespace }, () => kube.batch.createNamespacedJob({ namespace, body: spec }));
  trace(`kubernetes: agent Job ${job} created`);
  const calledOff = new AbortController();
  const callOff = () => calledOff.abort();
  run.cancelled.addEventListener('abort', callOff, { once: true });
  const removeJob = () =>
    kube.batch.deleteNamespacedJob({ name: job, namespace, propagationPolicy: 'Background', gracePeriodSeconds: 0 }).then(
      () => undefined,
      () => undefined,
    );
  try {
    run.cancelled.throwIfAborted();
    const startupMs = agent.startup_timeout * 1000;
    // The kubelet reports the container running only at its next status sync, up to a second after the launcher
    // listens: linking starts once the pod has a node, and retries until the launcher answers.
    let placed: (pod: string) => void = () => {};
    const onNode = new Promise<string>((resolve) => (placed = resolve));
    void onNode.then((pod) => trace(`kubernetes: agent pod ${pod} placed on its node`));
    const running = waitForAgentPod(kube, namespace, job, startupMs, run.report, { placed, signal: calledOff.signal });
    const linked = onNode.then((pod) => linkToAgent(kube, namespace, pod, run.token, startupMs, AGENT_PORT, calledOff.signal));
    const link = await Promise.race([linked, running.then(() => linked)]);
    run.cancelled.removeEventListener('abort', callOff);
    calledOff.abort();
    const pod = await onNode;
    let stopping: Promise<void> | undefined;
    return {
      stream: link.stream,
      description: run.target ? `pod ${run.target.pod} (agent pod ${pod})` : `agent pod ${pod}`,
      exited: link.closed.then((why) => (stopping ? why : howAgentEnded(kube, { namespace, pod, container: AGENT_CONTAINER, ephemeral: false }, why))),
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
  } catch (error) {
    run.cancelled.removeEventListener('abort', callOff);
    calledOff.abort();
    await removeJob();
    throw error;
  }
}
