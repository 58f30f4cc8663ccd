// The agent's Kubernetes objects: a Job pinned to the target pod's node (or, targetless, anywhere), built from the `agent` config;
// its container is shared with the ephemeral-container agent.
import type { V1Capabilities, V1Container, V1Job, V1PodSpec } from '@kubernetes/client-node';
import { hostname } from 'node:os';
import process from 'node:process';
import type { ResolvedConfig } from '../../config/schema.ts';
import { tracing } from '../../trace.ts';

/** The port the launcher listens on, on its own pod's loopback. */
export const AGENT_PORT = 7473;
export const AGENT_CONTAINER = 'doppel-agent';
/** The launcher inside the image: it admits clients and starts one agent per client in the target's namespace. */
export const AGENT_LAUNCHER = ['/usr/local/bin/node', '/app/dist/agent/launcher.js'];

export const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'doppel' } as const;
export const SESSION_LABEL = 'doppel.dev/session';
/** Names the Job on its pod, to find the pod without the Job controller's own labels. */
export const AGENT_LABEL = 'doppel.dev/agent';
/** Where the CLI that owns the agent runs (`host/pid`), so a later start on that host can tell a dead session. */
export const CLIENT_ANNOTATION = 'doppel.dev/client';
/** The target pod's uid: an agent serves that pod only, and a pod replaced under the same name has another. */
export const TARGET_UID_LABEL = 'doppel.dev/target-uid';
/** A digest of every agent setting the Job was made from: a session with other settings does not reuse it. */
export const AGENT_CONFIG_LABEL = 'doppel.dev/agent-config';
/** The target container's id: a restarted container is another process, which the launcher no longer serves. */
export const TARGET_CONTAINER_ANNOTATION = 'doppel.dev/target-container';
/** Milliseconds since the epoch (the parking CLI's clock) until which the parked agent waits; absent while in use. */
export const PARKED_UNTIL_ANNOTATION = 'doppel.dev/parked-until';
/** The parked Job's pod, so that a claim needs no look-up of it. */
export const AGENT_POD_ANNOTATION = 'doppel.dev/agent-pod';

/** What the Job is set against: the target's pod and container, or none for targetless. */
export interface AgentTarget {
  pod: string;
  namespace: string;
  nodeName: string;
  uid: string;
  containerId: string;
}

/** What the agent's container needs, wherever it runs. */
export interface AgentContainerPlan {
  name: string;
  target: AgentTarget | undefined;
  agent: ResolvedConfig['agent'];
  token: string;
  /** Where the launcher listens on its pod's loopback. */
  port: number;
  /** Seconds after which the agent ends whatever happens. */
  deadlineSeconds: number;
}

export interface AgentJobPlan extends Omit<AgentContainerPlan, 'name' | 'port'> {
  name: string;
  sessionId: string;
  /** `agentConfigDigest` of the settings: a later session finds a parked agent with the same settings by it. */
  configDigest: string;
}

const capabilities = ['NET_ADMIN', 'SYS_PTRACE', 'SYS_ADMIN'];
/** Meshes that would otherwise put a proxy beside the agent and take its port. */
const noMeshLabels = { 'sidecar.istio.io/inject': 'false' };
const noMeshAnnotations = { 'linkerd.io/inject': 'disabled', 'sidecar.istio.io/inject': 'false', 'kuma.io/sidecar-injection': 'disabled' };

/** The launcher's container: the image, the session token, and the capabilities it needs to enter the target. */
export function agentContainer(plan: AgentContainerPlan): V1Container {
  const { agent, target } = plan;
  const args = ['--port', String(plan.port), '--ttl', String(agent.ttl), '--startup-timeout', String(agent.startup_timeout), '--deadline', String(plan.deadlineSeconds), '--log-level', agent.log_level];
  if (target) args.push('--container-id', target.containerId);
  if (tracing()) args.push('--trace');
  return {
    name: plan.name,
    image: agent.image,
    imagePullPolicy: agent.image_pull_policy,
    command: AGENT_LAUNCHER,
    args,
    env: [{ name: 'DOPPEL_AGENT_TOKEN', value: plan.token }],
    securityContext: agent.privileged ? { privileged: true, runAsUser: 0 } : { runAsUser: 0, capabilities: grantedCapabilities(agent.disabled_capabilities) },
  };
}

export function agentJob(plan: AgentJobPlan): V1Job {
  const { agent, target } = plan;
  const labels = {
    ...agent.labels,
    ...noMeshLabels,
    ...MANAGED_BY,
    'app.kubernetes.io/name': 'doppel-agent',
    [SESSION_LABEL]: plan.sessionId,
    [AGENT_LABEL]: plan.name,
    [AGENT_CONFIG_LABEL]: plan.configDigest,
    ...(target ? { [TARGET_UID_LABEL]: target.uid } : {}),
  };
  const annotations = {
    ...noMeshAnnotations,
    ...agent.annotations,
    [CLIENT_ANNOTATION]: `${hostname()}/${process.pid}`,
    ...(target ? { 'doppel.dev/target': `${target.namespace}/${target.pod}`, [TARGET_CONTAINER_ANNOTATION]: target.containerId } : {}),
  };
  const container: V1Container = { ...agentContainer({ ...plan, name: AGENT_CONTAINER, port: AGENT_PORT }), resources: agent.resources };
  const spec: V1PodSpec = {
    restartPolicy: 'Never',
    automountServiceAccountToken: false,
    terminationGracePeriodSeconds: 2,
    containers: [container],
    tolerations: agent.tolerations,
    ...(agent.service_account ? { serviceAccountName: agent.service_account } : {}),
    ...(agent.image_pull_secrets.length > 0 ? { imagePullSecrets: agent.image_pull_secrets.map((secret) => ({ name: secret.name ?? Object.values(secret)[0] ?? '' })) } : {}),
    // Pinned to the target's node the scheduler is skipped; targetless, the user's node selector places it.
    ...(target ? { nodeName: target.nodeName, hostPID: true } : { nodeSelector: agent.node_selector }),
  };
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name: plan.name, labels, annotations },
    spec: {
      backoffLimit: 0,
      // The agent exits when its client is gone; the Job then disappears on its own, even when the CLI was killed.
      ttlSecondsAfterFinished: 2,
      activeDeadlineSeconds: plan.deadlineSeconds,
      template: { metadata: { labels, annotations }, spec },
    },
  };
}

function grantedCapabilities(disabled: string[]): V1Capabilities {
  const off = new Set(disabled.map((name) => name.toUpperCase().replace(/^CAP_/, '')));
  return { add: capabilities.filter((name) => !off.has(name)) };
}
