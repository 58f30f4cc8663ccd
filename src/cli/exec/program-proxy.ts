// What a program's start needs from a session, shared by the CLI (src/cli/exec/run-exec.ts) and the warm session host
// (src/warm/): the session's policies from the configuration, what the target tells once (its environment, hostname and
// mounts), and, per program, its proxy and its whole environment.
import { homedir, hostname, tmpdir, userInfo } from 'node:os';
import { mergeEnvironment } from '../../config/env-policy.ts';
import { createFsPolicy, type RunTimePaths } from '../../config/fs-policy.ts';
import { createDnsPolicy, createIncomingPolicy, createOutgoingPolicy, createUnixStreamPolicy } from '../../config/network-policy.ts';
import type { ResolvedConfig } from '../../config/schema.ts';
import { skippedProcesses } from '../../config/skip-processes.ts';
import type { Platform, StepReporter } from '../../platform/platform.ts';
import type { AgentClient } from '../../proxy/agent-client.ts';
import type { IncomingSession } from '../../proxy/incoming.ts';
import type { LayerHandler } from '../../proxy/layer-handler.ts';
import { startProxy, type Proxy, type ProxyPolicies } from '../../proxy/proxy.ts';
import { layerEnvironment } from './layer-library.ts';
import { hostnameFrom } from './target-hostname.ts';

export interface SessionPolicies {
  unixStreams: ReturnType<typeof createUnixStreamPolicy>;
  skipProcesses: string[];
}

/** The parts of the configuration that can be wrong in ways the schema does not see: they fail before any agent starts. */
export function sessionPolicies(config: ResolvedConfig): SessionPolicies {
  return { unixStreams: createUnixStreamPolicy(config.feature.network.outgoing.unix_streams), skipProcesses: skippedProcesses(config) };
}

/** What the target tells a session once about itself, each only when the configuration uses it. */
export interface TargetEnvironment {
  remoteEnv: Record<string, string>;
  hostname: string | undefined;
}

export async function readTargetEnvironment(agent: AgentClient, platform: Pick<Platform, 'hasTargetProcess' | 'targetEnvironment'>, config: ResolvedConfig, progress: StepReporter): Promise<TargetEnvironment> {
  const wantEnv = config.feature.env.enabled && platform.hasTargetProcess;
  const wantHostname = config.feature.hostname && platform.hasTargetProcess;
  if (!wantEnv && !wantHostname) return { remoteEnv: {}, hostname: undefined };
  // One question for both, which the agent answers before anything else (src/agent/env.ts), unless the platform reads
  // them itself.
  const { vars, hostnameFile } = await progress.step('reading the target\'s environment', () => platform.targetEnvironment?.(wantHostname) ?? agent.env(wantHostname));
  return { remoteEnv: wantEnv ? vars : {}, hostname: hostnameFrom(hostnameFile) };
}

/** The target's own mounts, read remotely even under local roots; the proxy's fs policy needs them. */
export const readTargetMounts = (platform: Pick<Platform, 'remoteMounts'>, config: ResolvedConfig): Promise<string[]> => (config.feature.fs.mode === 'local' ? Promise.resolve([]) : platform.remoteMounts());

export interface ProgramProxyOptions {
  agent: AgentClient;
  config: ResolvedConfig;
  policies: SessionPolicies;
  targetMounts: string[];
  /** The program's working directory, and the file it runs. */
  cwd: string;
  executable: string | undefined;
  /** The environment the program was started from. */
  localEnv: NodeJS.ProcessEnv;
  session: IncomingSession;
  wrapHandler?: (handler: LayerHandler) => LayerHandler;
}

/** The program's proxy: its fs policy knows the program's directory and executable. */
export function startProgramProxy(options: ProgramProxyOptions): Promise<Proxy> {
  return startProxy({ ...programProxyPolicies(options), agent: options.agent, session: options.session, ...(options.wrapHandler ? { wrapHandler: options.wrapHandler } : {}) });
}

/** Where a program runs from: what its proxy's fs policy depends on. */
export type ProgramPlace = Pick<ProgramProxyOptions, 'cwd' | 'executable' | 'localEnv' | 'targetMounts'>;

/** What a program's proxy is made of besides the session's policies: the paths its fs policy knows. */
export function programPaths(options: ProgramPlace): RunTimePaths {
  const { localEnv } = options;
  return { cwd: options.cwd, home: localEnv.HOME || homedir(), tmpdir: tmpdir(), executable: options.executable, path: localEnv.PATH, previousCwd: localEnv.OLDPWD, targetMounts: options.targetMounts };
}

export function programProxyPolicies(options: Omit<ProgramProxyOptions, 'agent' | 'session' | 'wrapHandler'>): ProxyPolicies {
  const { config } = options;
  return {
    fs: createFsPolicy(config.feature.fs, programPaths(options)),
    dns: createDnsPolicy(config.feature.network.dns),
    outgoing: createOutgoingPolicy(config.feature.network.outgoing, config.feature.network.dns),
    unixStreams: options.policies.unixStreams,
    incoming: createIncomingPolicy(config.feature.network.incoming, config.agent),
  };
}

/** The program's whole environment: the merged variables, and the layer's for its proxy at `socketPath`. */
export function programEnvironment(options: { config: ResolvedConfig; policies: SessionPolicies; target: TargetEnvironment; localEnv: NodeJS.ProcessEnv; layer: string; socketPath: string }): Record<string, string> {
  const { config, policies, target, localEnv } = options;
  return {
    ...mergeEnvironment({ local: localEnv, remote: target.remoteEnv, config: config.feature.env }),
    ...layerEnvironment(options.layer, options.socketPath, localEnv.LD_PRELOAD, { hostname: target.hostname, unixStreams: policies.unixStreams.any, skipProcesses: policies.skipProcesses }),
  };
}

/** The session as other developers' sessions on the same target name it: who, where, and what runs. */
export function sessionOwner(command: string[], pid: number): string {
  const line = command.join(' ').replace(/\s+/g, ' ');
  return `${userInfo().username}@${hostname()} (doppel pid ${pid}: ${line.length > 60 ? `${line.slice(0, 57)}...` : line})`;
}
