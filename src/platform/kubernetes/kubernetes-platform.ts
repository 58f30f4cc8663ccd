// The Kubernetes platform: resolves the target to its ready pods, runs an agent next to each (a Job on its node, or
// with -e an ephemeral container in it; targetless, one plain Job), links to each through a port-forward, follows
// the replicas, and removes every Job it made.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ResolvedConfig } from '../../config/schema.ts';
import type { Target } from '../../config/target.ts';
import { DoppelError } from '../../errors.ts';
import { sweepWarmSockets, warmDirectory } from '../process/warm-agents.ts';
import { trace } from '../../trace.ts';
import type { AgentTransport } from '../agent-transport.ts';
import type { Platform, ReplicaEvents, StepReporter } from '../platform.ts';
import { runEphemeralAgent } from './agent-ephemeral.ts';
import { howAgentEnded } from './agent-end.ts';
import { AGENT_CONTAINER, AGENT_PORT, agentJob, type AgentTarget } from './agent-job.ts';
import { agentLogTail, waitForAgentPod } from './agent-pod.ts';
import { linkToAgent } from './agent-link.ts';
import { agentLink } from './direct-link.ts';
import type { ForwardedStream } from './port-forward.ts';
import { followTargetPods } from './follow-pods.ts';
import { loadKubeContext, type KubeContext } from './kube-context.ts';
import { resolveTarget, type ResolvedTarget, type TargetPod } from './resolve-target.ts';
import { stillRuns } from './target-pod.ts';
import { sweepDeadAgents } from './sweep-agents.ts';
import { volumeMountPaths } from './volume-mounts.ts';
import { agentConfigDigest, claimParkedAgent, listParkedAgents, parkAgent, parkedFor, type ParkedAgent } from './warm-agents.ts';

/** No session outlives this, whatever happens to the CLI or the link. */
const DEADLINE_SECONDS = 24 * 3600;

export interface KubernetesPlatformOptions {
  /**
   * A warm session host's platform (src/warm/): only the agent parked next to the target's one pod will do, claimed as
   * a CLI claims it; none is an error. The target is resolved at once, before the agent is parked. Its pods are followed, and any change (the pod gone or not ready, another ready)
   * is told instead of starting or stopping agents; `keepAgent` says the agent's pod is still the target's.
   */
  warmOnly?: { targetChanged(keepAgent: boolean): void };
}

export async function createKubernetesPlatform(target: Exclude<Target, { kind: 'process' | 'container' }>, config: ResolvedConfig, options: KubernetesPlatformOptions = {}): Promise<Platform> {
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
  /** Settled once the target is known, or at stop(): the mounts may be asked for before start() is done. */
  let targetKnown!: (target: ResolvedTarget | undefined) => void;
  const known = new Promise<ResolvedTarget | undefined>((resolve) => (targetKnown = resolve));
  let stopped = false;
  let sweeping: Promise<void> = Promise.resolve();
  const oneReplica = config.target.replicas === 'one';
  const description = target.kind === 'targetless' ? `targetless in ${kube.namespace}` : `${target.kind}/${target.name} in ${kube.namespace}`;

  const configDigest = agentConfigDigest(config.agent, DEADLINE_SECONDS);
  /** Job agents of targets stay warm after a clean session (agent.ttl); ephemeral containers cannot be left running. */
  const warmAgents = !config.agent.ephemeral && config.agent.ttl > 0 && target.kind !== 'targetless';
  /** `reuse`: a parked agent next to this pod, claimed: linked to instead of starting one when it still answers. */
  const startAgent = async (pod: TargetPod | undefined, report: (text: string) => void, reuse?: ParkedAgent): Promise<AgentTransport> => {
    const run = { sessionId, token, agent: config.agent, deadlineSeconds: DEADLINE_SECONDS, report };
    const started =
      pod && reuse
        ? reuseJobAgent(kube, reuse, pod, config.agent)
        : pod && config.agent.ephemeral
          ? runEphemeralAgent(kube, { ...run, pod })
          : runJobAgent(kube, {
              ...run,
              configDigest,
              namespace: agentNamespace,
              target: pod && { pod: pod.name, namespace: pod.namespace, nodeName: pod.nodeName, uid: pod.uid, containerId: pod.containerId },
              cancelled: ending.signal,
            });
    starting.add(started);
    const transport = await started.finally(() => starting.delete(started));
    if (!transport) {
      report(`the warm agent ${reuse!.pod} did not answer; starting a fresh one`);
      return startAgent(pod, report);
    }
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
  /** The warm session host's one pod (its uid), whose agent it holds. */
  let heldPod: string | undefined;
  /** The warm session host's start: the agent its CLI parked next to the target's one pod, or an error. */
  // Resolved as the host is made, while its CLI's program runs; a pod that changes before the take is seen by the follower.
  const early = options.warmOnly && target.kind !== 'targetless' ? resolveTarget(kube, target) : undefined;
  early?.catch(() => undefined);
  const takeParkedAgent = async (): Promise<AgentTransport> => {
    if (!early || !warmAgents) throw noWarmAgent(description);
    const parking = listParkedAgents(kube, agentNamespace, configDigest);
    resolved = await early;
    targetKnown(resolved);
    const pods = oneReplica ? resolved.pods.slice(0, 1) : resolved.pods;
    const pod = pods.length === 1 ? pods[0]! : undefined;
    const parked = pod && parkedFor(await parking, pod);
    const transport = parked && (await claimParkedAgent(kube, parked, sessionId)) ? await reuseJobAgent(kube, parked, pod, config.agent) : undefined;
    if (!transport || !pod) throw noWarmAgent(description);
    agents.set(pod.name, transport);
    heldPod = pod.uid;
    return transport;
  };

  return {
    description,
    hasTargetProcess: target.kind !== 'targetless',
    async start(progress: StepReporter) {
      if (options.warmOnly) return [await takeParkedAgent()];
      // In the background of the start; stop() waits for it, so a short session still finishes the sweep.
      sweeping = sweepDeadAgents(kube, agentNamespace).catch(() => undefined);
      sweepLaunchSockets();
      if (target.kind === 'targetless') {
        targetKnown(undefined);
        return [await progress.step(`starting the agent in namespace ${agentNamespace} (image ${config.agent.image})`, (status) => startAgent(undefined, status))];
      }
      // Looked for while the target resolves: one list of the namespace's parked agents with our settings.
      const parking = warmAgents ? listParkedAgents(kube, agentNamespace, configDigest) : Promise.resolve([]);
      const found = await progress.step(`resolving ${description}`, () => resolveTarget(kube, target));
      resolved = found;
      targetKnown(found);
      trace(`kubernetes: ${description} resolved: ready pods ${found.pods.map((pod) => pod.name).join(', ')}`);
      const pods = oneReplica ? found.pods.slice(0, 1) : found.pods;
      const parked = await parking;
      // Claimed before the line is written, so that it says what happens: of two CLIs at once, one gets the agent.
      const warm = await Promise.all(
        pods.map(async (pod) => {
          const agent = parkedFor(parked, pod);
          return agent && (await claimParkedAgent(kube, agent, sessionId)) ? agent : undefined;
        }),
      );
      const fresh = pods.filter((_, index) => !warm[index]);
      const nodes = [...new Set(fresh.map((pod) => pod.nodeName))].join(', ');
      const agentsText = (n: number, what: string) => (n === 1 ? `the ${what}agent` : `${n} ${what}agents`);
      const text =
        fresh.length === 0
          ? `reusing ${agentsText(pods.length, 'warm ')} ${pods.map((pod, index) => `${warm[index]!.pod} (next to ${pod.name})`).join(', ')}`
          : `${fresh.length < pods.length ? `reusing ${agentsText(pods.length - fresh.length, 'warm ')} and ` : ''}starting ${agentsText(fresh.length, '')} ${where} ${fresh.map((p) => p.name).join(', ')} on ${nodes} (image ${config.agent.image})`;
      return progress.step(text, async (status) => {
        // All settle before a failure is reported, so no agent is still starting when the CLI cleans up.
        const started = await Promise.allSettled(pods.map((pod, index) => startAgent(pod, (text) => status(pods.length === 1 ? text : `${pod.name}: ${text}`), warm[index])));
        const failed = started.find((result) => result.status === 'rejected');
        if (failed) throw failed.reason;
        return started.map((result) => (result as PromiseFulfilledResult<AgentTransport>).value);
      });
    },
    follow(events: ReplicaEvents) {
      if (!resolved) return { stop() {} };
      const warmOnly = options.warmOnly;
      if (warmOnly) {
        return followTargetPods(kube, resolved, { joined: () => warmOnly.targetChanged(true), left: (pod) => warmOnly.targetChanged(pod.uid !== heldPod) });
      }
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
      const pod = (await known)?.pods[0];
      return pod ? volumeMountPaths(kube, pod) : [];
    },
    async stop() {
      stopped = true;
      targetKnown(resolved);
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

const noWarmAgent = (description: string) => new DoppelError('E_NO_WARM_AGENT', `no warm agent of ${description} to take`, { category: 'agent' });

/** Removes the launch sockets of warm session hosts that were killed (src/warm/): nobody else would. */
function sweepLaunchSockets(): void {
  const dir = warmDirectory();
  if (dir) sweepWarmSockets(dir);
}

interface JobAgentRun {
  namespace: string;
  configDigest: string;
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
  const removeJob = () => deleteJob(kube, namespace, job);
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
    return jobTransport(kube, { namespace, job, pod, target: run.target, ttl: agent.ttl, direct: agent.direct_link }, link);
  } catch (error) {
    run.cancelled.removeEventListener('abort', callOff);
    calledOff.abort();
    await removeJob();
    throw error;
  }
}

const deleteJob = (kube: KubeContext, namespace: string, job: string) =>
  kube.batch.deleteNamespacedJob({ name: job, namespace, propagationPolicy: 'Background', gracePeriodSeconds: 0 }).then(
    () => undefined,
    () => undefined,
  );

interface JobAgent {
  namespace: string;
  job: string;
  pod: string;
  target: AgentTarget | undefined;
  /** agent.ttl: how long a parked agent waits for the next session. */
  ttl: number;
  /** agent.direct_link: the link may move from the port-forward to the agent's pod. */
  direct: boolean;
}

/**
 * A Job agent's transport, started or reused: after a clean session it parks (the Job stays, marked, and its launcher
 * waits agent.ttl for the next session); otherwise stopping removes the Job.
 */
function jobTransport(kube: KubeContext, agent: JobAgent, forward: ForwardedStream): AgentTransport {
  const { namespace, job, pod, target } = agent;
  const link = agentLink(forward, pod, agent.direct);
  let stopping: Promise<void> | undefined;
  let linked = true;
  let parked = false;
  void link.closed.then(() => (linked = false));
  return {
    stream: link.stream,
    afterHandshake: link.afterHandshake,
    description: target ? `pod ${target.pod} (agent pod ${pod})` : `agent pod ${pod}`,
    exited: link.closed.then((why) => (stopping ? why : howAgentEnded(kube, { namespace, pod, container: AGENT_CONTAINER, ephemeral: false }, why))),
    logTail: () => agentLogTail(kube, namespace, pod),
    // Targetless agents serve no one pod, so nothing names which session could take them: they are not kept.
    park:
      target && agent.ttl > 0
        ? async () => {
            // Only an agent still linked is worth keeping: its launcher answered to the end.
            if (!linked) return;
            const late = sleep(PARK_TIMEOUT_MS, undefined, { ref: false }).then(() => Promise.reject(new Error('the API server did not answer')));
            await Promise.race([parkAgent(kube, namespace, job, pod, agent.ttl), late]);
            parked = true;
            trace(`kubernetes: agent ${pod} parked for ${agent.ttl}s`);
          }
        : undefined,
    stop() {
      stopping ??= (async () => {
        link.destroy();
        if (!parked) await deleteJob(kube, namespace, job);
      })();
      return stopping;
    },
    killNow() {},
  };
}

/** Past this the Job is removed as if never parked (a patch landing later is deleted with it). */
const PARK_TIMEOUT_MS = 2000;

/** A parked agent's launcher answers at once, its agent already started; one that does not within this is going. */
const WARM_LINK_MS = 1500;

/** Links to a parked agent this session claimed; undefined when it no longer answers (its Job is then removed). */
async function reuseJobAgent(kube: KubeContext, parked: ParkedAgent, pod: TargetPod, agent: ResolvedConfig['agent']): Promise<AgentTransport | undefined> {
  trace(`kubernetes: warm agent ${parked.pod} claimed`);
  const target: AgentTarget = { pod: pod.name, namespace: pod.namespace, nodeName: pod.nodeName, uid: pod.uid, containerId: pod.containerId };
  try {
    const link = await linkToAgent(kube, parked.namespace, parked.pod, parked.token, WARM_LINK_MS);
    return jobTransport(kube, { namespace: parked.namespace, job: parked.job, pod: parked.pod, target, ttl: agent.ttl, direct: agent.direct_link }, link);
  } catch {
    // Ours now, and not answering: its ttl passed as we came, or it was killed.
    await deleteJob(kube, parked.namespace, parked.job);
    return undefined;
  }
}
