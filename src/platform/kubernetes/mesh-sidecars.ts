// Names of containers that meshes and injectors add to pods: never the default target container.

/** Container names by the project that injects them. */
const sidecarsByInjector: Record<string, string[]> = {
  istio: ['istio-proxy', 'istio-init', 'istio-validation'],
  linkerd: ['linkerd-proxy', 'linkerd-init', 'linkerd-network-validator'],
  consul: ['consul-dataplane', 'envoy-sidecar', 'consul-connect-envoy-sidecar', 'consul-connect-lifecycle-sidecar', 'consul-connect-inject-init'],
  kuma: ['kuma-sidecar', 'kuma-init'],
  'aws app mesh and open service mesh': ['envoy', 'proxyinit'],
  dapr: ['daprd'],
  knative: ['queue-proxy'],
  vault: ['vault-agent', 'vault-agent-init'],
};

export const meshSidecarNames: ReadonlySet<string> = new Set(Object.values(sidecarsByInjector).flat());

export function isMeshSidecar(containerName: string): boolean {
  return meshSidecarNames.has(containerName);
}
