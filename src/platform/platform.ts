// Where a session's agents run: a platform turns a target into agents next to it, follows the target's replicas,
// and removes everything it made. The CLI's exec session speaks to every platform through this.
import type { AgentTransport } from './agent-transport.ts';
import type { LocalTarget } from './local-target.ts';

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
   * The target's process on this machine (a local process target), known before any agent: the proxy reads the
   * target's files under its /proc/PID/root itself, as the agent would, and a program opens them and makes its sockets
   * in its network namespace itself (see AgentClient's localTarget). Absent, the session asks each agent's hello.
   */
  readonly local?: LocalTarget;
  /** Stops every agent and removes everything the platform created; safe to call more than once. */
  stop(): Promise<void>;
  /** Last resort on a dying CLI: whatever can be done synchronously. */
  killNow(): void;
}
