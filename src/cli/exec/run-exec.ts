// `doppel exec`: start the agents through the target's platform, start the proxy, run the program with the layer,
// and undo it all on every exit path.
import { existsSync } from 'node:fs';
import { homedir, hostname, tmpdir, userInfo } from 'node:os';
import process from 'node:process';
import { mergeEnvironment } from '../../config/env-policy.ts';
import { createFsPolicy } from '../../config/fs-policy.ts';
import { skippedProcesses } from '../../config/skip-processes.ts';
import { createDnsPolicy, createIncomingPolicy, createOutgoingPolicy, createUnixStreamPolicy } from '../../config/network-policy.ts';
import type { ResolvedConfig } from '../../config/schema.ts';
import { parseTarget } from '../../config/target.ts';
import type { DoppelError } from '../../errors.ts';
import { createPlatform } from '../../platform/create-platform.ts';
import { startProxy, type Proxy } from '../../proxy/proxy.ts';
import type { Progress } from '../progress.ts';
import { findLayer, layerEnvironment } from './layer-library.ts';
import { trace, tracing } from '../../trace.ts';
import { createCallTracer } from './call-trace.ts';
import { runProgram } from './run-program.ts';
import { targetHostname } from './target-hostname.ts';
import { openSession, type Session } from './session.ts';
import { isStaticElf, whichSync } from './static-binary.ts';

export async function runExec(command: string[], config: ResolvedConfig, progress: Progress): Promise<number> {
  const layer = findLayer();
  // Bad lists fail before any agent starts.
  const unixStreams = createUnixStreamPolicy(config.feature.network.outgoing.unix_streams);
  const skipProcesses = skippedProcesses(config);
  const calls = tracing() ? createCallTracer() : undefined;
  const platform = await createPlatform(parseTarget(config.target.path), config);
  let session: Session | undefined;
  let proxy: Proxy | undefined;
  // A CLI that dies anyway must not leave agents running; each platform also ends its agents when the link drops.
  const onExit = () => platform.killNow();
  process.once('exit', onExit);
  let abort: (error: DoppelError) => void = () => {};
  const aborted = new Promise<DoppelError>((resolve) => (abort = resolve));
  const cwd = process.cwd();
  const executable = whichSync(command[0] ?? '', process.env.PATH, existsSync);
  // Nothing before the program's start waits for what needs no agent: it runs while the agent starts.
  const staticElf = executable ? isStaticElf(executable).catch(() => false) : Promise.resolve(false);
  try {
    session = await openSession(platform, { handshakeTimeoutMs: config.agent.startup_timeout * 1000, communicationTimeoutMs: config.agent.communication_timeout * 1000, onCall: calls?.onCall }, progress);
    trace('handshake done');
    const agent = session.agent;
    const environment = Promise.all([
      config.feature.env.enabled && platform.hasTargetProcess ? progress.step('reading the target\'s environment', () => agent.env()) : {},
      config.feature.hostname && platform.hasTargetProcess ? targetHostname(agent) : undefined,
    ]).then((found) => (trace('environment fetched'), found));
    // The proxy needs the target's mounts, not its environment: it starts listening while the environment is read.
    const listening = (config.feature.fs.mode === 'local' ? Promise.resolve([]) : platform.remoteMounts()).then(async (targetMounts) => {
      proxy = await startProxy({
        agent,
        fs: createFsPolicy(config.feature.fs, { cwd, home: homedir(), tmpdir: tmpdir(), executable, path: process.env.PATH, previousCwd: process.env.OLDPWD, targetMounts }),
        dns: createDnsPolicy(config.feature.network.dns),
        outgoing: createOutgoingPolicy(config.feature.network.outgoing, config.feature.network.dns),
        unixStreams,
        incoming: createIncomingPolicy(config.feature.network.incoming, config.agent),
        session: { owner: owner(command), notice: (text) => progress.warn(text), abort },
        wrapHandler: calls?.wrap,
      });
      trace('proxy listening');
      return proxy;
    });
    const [[remoteEnv, hostname], { socketPath }] = await bothSettled(environment, listening);
    if (await staticElf) {
      progress.warn(`${executable} is statically linked: the layer cannot reach it, so it runs with the local context only`);
    }

    const env = {
      ...mergeEnvironment({ local: process.env, remote: remoteEnv, config: config.feature.env }),
      ...layerEnvironment(layer, socketPath, process.env.LD_PRELOAD, { hostname, unixStreams: unixStreams.any, skipProcesses }),
    };
    const program = runProgram(command, env, calls && (() => trace('program: first byte of output')));
    trace('program spawned');
    const outcome = await Promise.race([program.status.then((status) => ({ status })), session.lost.then((error) => ({ error })), aborted.then((error) => ({ error }))]);
    trace('program exited');
    if ('status' in outcome) return outcome.status;

    program.child.kill('SIGTERM');
    const killer = setTimeout(() => program.child.kill('SIGKILL'), 3000);
    await program.status.catch(() => undefined);
    clearTimeout(killer);
    throw outcome.error;
  } finally {
    await proxy?.close().catch(() => undefined);
    await (session ? session.close() : platform.stop()).catch(() => undefined);
    process.off('exit', onExit);
    trace('session closed');
    calls?.summary();
  }
}

/** This session as other developers' sessions on the same target name it: who, where, and what runs. */
function owner(command: string[]): string {
  const line = command.join(' ').replace(/\s+/g, ' ');
  return `${userInfo().username}@${hostname()} (doppel pid ${process.pid}: ${line.length > 60 ? `${line.slice(0, 57)}...` : line})`;
}

/** Both results, or the first failure once both have settled: nothing started (the proxy) is left starting when the session ends. */
async function bothSettled<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [first, second] = await Promise.allSettled([a, b]);
  if (first.status === 'rejected') throw first.reason;
  if (second.status === 'rejected') throw second.reason;
  return [first.value, second.value];
}
