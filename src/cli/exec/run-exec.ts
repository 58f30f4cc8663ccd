// `doppel exec`: start the agents through the target's platform, start the proxy, run the program with the layer,
// and undo it all on every exit path.
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import process from 'node:process';
import type { ResolvedConfig } from '../../config/schema.ts';
import { parseTarget } from '../../config/target.ts';
import { DoppelError } from '../../errors.ts';
import { createPlatform } from '../../platform/create-platform.ts';
import { procIsOurs } from '../../process-alive.ts';
import { prepareProxy, startProxy, type Proxy } from '../../proxy/proxy.ts';
import type { Progress } from '../progress.ts';
import { findLayer } from './layer-library.ts';
import { trace, tracing } from '../../trace.ts';
import { createCallTracer } from './call-trace.ts';
import { programEnvironment, programProxyPolicies, readTargetEnvironment, readTargetMounts, sessionOwner, sessionPolicies } from './program-proxy.ts';
import { runProgram, type RunningProgram } from './run-program.ts';
import { dropPlan, planDifference, plannedStart, takePriorityBack, writePlan } from './launch-plan.ts';
import { startSession, type Session } from './session.ts';
import { interruptibleStart } from './start-interrupt.ts';
import { isStaticElf, whichSync } from './static-binary.ts';
import { leavesHost, startSessionHost, type SessionHostStart } from '../../warm/start-host.ts';

/** Where the configuration came from: -f's file, and the file read (launch plans check both). */
export interface ConfigOrigin {
  configFile: string | undefined;
  source: string | undefined;
}

export async function runExec(command: string[], config: ResolvedConfig, progress: Progress, origin: ConfigOrigin): Promise<number> {
  if (!procIsOurs()) {
    throw new DoppelError('E_PROC_FOREIGN', `/proc shows another PID namespace than doppel's (doppel is process ${process.pid} in its own)`, {
      category: 'usage',
      hint: 'mount a /proc for this PID namespace (unshare --pid --fork --mount-proc; container runtimes do this)',
    });
  }
  const layer = findLayer();
  // A program bin/doppel's trampoline started already, from the plan of this program's last start (launch-plan.ts).
  const planned = plannedStart();
  // Bad lists fail before any agent starts.
  const policies = sessionPolicies(config);
  const calls = tracing() ? createCallTracer() : undefined;
  const target = parseTarget(config.target.path);
  const platform = await createPlatform(target, config);
  let session: Session | undefined;
  let proxy: Proxy | undefined;
  let hosting: Promise<SessionHostStart | undefined> | undefined;
  let cleanEnd = false;
  // A CLI that dies anyway must not leave agents running; each platform also ends its agents when the link drops.
  const onExit = () => platform.killNow();
  process.once('exit', onExit);
  let abort: (error: DoppelError) => void = () => {};
  const aborted = new Promise<DoppelError>((resolve) => (abort = resolve));
  const interrupt = interruptibleStart(() => void platform.stop().catch(() => undefined));
  const cwd = process.cwd();
  const executable = whichSync(command[0] ?? '', process.env.PATH, existsSync);
  // The proxy's policies and its directory need the target's mounts, not its agent: made while the agent starts (the
  // platform gives the mounts once it knows the target).
  const preparing = readTargetMounts(platform, config).then((targetMounts) => {
    const proxyPolicies = programProxyPolicies({ config, policies, targetMounts, cwd, executable, localEnv: process.env });
    return { proxyPolicies, prepared: prepareProxy(planned) };
  });
  // Awaited where the proxy starts, or at the end to remove what it made.
  preparing.catch(() => undefined);
  try {
    // The program starts while the agents answer their handshakes, unless it needs them for its environment: its first
    // remote call waits for them, and a failed handshake ends the session as a lost agent does.
    const { session: started } = await startSession(platform, { handshakeTimeoutMs: config.agent.startup_timeout * 1000, communicationTimeoutMs: config.agent.communication_timeout * 1000, onCall: calls?.onCall }, progress);
    session = started;
    const agent = started.agent;
    const environment = readTargetEnvironment(agent, platform, config, progress).then((found) => (trace('environment fetched'), found));
    // The proxy starts listening while the environment is read. Where only the agents' hellos tell whether this machine
    // reaches the target itself (a pod on this node), the rules the program gets wait for them, as its environment does.
    const placed = platform.local || !platform.hasTargetProcess ? undefined : started.ready.catch(() => undefined);
    const listening = Promise.all([preparing, placed]).then(async ([{ proxyPolicies, prepared }]) => {
      proxy = await startProxy(
        { ...proxyPolicies, agent, session: { owner: sessionOwner(command, process.pid), notice: (text) => progress.warn(text), abort }, ...(calls ? { wrapHandler: calls.wrap } : {}) },
        prepared,
      );
      trace('proxy listening');
      return proxy;
    });
    const [found, { socketPath }] = await bothSettled(environment, listening);
    if (interrupt.reason) throw interrupt.reason;
    interrupt.end();
    if (executable && isStaticElf(executable)) {
      progress.warn(`${executable} is statically linked: the layer cannot reach it, so it runs with the local context only`);
    }

    const env = programEnvironment({ config, policies, target: found, localEnv: process.env, layer, socketPath });
    const file = executable === undefined ? undefined : resolve(cwd, executable);
    let program: RunningProgram;
    if (planned) {
      program = planned.program;
      // Decided again, as it would have been: a difference the trampoline's checks did not see stops the program.
      const differs = planDifference(planned, { file, argv: command, env, fastPath: proxy!.fastPath });
      takePriorityBack();
      if (differs) {
        dropPlan(planned);
        abort(new DoppelError('E_PLAN_STALE', `the program started as this command's last run did, but this run's session differs (${differs}), so it was stopped`, { category: 'usage', hint: 'run the command again' }));
      }
    } else {
      program = runProgram(command, env, calls && (() => trace('program: first byte of output')));
      trace('program spawned');
      if (!calls && file !== undefined && !isStaticElf(file) && platform.local) {
        const inputs = { cwd, ...origin, envFile: config.feature.env.enabled ? config.feature.env.env_file : undefined, command: command[0]!, path: process.env.PATH, executable: file, targetPid: platform.local.pid, targetEnv: config.feature.env.enabled, layer };
        writePlan(inputs, { argv: command, env, dir: dirname(socketPath), fastPath: proxy!.fastPath, handoverPid: proxy!.handoverPid });
      }
    }
    // Once the agents have answered: the program's first remote calls then find compiled code in the proxy and the
    // agent. Not as it is spawned: where cores are few, the prime's CPU came out of the program's own start.
    void started.ready.then(() => proxy?.prime(), () => undefined);
    // The next `doppel exec` on this target can start its program in this session, kept warm by a host (src/warm/),
    // which is started once the session's agents are known, not to slow the program's start.
    if (leavesHost(target, config)) hosting = started.ready.then(() => (started.size() === 1 ? startSessionHost(target, { config, layer, request: { pid: process.pid, cwd, argv: process.argv, env: process.env as Record<string, string> } }) : undefined), () => undefined);
    const outcome = await Promise.race([program.status.then((status) => ({ status })), started.lost.then((error) => ({ error })), aborted.then((error) => ({ error }))]);
    trace('program exited');
    if ('status' in outcome) {
      // A program that ended before its agents answered does not hide an agent that never did.
      await started.ready;
      cleanEnd = true;
      return outcome.status;
    }

    program.kill('SIGTERM');
    const killer = setTimeout(() => program.kill('SIGKILL'), 3000);
    await program.status.catch(() => undefined);
    clearTimeout(killer);
    throw outcome.error;
  } catch (error) {
    throw interrupt.reason ?? error;
  } finally {
    await proxy?.close().catch(() => undefined);
    const parked = await (session ? session.close() : platform.stop()).catch(() => undefined);
    // After the platform's stop, by which the target's mounts are known or will never be.
    if (!proxy) await preparing.then(({ prepared }) => prepared.discard(), () => undefined);
    // A host takes one agent: a session that had several leaves them parked for the next CLI.
    const host = await hosting;
    await host?.handOver(cleanEnd && parked === true && session?.size() === 1);
    if (host) trace('session host told');
    interrupt.end();
    process.off('exit', onExit);
    trace('session closed');
    calls?.summary();
  }
}

/** Both results, or the first failure once both have settled: nothing started (the proxy) is left starting when the session ends. */
async function bothSettled<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [first, second] = await Promise.allSettled([a, b]);
  if (first.status === 'rejected') throw first.reason;
  if (second.status === 'rejected') throw second.reason;
  return [first.value, second.value];
}
