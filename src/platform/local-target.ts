// A target process this machine reaches itself: through its /proc entry the layer opens the target's files (its root)
// and makes its sockets (its network namespace) with no agent in the way. A local process target is one; so is a
// Kubernetes target whose pod runs on the CLI's own machine (a single-node cluster), as its agent's hello places it.
import process from 'node:process';
import { processPlace, startTime } from '../agent/process-identity.ts';
import type { ProcessPlace } from '../protocol/messages.ts';

export interface LocalTarget {
  readonly pid: number;
  /** Its start time: the PID names this process only while the process there started then. */
  readonly start: string;
}

/**
 * The target an agent placed, when this CLI sees that very process (the same kernel's boot, the same PID namespace,
 * the same start time) and may enter it (root); undefined otherwise, which leaves everything to the agent.
 */
export function sameMachineTarget(place: ProcessPlace | undefined): LocalTarget | undefined {
  if (!place || process.geteuid?.() !== 0) return undefined;
  const here = processPlace(place.pid);
  const same = here !== undefined && here.boot === place.boot && here.pidNamespace === place.pidNamespace && here.start === place.start;
  return same ? { pid: place.pid, start: place.start } : undefined;
}

/** Whether the target still runs (a replica's pod may go during a session, and its PID be taken by another process). */
export const stillRuns = (target: LocalTarget): boolean => startTime(target.pid) === target.start;
