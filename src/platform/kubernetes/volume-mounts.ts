// The paths where the target container mounts volumes (ConfigMaps, Secrets, projected, emptyDir, PVCs, the service-account token).
import type { KubeContext } from './kube-context.ts';
import type { TargetPod } from './target-pod.ts';

export async function volumeMountPaths(kube: KubeContext, pod: TargetPod): Promise<string[]> {
  const spec = await kube.call({ verb: 'get', resource: 'pods', namespace: pod.namespace, name: pod.name }, () => kube.core.readNamespacedPod({ name: pod.name, namespace: pod.namespace }));
  const container = [...(spec.spec?.containers ?? []), ...(spec.spec?.initContainers ?? [])].find((c) => c.name === pod.container);
  return (container?.volumeMounts ?? []).map((mount) => mount.mountPath);
}
