// Follows a resolved target's pods during a session: pods that become ready join, pods that go or stop being ready leave.
import { Watch, type V1Pod } from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DoppelError } from '../../errors.ts';
import type { KubeContext } from './kube-context.ts';
import { kubeError } from './kube-error.ts';
import type { ResolvedTarget } from './resolve-target.ts';
import { readyTargetPod, whyNotReady, type TargetPod } from './target-pod.ts';

export interface FollowHandlers {
  joined(pod: TargetPod): void;
  left(pod: TargetPod, why: string): void;
  /** The watch failed and will be retried with backoff (the API server went away, a credential expired, ...). */
  trouble?(error: DoppelError): void;
}

/** Shorter than client-node's 30 s idle limit, so a quiet watch ends by the server's hand and is simply renewed. */
const watchSeconds = 25;
const maxBackoffMs = 30_000;

export function followTargetPods(kube: KubeContext, resolved: ResolvedTarget, handlers: FollowHandlers): { stop(): void } {
  const current = new Map(resolved.pods.map((pod) => [pod.uid, pod]));
  const stopping = new AbortController();
  const namespace = resolved.namespace;
  // A pod target is followed by name: a pod recreated under the same name (a StatefulSet's) joins again.
  const query = resolved.podName !== undefined ? { fieldSelector: `metadata.name=${resolved.podName}` } : { labelSelector: resolved.selector };
  const operation = { verb: 'watch', resource: 'pods', namespace, kube } as const;
  let activeWatch: AbortController | undefined;

  const leave = (pod: TargetPod, why: string) => {
    current.delete(pod.uid);
    if (!stopping.signal.aborted) handlers.left(pod, why);
  };
  const join = (pod: TargetPod) => {
    current.set(pod.uid, pod);
    if (!stopping.signal.aborted) handlers.joined(pod);
  };

  const update = (pod: V1Pod) => {
    const uid = pod.metadata?.uid ?? '';
    const known = current.get(uid);
    const ready = readyTargetPod(pod, resolved.container);
    if (known !== undefined && (ready === undefined || ready.containerId !== known.containerId)) {
      leave(known, ready === undefined ? whyNotReady(pod, known.container).reason : `its container ${known.container} restarted`);
    }
    if (ready !== undefined && current.get(uid) === undefined) join(ready);
  };
  const remove = (pod: V1Pod) => {
    const known = current.get(pod.metadata?.uid ?? '');
    if (known !== undefined) leave(known, 'was deleted');
  };

  /** Lists the pods, makes `current` agree with them, and returns the list's resourceVersion to watch from. */
  const relist = async (): Promise<string> => {
    const list = await kube.core.listNamespacedPod({ namespace, ...query });
    const present = new Set(list.items.map((pod) => pod.metadata?.uid ?? ''));
    for (const known of [...current.values()]) if (!present.has(known.uid)) leave(known, 'was deleted');
    for (const pod of list.items) update(pod);
    // An empty resourceVersion watches from "now, whatever that is": the events it replays change nothing.
    return list.metadata?.resourceVersion ?? '';
  };

  /** One watch request; resolves with the resourceVersion to continue from, or undefined when a relist is needed. */
  const watchOnce = (resourceVersion: string) =>
    new Promise<string | undefined>((resolve, reject) => {
      let latest: string | undefined = resourceVersion;
      let finished = false;
      const params = { ...query, resourceVersion, allowWatchBookmarks: true, timeoutSeconds: watchSeconds };
      const onEvent = (type: string, object: V1Pod & { code?: number }) => {
        if (type === 'ERROR') {
          // 410 Gone: our resourceVersion is too old; anything else also ends this watch.
          latest = undefined;
          return;
        }
        if (type === 'ADDED' || type === 'MODIFIED') update(object);
        else if (type === 'DELETED') remove(object);
        latest = object.metadata?.resourceVersion ?? latest;
      };
      const done = (error: unknown) => {
        finished = true;
        activeWatch = undefined;
        const idle = (error as { name?: string } | null)?.name === 'TimeoutError';
        if (error && !idle && !stopping.signal.aborted) reject(error);
        else resolve(latest);
      };
      new Watch(kube.config).watch(`/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`, params, onEvent, done).then((controller) => {
        if (stopping.signal.aborted || finished) controller.abort();
        else activeWatch = controller;
      }, done);
    });

  const run = async () => {
    let resourceVersion: string | undefined;
    let failures = 0;
    while (!stopping.signal.aborted) {
      try {
        resourceVersion ??= await relist();
        if (stopping.signal.aborted) return;
        resourceVersion = await watchOnce(resourceVersion);
        failures = 0;
      } catch (error) {
        if (stopping.signal.aborted) return;
        handlers.trouble?.(kubeError(error, operation));
        resourceVersion = undefined;
        failures += 1;
        await sleep(Math.min(maxBackoffMs, 500 * 2 ** failures), undefined, { signal: stopping.signal }).catch(() => {});
      }
    }
  };
  void run();

  return {
    stop() {
      stopping.abort();
      activeWatch?.abort();
      activeWatch = undefined;
    },
  };
}
