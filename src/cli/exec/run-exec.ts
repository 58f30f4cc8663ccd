// `doppel exec`: start the agent next to the target, start the proxy, run the program with the layer, and undo it all on every exit path.
import { existsSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import process from 'node:process';
import { DoppelError } from '../../errors.ts';
import { mergeEnvironment } from '../../config/env-policy.ts';
import { createFsPolicy } from '../../config/fs-policy.ts';
import { createDnsPolicy, createOutgoingPolicy } from '../../config/network-policy.ts';
import type { ResolvedConfig } from '../../config/schema.ts';
import { parseTarget } from '../../config/target.ts';
import type { AgentTransport } from '../../platform/agent-transport.ts';
import { startProcessAgent } from '../../platform/process/process-platform.ts';
import { connectAgent, type AgentClient } from '../../proxy/agent-client.ts';
import { startProxy, type Proxy } from '../../proxy/proxy.ts';
import type { Progress } from '../progress.ts';
import { findLayer, layerEnvironment } from './layer-library.ts';
import { runProgram } from './run-program.ts';
import { isStaticElf, whichSync } from './static-binary.ts';

export async function runExec(command: string[], config: ResolvedConfig, progress: Progress): Promise<number> {
  const layer = findLayer();
  const target = parseTarget(config.target.path);
  if (target.kind !== 'process') {
    throw new DoppelError('E_TARGET_UNSUPPORTED', `${target.kind} targets are not supported yet; this version targets process/PID`, {
      category: 'target',
      hint: 'use --target process/PID (Linux, as root)',
    });
  }

  let transport: AgentTransport | undefined;
  let agent: AgentClient | undefined;
  let proxy: Proxy | undefined;
  // A CLI that dies anyway must not leave the agent running; the socketpair closing would end it too.
  const onExit = () => transport?.killNow();
  process.once('exit', onExit);
  try {
    transport = await progress.step(`starting the agent in process ${target.pid}'s network namespace`, () =>
      startProcessAgent({ pid: target.pid, logLevel: config.agent.log_level }),
    );
    const started = transport;
    agent = await progress.step('waiting for the agent', () => handshake(started, config.agent.startup_timeout * 1000));

    const remoteEnv = config.feature.env.enabled ? await progress.step('reading the target\'s environment', () => agent!.env()) : {};
    const cwd = process.cwd();
    const executable = whichSync(command[0] ?? '', process.env.PATH, existsSync);
    proxy = await startProxy({
      agent,
      fs: createFsPolicy(config.feature.fs, { cwd, home: homedir(), tmpdir: tmpdir(), executable }),
      dns: createDnsPolicy(config.feature.network.dns),
      outgoing: createOutgoingPolicy(config.feature.network.outgoing),
    });
    if (executable && (await isStaticElf(executable))) {
      progress.warn(`${executable} is statically linked: the layer cannot reach it, so it runs with the local context only`);
    }

    const env = {
      ...mergeEnvironment({ local: process.env, remote: remoteEnv, config: config.feature.env }),
      ...layerEnvironment(layer, proxy.socketPath, process.env.LD_PRELOAD),
    };
    const program = runProgram(command, env);
    const agentLost = transport.exited.then((how) => how);
    const outcome = await Promise.race([program.status.then((status) => ({ status })), agentLost.then((how) => ({ how }))]);
    if ('status' in outcome) return outcome.status;

    program.child.kill('SIGTERM');
    const killer = setTimeout(() => program.child.kill('SIGKILL'), 3000);
    await program.status.catch(() => undefined);
    clearTimeout(killer);
    throw agentGone(transport, outcome.how);
  } finally {
    await proxy?.close().catch(() => undefined);
    agent?.close();
    await transport?.stop().catch(() => undefined);
    process.off('exit', onExit);
  }
}

async function handshake(transport: AgentTransport, timeoutMs: number): Promise<AgentClient> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new DoppelError('E_AGENT_TIMEOUT', `the agent in ${transport.description} did not answer within ${timeoutMs / 1000}s`, {
            category: 'agent',
            hint: `raise agent.startup_timeout if the machine is slow; the agent said: ${transport.logTail() || '(nothing)'}`,
          }),
        ),
      timeoutMs,
    );
  });
  const died = transport.exited.then((how) => {
    throw agentFailedToStart(transport, how);
  });
  try {
    return await Promise.race([connectAgent(transport.stream, { handshakeTimeoutMs: timeoutMs }), timeout, died]);
  } catch (error) {
    // A broken stream usually means the agent died; say that rather than what the socket saw.
    const how = await Promise.race([transport.exited, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 200))]);
    if (how !== undefined && !(error instanceof DoppelError && error.code === 'E_AGENT_START')) throw agentFailedToStart(transport, how);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

function agentFailedToStart(transport: AgentTransport, how: string): DoppelError {
  const said = transport.logTail();
  return new DoppelError('E_AGENT_START', `the agent in ${transport.description} ${how} before it was ready${lastLine(said) ? `: ${lastLine(said)}` : ''}`, {
    category: 'agent',
    hint: 'run with --agent-log-level debug to see the agent\'s log',
  });
}

function agentGone(transport: AgentTransport, how: string): DoppelError {
  const said = transport.logTail();
  return new DoppelError('E_AGENT_LOST', `the agent in ${transport.description} ${how} while the program ran${lastLine(said) ? `: ${lastLine(said)}` : ''}; the program was stopped`, {
    category: 'agent',
    hint: 'run doppel exec again; if it keeps happening, run with --agent-log-level debug and report the agent\'s log',
  });
}

/** The agent's last word worth showing: its warnings and errors, or what its launcher printed. */
const lastLine = (text: string) => text.split('\n').filter((line) => line.trim() !== '' && !/^agent: (info|debug):/.test(line)).at(-1) ?? '';
