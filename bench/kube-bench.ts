// Benchmarks `doppel exec --target deployment/...` on the test cluster: start to the program's first line against a bare
// run, with a fresh agent, in the warm session a run before it left (its host starts the program: right after that run,
// and some runs into the session), and with the warm agent that host gives back to a CLI (with the CLI's own steps and
// the platform's inner steps), and per-call latency from the node itself and as from another machine (through the
// agent) against the process platform (the same pod's container as a process/PID target) and the direct case (the
// same program run in the target pod); writes medians, p99s and ratios to bench/results/kube.json.
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LAUNCH_STARTING } from '../src/warm/launch-wire.ts';
import { warmDir } from '../test/e2e/warm-host.ts';
import { adminKubeconfig, kubectl, poll } from '../test/kubernetes/support/cluster.ts';
import { hostGivesBack, kubeHosts } from '../test/kubernetes/support/warm-session.ts';
import { createKubeFixture } from './kube-fixture.ts';
import { timePlatformSteps, type StepTimeline } from './kube-steps.ts';
import { writeResults } from './results-file.ts';
import { compare, summarize } from './stats.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const doppel = fileURLToPath(new URL('../bin/doppel', import.meta.url));
const node = process.execPath;
const runs = Number(process.env.BENCH_RUNS ?? 10);
const loops = Number(process.env.BENCH_LOOPS ?? 300);
const ms = 1e6;

// The cluster is never started from here (test/cluster/up does that): a benchmark must not rebuild what others use.
if (!existsSync(adminKubeconfig)) {
  console.error(`the Kubernetes benchmark needs the test cluster (test/cluster/up starts it): ${adminKubeconfig} does not exist`);
  process.exit(1);
}

interface Timed {
  /** Nanoseconds from spawn to the first line on stdout, and to the exit. */
  firstLine: number;
  exit: number;
  /** The CLI's progress lines: what, how long the step took (ms), and when the line arrived (ns since spawn). */
  steps: { key: string; durationMs: number; arrived: number }[];
  stderr: string;
}

const progressLine = /^doppel: (.*) \((\d+\.\d+)s, \d+\.\d+s total\)$/;
const stepKeys: [RegExp, string][] = [
  [/^resolving /, 'resolveTarget'],
  [/^starting /, 'startAgents'],
  [/^reusing /, 'reuseWarmAgent'],
  [/^connecting /, 'handshake'],
  [/^reading the target's environment/, 'readEnv'],
];

/** Runs a command to its exit, noting when its first stdout line and each of doppel's progress lines arrive. */
function run(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const since = () => Number(process.hrtime.bigint() - start);
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let firstLine = NaN;
    let stderr = '';
    const steps: Timed['steps'] = [];
    child.stdout.once('data', () => (firstLine = since()));
    child.stdout.resume();
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      const arrived = since();
      stderr += chunk;
      for (const line of chunk.split('\n')) {
        const match = progressLine.exec(line);
        const key = match && stepKeys.find(([pattern]) => pattern.test(match[1]!))?.[1];
        if (match && key) steps.push({ key, durationMs: Number(match[2]) * 1000, arrived });
      }
    });
    child.once('error', reject);
    child.once('close', (code) => {
      if (code !== 0 || Number.isNaN(firstLine)) reject(new Error(`${command} ${args.join(' ')} exited with ${code}: ${stderr.trim()}`));
      else resolve({ firstLine, exit: since(), steps, stderr });
    });
  });
}

/** JSON from a workload's stdout, run through doppel. */
function runJson(args: string[], env: NodeJS.ProcessEnv, wrap: string[] = []): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const [command, ...rest] = [...wrap, doppel, ...args];
    const child = spawn(command!, rest, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(JSON.parse(out) as number[]) : reject(new Error(`doppel ${args.join(' ')} exited with ${code}: ${err.trim()}`))));
  });
}

/** A command run as from another machine that routes to the pod network: it sees none of the node's processes. */
const otherMachine = ['unshare', '--pid', '--fork', '--kill-child', '--mount-proc'];
const round2 = (value: number) => Math.round(value * 100) / 100;
const median = (values: number[]) => summarize(values.map((v) => v * ms)).medianMs;
const env = { ...process.env, KUBECONFIG: adminKubeconfig };

// The workloads run from a copy under the temp directory, which doppel keeps local by default: from bench/, Node's
// realpath of the script would lstat /work, which doppel asks the target for, and the target pod has no /work.
const scripts = mkdtempSync(path.join(tmpdir(), 'doppel-kube-bench-'));
cpSync(`${here}workloads`, scripts, { recursive: true });
const fixture = await createKubeFixture().catch((error: unknown) => {
  rmSync(scripts, { recursive: true, force: true });
  throw error;
});
const { namespace } = fixture;
// Interrupted, the run still removes its namespace (and with it any agent Job) and its copy of the workloads.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    rmSync(scripts, { recursive: true, force: true });
    void fixture.remove().finally(() => process.exit(130));
  });
}
/** Fresh starts need no parked agent to be found: the warm one each round leaves is removed, not waited out. */
const removeAgents = () => kubectl(['delete', 'jobs', '-n', namespace, '-l', 'app.kubernetes.io/managed-by=doppel', '--wait=false']);
const noAgentLeft = () =>
  poll('the previous agent pods to go', async () => ((await kubectl(['get', 'pods', '-n', namespace, '-l', 'app.kubernetes.io/managed-by=doppel', '-o', 'name'])).trim() === '' ? true : undefined), 60_000);
/** Until no warm session host is still starting (its CLI's marker gone: src/warm/start-host.ts). */
const noHostStarting = () => poll('the warm session hosts to start', async () => (readdirSync(warmDir).some((name) => name.endsWith(LAUNCH_STARTING)) ? undefined : true), 30_000);
/** A warm session host whose agent's Job was removed loses its agent and goes. */
const noHostLeft = () => poll('the previous warm session hosts to go', async () => (kubeHosts(fixture.target).length === 0 ? true : undefined), 60_000);
// Others share this 2-core machine: its load is part of every number, so the results say what it was.
const loadAtStart = loadavg();
try {
  const program = [node, '-e', 'console.log("ready")'];
  // A ttl long enough for the warm run to come within it on a loaded machine.
  const viaKube = ['exec', '--target', fixture.target, '--target-namespace', namespace, '--agent-ttl', '30', '--', ...program];
  const viaProcess = ['exec', '--target', `process/${fixture.appPid}`, '--', ...program];

  // One untimed round first, so that no run pays for cold caches alone.
  await run(program[0]!, program.slice(1));
  await run(doppel, viaKube, env);
  await run(doppel, viaProcess, env);
  const bare: Timed[] = [];
  const kube: Timed[] = [];
  /** The run right after a fresh one, and runs of a session that has started programs before (alternating with bare). */
  const sessionFirst: Timed[] = [];
  const session: Timed[] = [];
  const sessionBare: Timed[] = [];
  const warm: Timed[] = [];
  const proc: Timed[] = [];
  const cliOnly: number[] = [];
  for (let i = 0; i < runs; i++) {
    // Each run starts with no agent pod of an earlier one still stopping beside it.
    await removeAgents();
    await noAgentLeft();
    await noHostLeft();
    bare.push(await run(program[0]!, program.slice(1)));
    kube.push(await run(doppel, viaKube, env));
    const hosted = await run(doppel, viaKube, env);
    if (!hosted.stderr.includes('reusing the warm session')) throw new Error(`the second run was not started by the warm session host the first one left: ${hosted.stderr.trim()}`);
    sessionFirst.push(hosted);
    // The host parks its agent and goes, as for a request it does not run: the next CLI takes the warm agent itself.
    await hostGivesBack(fixture.target, ['--target-namespace', namespace, '--agent-ttl', '30'], env);
    const reused = await run(doppel, viaKube, env);
    if (!reused.steps.some((step) => step.key === 'reuseWarmAgent')) throw new Error('the second run did not reuse the warm agent the first one left');
    warm.push(reused);
    // A run's end does not wait for the host it leaves, whose start (for Kubernetes, the client's load) would share the
    // CPU with the next case's.
    await noHostStarting();
    proc.push(await run(doppel, viaProcess, env));
    await noHostStarting();
    cliOnly.push((await run(doppel, ['--version'])).exit);
  }

  // A warm session some time into a developer's work: one fresh run leaves it, two untimed runs go through it first.
  await removeAgents();
  await noAgentLeft();
  await noHostLeft();
  for (let i = 0; i < 3; i++) await run(doppel, viaKube, env);
  for (let i = 0; i < runs; i++) {
    sessionBare.push(await run(program[0]!, program.slice(1)));
    const hosted = await run(doppel, viaKube, env);
    if (!hosted.stderr.includes('reusing the warm session')) throw new Error(`a run within the ttl was not started by the warm session host: ${hosted.stderr.trim()}`);
    session.push(hosted);
  }

  const timelines: StepTimeline[] = [];
  await removeAgents();
  for (let i = 0; i < runs; i++) {
    await noAgentLeft();
    timelines.push(await timePlatformSteps(adminKubeconfig, namespace, fixture.target));
  }

  const direct = fixture.runDirect;
  const through = (target: string, script: string, args: string[], wrap?: string[]) =>
    runJson(['exec', '-q', '--target', target, '--target-namespace', namespace, '--', node, path.join(scripts, script), ...args], env, wrap);
  const loop = async (script: string, args: string[]) => {
    const d = await direct(script, args);
    const p = await through(`process/${fixture.appPid}`, script, args);
    await noAgentLeft();
    const k = await through(fixture.target, script, args);
    await noAgentLeft();
    const o = await through(fixture.target, script, args, otherMachine);
    const kubeVsDirect = compare(d, k);
    const kubeVsProcess = compare(p, k);
    const processVsDirect = compare(d, p);
    const otherVsDirect = compare(d, o);
    return {
      direct: kubeVsDirect.direct,
      processPlatform: processVsDirect.doppel,
      kubernetes: kubeVsDirect.doppel,
      kubernetesOtherMachine: otherVsDirect.doppel,
      ratio: {
        kubernetesToDirect: kubeVsDirect.ratio,
        kubernetesToProcess: kubeVsProcess.ratio,
        processToDirect: processVsDirect.ratio,
        kubernetesOtherMachineToDirect: otherVsDirect.ratio,
      },
      overheadMedianMs: { kubernetesOverDirect: kubeVsDirect.overheadMedianMs, kubernetesOverProcess: kubeVsProcess.overheadMedianMs, kubernetesOtherMachineOverDirect: otherVsDirect.overheadMedianMs },
    };
  };
  const { service } = fixture;
  const perCall = {
    file4KiBOpenReadClose: await loop('file-loop.mjs', [fixture.filePath, String(loops)]),
    dnsLookup: await loop('dns-loop.mjs', [service.name, String(loops)]),
    tcpConnectHttpRoundTrip: await loop('http-loop.mjs', [service.name, String(service.port), '/message.txt', String(loops)]),
    udpRoundTrip: await loop('udp-loop.mjs', [fixture.udpEcho.address, String(fixture.udpEcho.port), String(loops)]),
    dnsResolve4OverUdp: await loop('resolve-loop.mjs', [fixture.serviceFqdn, String(loops)]),
  };

  const results = {
    when: new Date().toISOString(),
    node: process.version,
    runs,
    loops,
    loadAverage: { atStart: loadAtStart.map(round2), atEnd: loadavg().map(round2) },
    target: `${fixture.target} (1 replica, busybox httpd; image present on the node)`,
    bare: 'the same program run on this machine without doppel',
    direct: 'the same workload run with Node in a second container of the target pod (same network namespace, same ConfigMap mount)',
    processPlatform: `doppel exec --target process/PID, the target pod's app container seen as a local process`,
    kubernetes: 'doppel exec --target deployment/... from this machine, the node: the target\'s process is reached directly (its root, its network namespace)',
    kubernetesOtherMachine: `the same from a PID namespace of its own (${otherMachine.join(' ')}), as from a machine that routes to the pod network but is not the node: every call through the agent`,
    startupToFirstLine: {
      goalMs: 3000,
      kubernetes: compare(bare.map((t) => t.firstLine), kube.map((t) => t.firstLine)),
      kubernetesWarmSession: compare(sessionBare.map((t) => t.firstLine), session.map((t) => t.firstLine)),
      kubernetesWarmSessionRightAfterFresh: compare(bare.map((t) => t.firstLine), sessionFirst.map((t) => t.firstLine)),
      kubernetesWarmAgent: compare(bare.map((t) => t.firstLine), warm.map((t) => t.firstLine)),
      processPlatform: compare(bare.map((t) => t.firstLine), proc.map((t) => t.firstLine)),
      kubernetesExitAfterFirstLine: summarize(kube.map((t) => t.exit - t.firstLine)),
      // Medians in ms of where the Kubernetes runs' time goes, from the CLI's progress lines.
      kubernetesSteps: cliBreakdown(kube),
      kubernetesWarmAgentSteps: cliBreakdown(warm),
      cliWithoutWork: { what: 'doppel --version: Node start and the CLI\'s imports', ...summarize(cliOnly) },
    },
    // Medians in ms since the start of the platform's work, every moment on this machine's clock (see bench/kube-steps.ts).
    platformTimeline: Object.fromEntries(Object.keys(timelines[0]!).map((key) => [key, median(timelines.map((t) => t[key as keyof StepTimeline]))])),
    platformStepsMs: platformSteps(timelines),
    perCall,
  };
  writeResults('kube', results);
} finally {
  await fixture.remove();
  rmSync(scripts, { recursive: true, force: true });
}

/** Spawn → first step's start, each step, the gaps between them, and the last step's end → the program's first line. */
function cliBreakdown(timed: Timed[]): Record<string, number> {
  const parts = timed.map((t) => {
    const part: Record<string, number> = {};
    let previousEnd = 0;
    t.steps.forEach((step, index) => {
      const began = step.arrived / ms - step.durationMs;
      part[index === 0 ? 'spawnToFirstStep' : `gapBefore_${step.key}`] = began - previousEnd;
      part[step.key] = step.durationMs;
      previousEnd = step.arrived / ms;
    });
    part.lastStepToFirstLine = t.firstLine / ms - previousEnd;
    return part;
  });
  return Object.fromEntries(Object.keys(parts[0] ?? {}).map((key) => [key, median(parts.map((p) => p[key] ?? NaN))]));
}

/** Durations between the timeline's moments, medians in ms: what each stage of the agent's start costs. */
function platformSteps(timelines: StepTimeline[]): Record<string, number> {
  const spans: [string, (t: StepTimeline) => number][] = [
    ['loadKubeconfig', (t) => t.contextLoaded],
    ['resolveTarget', (t) => t.targetResolved - t.contextLoaded],
    ['createJob', (t) => t.jobCreated - t.targetResolved],
    ['jobControllerMakesPod', (t) => t.podSeen - t.targetResolved],
    ['podToLauncherProcess', (t) => t.launcherStarted - t.podSeen],
    ['launcherNodeStartAndTargetScan', (t) => t.launcherFoundTarget - t.launcherStarted],
    ['launcherToListening', (t) => t.launcherListening - t.launcherFoundTarget],
    ['listeningToPodSeenRunning', (t) => t.podRunningSeen - t.launcherListening],
    ['portForwardAndAdmission', (t) => t.linked - t.podRunningSeen],
    ['secondPortForwardAndAdmission', (t) => t.secondLinkMs],
    ['handshake', (t) => t.handshaken - t.linked],
    ['firstRequest', (t) => t.envRead - t.handshaken],
    ['jobCreateToAgentReady', (t) => t.handshaken - t.targetResolved],
  ];
  return Object.fromEntries(spans.map(([name, span]) => [name, median(timelines.map(span))]));
}

