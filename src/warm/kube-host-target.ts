// A warm session host's Kubernetes target: the agent Job its CLI parked next to the target's one pod, claimed as a CLI
// claims it; a request is ours for the same target in the same namespace of the same cluster, context, user and
// kubeconfig, as the CLI would find them with the request's environment. The target's pods are watched: the pod gone
// or not ready, or another one ready (a session would have an agent there too), and the session is over.
import { isAbsolute, resolve } from 'node:path';
import process from 'node:process';
import type { ResolvedConfig } from '../config/schema.ts';
import type { Target } from '../config/target.ts';
import { loadKubeContext } from '../platform/kubernetes/kube-context.ts';
import { createKubernetesPlatform } from '../platform/kubernetes/kubernetes-platform.ts';
import type { KubeTarget } from '../platform/kubernetes/resolve-target.ts';
import type { HostTarget } from './host-target.ts';
import { launchSocketName } from './launch-wire.ts';

export async function kubeHostTarget(config: ResolvedConfig, target: KubeTarget): Promise<HostTarget> {
  // A change seen before the host watches is kept for it.
  let seen: boolean | undefined;
  let gone: (keepAgent: boolean) => void = (keepAgent) => (seen = (seen ?? true) && keepAgent);
  const platform = await createKubernetesPlatform(target, config, { warmOnly: { targetChanged: (keepAgent) => gone(keepAgent) } });
  const own = await kubeIdentity(config, process.env as Record<string, string>, process.cwd());
  return {
    description: platform.description,
    platform,
    socketName: (hostPid) => launchSocketName('kube', hostPid),
    async isOurs(requested: Target, requestConfig, { env, cwd }) {
      if (requested.kind !== target.kind || requested.name !== target.name || requested.container !== target.container) return false;
      return (await kubeIdentity(requestConfig, env, cwd)) === own;
    },
    watch(callback) {
      gone = callback;
      if (seen !== undefined) callback(seen);
    },
  };
}

/** Where a configuration and environment lead the CLI: the kubeconfig files, context, API server, user and namespace. */
async function kubeIdentity(config: ResolvedConfig, env: Record<string, string>, cwd: string): Promise<string> {
  // Relative KUBECONFIG entries are the request's directory's, not the host's.
  const kubeconfigs = env.KUBECONFIG?.split(':').map((file) => (file === '' || isAbsolute(file) || file.startsWith('~') ? file : resolve(cwd, file)));
  const kube = await loadKubeContext({ kubeconfig: config.kubeconfig, context: config.kube_context, namespace: config.target.namespace, env: { ...env, ...(kubeconfigs ? { KUBECONFIG: kubeconfigs.join(':') } : {}) }, identityOnly: true });
  return JSON.stringify([kube.source, kube.contextName, kube.server, kube.config.getCurrentUser()?.name, kube.namespace]);
}
