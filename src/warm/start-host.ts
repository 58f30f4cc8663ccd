// The CLI's side of the warm session host (session-host.ts): started while the program runs, so that it has loaded by
// the time the session ends; told `go` once the agent is parked, or told nothing (end of file) when the session did not
// end cleanly. The session's end does not wait for the host: a marker beside the host's launch socket to be says that
// it is starting, and the next run's trampoline waits there until it listens (layer/src/launch.c).
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import module from 'node:module';
import { join } from 'node:path';
import process from 'node:process';
import { finished } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { startTime } from '../agent/process-identity.ts';
import type { ResolvedConfig } from '../config/schema.ts';
import type { Target } from '../config/target.ts';
import { warmDirectory } from '../platform/process/warm-agents.ts';
import { isPidNamespaceInit } from '../process-alive.ts';
import { tracing } from '../trace.ts';
import { LAUNCH_STARTING, launchSocketName } from './launch-wire.ts';
import type { Handoff, HostStart } from './session-host.ts';

const hostMain = fileURLToPath(new URL(`./session-host${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url));

export interface SessionHostStart {
  /** After the session closed: `parked` says its agent was left warm for the host to take. */
  handOver(parked: boolean): Promise<void>;
}

/**
 * Whether a session on `target` may leave a host: with agent.ttl > 0, on a process, or on a Kubernetes target with
 * its agents in Jobs (an ephemeral container is not kept warm; a traced agent's Job carries --trace in its settings,
 * which the host, not traced, would not take), and not from a CLI whose exit ends its PID namespace (the host would die
 * with it, and leave its marker). Only a session that ends with one agent hands it over.
 */
export function leavesHost(target: Target, config: ResolvedConfig): boolean {
  if (config.agent.ttl <= 0 || target.kind === 'container' || target.kind === 'targetless' || isPidNamespaceInit()) return false;
  return target.kind === 'process' || (!config.agent.ephemeral && !tracing());
}

/** The marker of host `hostPid` of `target` while it starts: its launch socket's path and LAUNCH_STARTING. */
function startingMarker(target: Target, hostPid: number): string | undefined {
  const dir = warmDirectory();
  if (dir === undefined) return undefined;
  if (target.kind !== 'process') return join(dir, launchSocketName('kube', hostPid) + LAUNCH_STARTING);
  const start = startTime(target.pid);
  return start === undefined ? undefined : join(dir, launchSocketName({ pid: target.pid, start }, hostPid) + LAUNCH_STARTING);
}

export function startSessionHost(target: Target, handoff: Handoff): SessionHostStart {
  const cache = module.getCompileCacheDir?.();
  // Its own session: the terminal's signals are not for it. `--pid` or `--target` only names its target in `ps`. Its
  // errors have nowhere to go; a request it cannot serve is the CLI's.
  const naming = target.kind === 'process' ? ['--pid', String(target.pid)] : ['--target', handoff.config.target.path ?? ''];
  const child = spawn(process.execPath, [...process.execArgv.filter((flag) => flag.startsWith('--min-semi-space-size')), hostMain, ...naming], { detached: true, stdio: ['pipe', 'ignore', 'ignore'], env: cache ? { ...process.env, NODE_COMPILE_CACHE: cache } : process.env });
  child.on('error', () => {});
  child.stdin!.on('error', () => {});
  const marker = child.pid === undefined ? undefined : startingMarker(target, child.pid);
  child.stdin!.write(`${JSON.stringify({ ...handoff, marker } satisfies HostStart)}\n`);
  return {
    async handOver(parked) {
      if (parked && marker !== undefined) {
        try {
          writeFileSync(marker, '', { flag: 'wx', mode: 0o600 });
        } catch {
          // The next run then finds the host once it listens, or takes the parked agent itself.
        }
      }
      // Written, or the host gone: either way the host has what it will get.
      child.stdin!.end(parked ? 'go\n' : undefined);
      await new Promise((resolve) => finished(child.stdin!, resolve));
      child.unref();
    },
  };
}
