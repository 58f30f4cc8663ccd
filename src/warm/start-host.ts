// The CLI's side of the warm session host (session-host.ts): started while the program runs, so that it has loaded by
// the time the session ends; told `go` once the agent is parked, and waited for until it holds the agent (so the next
// `doppel exec` finds it), or told nothing (end of file) when the session did not end cleanly.
import { spawn } from 'node:child_process';
import module from 'node:module';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import type { ResolvedConfig } from '../config/schema.ts';
import type { Target } from '../config/target.ts';
import { tracing } from '../trace.ts';
import type { Handoff } from './session-host.ts';

const hostMain = fileURLToPath(new URL(`./session-host${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url));

/** A host that does not hold the agent by then is not waited for: the next CLI reuses the parked agent itself. */
const READY_TIMEOUT_MS = 2000;

export interface SessionHostStart {
  /** After the session closed: `parked` says its agent was left warm. Settles once the host holds it, or gave up. */
  handOver(parked: boolean): Promise<void>;
}

/**
 * Whether a session on `target` may leave a host: with agent.ttl > 0, on a process, or on a Kubernetes target with
 * its agents in Jobs (an ephemeral container is not kept warm; a traced agent's Job carries --trace in its settings,
 * which the host, not traced, would not take). Only a session that ends with one agent hands it over.
 */
export function leavesHost(target: Target, config: ResolvedConfig): boolean {
  if (config.agent.ttl <= 0 || target.kind === 'container' || target.kind === 'targetless') return false;
  return target.kind === 'process' || (!config.agent.ephemeral && !tracing());
}

export function startSessionHost(target: Target, handoff: Handoff): SessionHostStart {
  const cache = module.getCompileCacheDir?.();
  // Its own session: the terminal's signals are not for it. `--pid` or `--target` only names its target in `ps`. Its
  // errors have nowhere to go; a request it cannot serve is the CLI's.
  const naming = target.kind === 'process' ? ['--pid', String(target.pid)] : ['--target', handoff.config.target.path ?? ''];
  const child = spawn(process.execPath, [...process.execArgv.filter((flag) => flag.startsWith('--min-semi-space-size')), hostMain, ...naming], { detached: true, stdio: ['pipe', 'pipe', 'ignore'], env: cache ? { ...process.env, NODE_COMPILE_CACHE: cache } : process.env });
  child.on('error', () => {});
  child.stdin!.on('error', () => {});
  child.stdin!.write(`${JSON.stringify(handoff)}\n`);
  return {
    async handOver(parked) {
      if (parked) {
        const answered = new Promise<void>((resolve) => {
          child.stdout!.once('data', () => resolve());
          child.stdout!.once('close', () => resolve());
        });
        child.stdin!.end('go\n');
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([answered, new Promise<void>((resolve) => (timer = setTimeout(resolve, READY_TIMEOUT_MS)))]);
        clearTimeout(timer);
      } else {
        child.stdin!.end();
      }
      child.stdout!.destroy();
      child.unref();
    },
  };
}
