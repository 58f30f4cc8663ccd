// A warm session host's process target: the agent its CLI parked on the warm socket, the target known by its PID and
// start time, polled, since a process says nothing when it exits.
import type { ResolvedConfig } from '../config/schema.ts';
import { createProcessPlatform } from '../platform/process/process-platform.ts';
import { startTime } from '../agent/process-identity.ts';
import type { HostTarget } from './host-target.ts';
import { launchSocketName } from './launch-wire.ts';

const TARGET_POLL_MS = 500;

export function processHostTarget(config: ResolvedConfig, pid: number): HostTarget {
  const targetStart = startTime(pid);
  return {
    description: `process ${pid}`,
    platform: createProcessPlatform({ pid, logLevel: config.agent.log_level, ttl: config.agent.ttl, warmOnly: true }),
    socketName: (hostPid) => targetStart && launchSocketName({ pid, start: targetStart }, hostPid),
    isOurs: async (target) => target.kind === 'process' && target.pid === pid,
    watch(gone) {
      setInterval(() => {
        if (startTime(pid) !== targetStart) gone(false);
      }, TARGET_POLL_MS).unref();
    },
  };
}
