// Picks the platform a target lives on.
import type { ResolvedConfig } from '../config/schema.ts';
import type { Target } from '../config/target.ts';
import { DoppelError } from '../errors.ts';
import type { Platform } from './platform.ts';
import { createProcessPlatform } from './process/process-platform.ts';

export async function createPlatform(target: Target, config: ResolvedConfig): Promise<Platform> {
  switch (target.kind) {
    case 'process':
      return createProcessPlatform({ pid: target.pid, logLevel: config.agent.log_level, ttl: config.agent.ttl });
    case 'container':
      throw new DoppelError('E_TARGET_UNSUPPORTED', 'container targets are not supported yet', {
        category: 'target',
        hint: 'target the container\'s main process instead: --target process/$(docker inspect -f {{.State.Pid}} NAME)',
      });
    default: {
      // The Kubernetes client takes most of a second to load: process targets must not pay for it.
      const { createKubernetesPlatform } = await import('./kubernetes/kubernetes-platform.ts');
      return createKubernetesPlatform(target, config);
    }
  }
}
