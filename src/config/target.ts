// Parses a target string (`process/1234`, `pod/api/container/app`, `deployment/api`, `targetless`, ...) into a typed target.
import { DoppelError } from '../errors.ts';

export const kubernetesKinds = ['pod', 'deployment', 'statefulset', 'replicaset', 'job', 'cronjob', 'rollout', 'service'] as const;
export type KubernetesKind = (typeof kubernetesKinds)[number];

export type Target =
  | { kind: 'process'; pid: number }
  | { kind: 'container'; name: string }
  | { kind: KubernetesKind; name: string; container: string | undefined }
  | { kind: 'targetless' };

const knownKinds = ['process', 'container', ...kubernetesKinds, 'targetless'];
/** kubectl's short names and plurals, as its users type them (`deploy/api`). */
const kindAliases: Record<string, KubernetesKind> = {
  po: 'pod', pods: 'pod', deploy: 'deployment', deployments: 'deployment', sts: 'statefulset', statefulsets: 'statefulset',
  rs: 'replicaset', replicasets: 'replicaset', jobs: 'job', cj: 'cronjob', cronjobs: 'cronjob', ro: 'rollout', rollouts: 'rollout',
  svc: 'service', services: 'service',
};
const syntaxHint = 'write it as process/PID, container/NAME, pod/NAME[/container/C], deployment/NAME[/container/C], ... or targetless';

export function parseTarget(path: string | undefined): Target {
  if (path === undefined || path === '') {
    throw new DoppelError('E_TARGET_MISSING', 'no target given', { category: 'usage', hint: `pass --target (or set "target" in the config file); ${syntaxHint}` });
  }
  if (path === 'targetless') return { kind: 'targetless' };
  const [typed, name, ...rest] = path.split('/');
  const kind = kindAliases[typed ?? ''] ?? typed;
  if (kind === undefined || !knownKinds.includes(kind)) {
    throw new DoppelError('E_TARGET_KIND', `unknown target kind "${typed}" in "${path}"`, { category: 'usage', hint: `known kinds: ${knownKinds.join(', ')} (and kubectl's short names: po, deploy, sts, rs, cj, ro, svc)` });
  }
  if (name === undefined || name === '') throw syntax(path);
  if (kind === 'process') {
    if (!/^[1-9]\d*$/.test(name) || rest.length > 0) throw syntax(path);
    return { kind: 'process', pid: Number(name) };
  }
  if (kind === 'container') {
    if (rest.length > 0) throw syntax(path);
    return { kind: 'container', name };
  }
  if (rest.length === 0) return { kind: kind as KubernetesKind, name, container: undefined };
  if (rest.length === 2 && rest[0] === 'container' && rest[1] !== '') return { kind: kind as KubernetesKind, name, container: rest[1] };
  throw syntax(path);
}

function syntax(path: string): DoppelError {
  return new DoppelError('E_TARGET_SYNTAX', `cannot read target "${path}"`, { category: 'usage', hint: syntaxHint });
}
