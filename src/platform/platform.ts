// Where a session's agents run: a platform turns a target into agents next to it, follows the target's replicas,
// and removes everything it made. The CLI's exec session speaks to every platform through this.
import type { AgentTransport } from './agent-transport.ts';

/** Progress lines for slow steps; the CLI's progress display implements it. */
export interface StepReporter {
  /** Runs a slow step; `work` may say what the step waits for now ("pulling image X"), which the line then shows. */
  step<T>(text: string, work: (status: (text: string) => void) => Promise<T>): Promise<T>;
  warn(text: string): void;
}

export interface ReplicaEvents {
  /** An agent next to a replica that became ready during the session. */
  joined(transport: AgentTransport): void;
  /** A replica the session had went away; the platform stops its agent. */
  left(transport: AgentTransport, why: string): void;
  /** A replica became ready but its agent could not start. */
  failed(description: string, error: Error): void;
}

export interface Platform {
  /** What the session targets, for progress lines and errors ("deployment/api in shop"). */
  readonly description: string;
  /** Starts one agent per ready replica of the target (targetless: one), the first being the primary. */
  start(progress: StepReporter): Promise<AgentTransport[]>;
  /** Follows replicas joining and leaving until stopped; platforms with one fixed target report nothing. */
  follow(events: ReplicaEvents): { stop(): void };
  /**
   * Directories the target mounts from volumes (ConfigMaps, Secrets, PVCs...), read remotely even under local roots.
   * May be asked before start(): it settles once the target is known (or the platform stopped).
   */
  remoteMounts(): Promise<string[]>;
  /** Whether the target has an environment of its own (targetless has none). */
  readonly hasTargetProcess: boolean;
  /**
   * The target's environment and /etc/hostname, read as its agent would, by a platform that can without one (a local
   * process's /proc): a program then starts while its agent does. Absent, the agent is asked.
   */
  targetEnvironment?(withHostname: boolean): Promise<{ vars: Record<string, string>; hostnameFile?: string | undefined }>;
  /**
   * A process on this machine whose root is the target's (a local process target): its /proc/PID/root reaches the
   * target's files, which the proxy then serves itself, as the agent would, and which a program opens itself for
   * reading (see AgentClient's rootPid). Absent, the agent is asked.
   */
  readonly rootPid?: number;
  /** A process on this machine in the target's network namespace (a local process target): see AgentClient's networkPid. */
  readonly networkPid?: number;
  /** Stops every agent and removes everything the platform created; safe to call more than once. */
  stop(): Promise<void>;
  /** Last resort on a dying CLI: whatever can be done synchronously. */
  killNow(): void;
}
