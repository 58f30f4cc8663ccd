// What a warm session host needs to know of its target's platform: how it takes the parked agent, how its launch socket
// is named, whether a request's target is its own, and when the target is no longer the one its session was opened on.
import type { ResolvedConfig } from '../config/schema.ts';
import type { Target } from '../config/target.ts';
import type { Platform } from '../platform/platform.ts';
import type { LaunchRequest } from './launch-wire.ts';

export interface HostTarget {
  /** For the progress line: "process 1234", "deployment/api in shop". */
  readonly description: string;
  /** Takes only the agent its CLI parked (warm-only); none is an error. */
  readonly platform: Platform;
  /** The launch socket's file name in the warm directory, or undefined when the target is gone already. */
  socketName(hostPid: number): string | undefined;
  /** Whether a request's target, read with the request's configuration, environment and directory, is this host's. */
  isOurs(target: Target, config: ResolvedConfig, request: Pick<LaunchRequest, 'env' | 'cwd'>): Promise<boolean>;
  /** Calls `gone` when the target is no longer what the session was opened on; `keepAgent`: the agent is still worth parking. */
  watch(gone: (keepAgent: boolean) => void): void;
}
