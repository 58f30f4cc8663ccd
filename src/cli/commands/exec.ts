// `doppel exec`: flags (mirrord's names) for running a program in the target's context.
import { Command, Option } from 'commander';
import process from 'node:process';
import { foundFileNote, resolveConfig, type ExecFlags } from '../../config/load.ts';
import { runExec } from '../exec/run-exec.ts';
import { sweepDeadSessionDirs } from '../../proxy/proxy.ts';
import { trace } from '../../trace.ts';
import { createProgress } from '../progress.ts';

export interface ExecOptions {
  target?: string;
  targetNamespace?: string;
  oneReplica?: boolean;
  agentNamespace?: string;
  agentImage?: string;
  agentTtl?: string;
  agentStartupTimeout?: string;
  agentLogLevel?: string;
  ephemeralContainer?: boolean;
  fsMode?: string;
  envExclude?: string;
  envInclude?: string;
  envFile?: string;
  steal?: boolean;
  outgoing?: boolean;
  tcpOutgoing?: boolean;
  udpOutgoing?: boolean;
  remoteDns?: boolean;
  configFile?: string;
  context?: string;
  quiet?: boolean;
  jsonErrors?: boolean;
}

export function register(program: Command): void {
  defineExec(program, async (command, options) => {
    // Before anything can fail: what a killed session left must not outlive the next start.
    sweepDeadSessionDirs();
    const { config, source } = await resolveConfig({ cwd: process.cwd(), configFile: options.configFile, env: process.env, flags: toFlags(options) });
    trace('cli: configuration read');
    const progress = createProgress({ quiet: options.quiet === true });
    const found = foundFileNote(process.cwd(), options.configFile, source);
    if (found) progress.note(found);
    process.exitCode = await runExec(command, config, progress, { configFile: options.configFile, source });
  });
}

/** The exec command's arguments and flags, parsed by the CLI and by the warm session host alike (src/warm/). */
export function defineExec(program: Command, action: (command: string[], options: ExecOptions) => Promise<void>): void {
  // The program's options after `exec` are exec's (commander's condition for passThroughOptions below).
  program.enablePositionalOptions();
  program
    .command('exec')
    .description('run COMMAND locally in the context of the target: its environment, files, DNS and network')
    .argument('<command...>', 'the program to run and its arguments (after the options, or after --)')
    // The program's own options stay its own, as mirrord's `exec` has them: `doppel exec -t deploy/api python3 -m http.server`.
    .passThroughOptions()
    .option('-t, --target <target>', 'the target: process/PID, pod/NAME[/container/C], deployment/NAME, ... or targetless')
    .option('-n, --target-namespace <namespace>', 'Kubernetes namespace of the target')
    .option('--one-replica', 'attach to one ready pod of a workload instead of every one (target.replicas: one)')
    .option('-a, --agent-namespace <namespace>', 'Kubernetes namespace for the agent')
    .option('-i, --agent-image <image>', 'agent image')
    .option('--agent-ttl <seconds>', 'seconds the agent waits for a client after the last one left')
    .option('--agent-startup-timeout <seconds>', 'seconds to wait for the agent to be ready')
    .option('--agent-log-level <level>', 'agent log level (error, warn, info, debug)')
    .option('-e, --ephemeral-container', 'run the agent as an ephemeral container in the target pod')
    .addOption(new Option('--fs-mode <mode>', 'file operations: read (remote reads), write, local, localwithoverrides').choices(['read', 'write', 'local', 'localwithoverrides']))
    .option('-x, --env-exclude <names>', 'remote environment variables to leave out (;-separated, * and ? wildcards)')
    .option('-s, --env-include <names>', 'only these remote environment variables (;-separated, * and ? wildcards)')
    .option('--env-file <path>', 'a .env file whose variables override the remote ones')
    .option('--steal', 'steal incoming traffic instead of mirroring it')
    .option('--no-outgoing', 'make outgoing connections locally')
    .option('--no-tcp-outgoing', 'make outgoing TCP connections locally')
    .option('--no-udp-outgoing', 'make outgoing UDP locally')
    .option('--no-remote-dns', 'resolve names locally')
    .option('-f, --config-file <path>', 'config file (JSON, YAML or TOML; default .doppel/config.* or .mirrord/mirrord.json)')
    .option('--context <name>', 'kubeconfig context')
    .option('-q, --quiet', 'no progress lines')
    // Read by the entry before anything loads (see src/trace.ts); declared here for --help and the parser.
    .option('--trace', 'print timings on stderr: each step of the start-up, and each remote call hop by hop (or DOPPEL_TRACE=1)')
    // The program's option, taken after `exec` too (`doppel exec --json-errors ...`), as it was before options became positional.
    .addOption(new Option('--json-errors').hideHelp())
    .action(action);
}

export function toFlags(options: ExecOptions): ExecFlags {
  return {
    target: options.target,
    targetNamespace: options.targetNamespace,
    oneReplica: options.oneReplica,
    agentNamespace: options.agentNamespace,
    agentImage: options.agentImage,
    agentTtl: numberFlag(options.agentTtl),
    agentStartupTimeout: numberFlag(options.agentStartupTimeout),
    agentLogLevel: options.agentLogLevel,
    ephemeralContainer: options.ephemeralContainer,
    fsMode: options.fsMode,
    envExclude: options.envExclude,
    envInclude: options.envInclude,
    envFile: options.envFile,
    steal: options.steal,
    noOutgoing: options.outgoing === false ? true : undefined,
    noTcpOutgoing: options.tcpOutgoing === false ? true : undefined,
    noUdpOutgoing: options.udpOutgoing === false ? true : undefined,
    noRemoteDns: options.remoteDns === false ? true : undefined,
    kubeContext: options.context,
  };
}

function numberFlag(value: string | undefined): number | undefined {
  return value === undefined ? undefined : Number(value);
}
