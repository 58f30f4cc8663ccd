// Benchmarks doppel against the direct case in the same run (the program run inside the target's namespaces with
// nsenter), and writes medians, p90s, p99s and ratios to bench/results/exec.json: start-up to the program's first
// line (and to the command's end) with a fresh agent (for sh, node and a lookup) and in a warm session, remote calls (4 KiB file, DNS, TCP round trip), and the restart loop
// (a program started again and again inside one session, as a file watcher does).
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { whichSync } from '../src/cli/exec/static-binary.ts';
import { agentSockets, hostFiles, launchSockets, startingMarkers } from '../test/e2e/warm-host.ts';
import { until } from '../test/support/until.ts';
import { createWorld } from '../test/world/world.ts';
import { writeResults } from './results-file.ts';
import { compare } from './stats.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const doppel = fileURLToPath(new URL('../bin/doppel', import.meta.url));
const node = process.execPath;
const runs = Number(process.env.BENCH_RUNS ?? 20);
const loops = Number(process.env.BENCH_LOOPS ?? 500);
const restarts = Number(process.env.BENCH_RESTARTS ?? 20);
// The restart loop runs in this many alternating rounds of `restarts` starts each: one round each way moved its
// ratio by 15% between runs of one build on this shared machine, and one round's ratio for sh ranged 0.88-1.41.
const restartRounds = Number(process.env.BENCH_RESTART_ROUNDS ?? 10);
// The remote calls' loops run in this many alternating rounds (direct, doppel, direct, ...).
const rounds = Number(process.env.BENCH_ROUNDS ?? 4);
// BENCH_ONLY=calls measures the remote calls alone (BENCH_ONLY=startup the start-ups and the restart loop).
const only = process.env.BENCH_ONLY;
const wanted = (part: 'calls' | 'startup') => only === undefined || only === part;

/** Nanoseconds from spawn to the program's first line of output, and to the end of the command (the prompt back). */
function timedRun(command: string, args: string[], env = process.env): Promise<{ first: number; end: number }> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'ignore'], env });
    let time: number | undefined;
    child.stdout.once('data', () => (time = Number(process.hrtime.bigint() - start)));
    child.once('error', reject);
    // The next run starts after this one has ended (and parked its agent), as a developer's next run would.
    child.once('close', () => (time === undefined ? reject(new Error(`${command} ${args.join(' ')} printed nothing`)) : resolve({ first: time, end: Number(process.hrtime.bigint() - start) })));
  });
}

const programs: Record<string, string[]> = {
  sh: ['sh', '-c', 'echo ready'],
  node: [node, '-e', 'console.log("ready")'],
  python3: ['python3', '-c', 'print("ready")'],
};
// The PATH's python3 may be a version manager's shim (pyenv: a bash script and some 30 processes per start); the
// system's is timed too when it is another file.
const systemPython = '/usr/bin/python3';
const restartPrograms: Record<string, string[]> = {
  ...programs,
  ...(existsSync(systemPython) && whichSync('python3', process.env.PATH, existsSync) !== systemPython && { 'python3 (/usr/bin)': [systemPython, '-c', 'print("ready")'] }),
};

const world = await createWorld();
const load = [loadavg()[0]!];
try {
  const pid = String(world.target.pid);
  const direct = (command: string[]): [string, string[]] => ['nsenter', ['-t', pid, '-n', '-m', ...command]];
  const viaDoppel = (command: string[], ttl: number): [string, string[]] => [doppel, ['exec', '-q', '--agent-ttl', String(ttl), '--target', `process/${pid}`, '--', ...command]];

  const { redis, udpEcho } = world.services;
  /** Until no session of the target is left warm: no host (nor its marker) and no parked agent. */
  const sessionGone = () => until('the last session to go', () => (hostFiles(world.target.pid).length + agentSockets(world.target.pid).length === 0 ? true : undefined), 10_000);
  /**
   * Start to first line and to the command's end, bare and under doppel, alternating; `ttl` 0 starts a fresh agent each
   * time, more reuses one, unless `afresh`: then each run waits for the host and agent the one before left to go.
   * Each way's first run is not counted: a command's first start under doppel makes its launch plan, which every later
   * start of it uses (a first start is the `planless` case: each run's environment has another value, so that no
   * plan is found).
   */
  const startup = async (command: string[], { ttl, afresh = false, planless = false }: { ttl: number; afresh?: boolean; planless?: boolean }) => {
    const first: [number[], number[]] = [[], []];
    const end: [number[], number[]] = [[], []];
    const env = (run: number) => (planless ? { ...process.env, DOPPEL_BENCH_RUN: String(run) } : process.env);
    await timedRun(...direct(command));
    await timedRun(...viaDoppel(command, ttl), env(-1));
    if (ttl > 0 && !afresh) {
      // As a developer's next run, a moment later: the host that run left listens (the very next run would wait for it).
      await until('the host to listen', () => (launchSockets(world.target.pid).length > 0 && startingMarkers(world.target.pid).length === 0 ? true : undefined), 10_000);
    }
    for (let i = 0; i < runs; i++) {
      for (const [side, how] of [direct(command), viaDoppel(command, ttl)].entries()) {
        if (afresh && side === 1) await sessionGone();
        const run = await timedRun(...how, env(i));
        first[side]!.push(run.first);
        end[side]!.push(run.end);
      }
    }
    return { first: compare(...first), end: compare(...end) };
  };
  /** One of the two timings of each start-up case. */
  const pick = (cases: Record<string, Awaited<ReturnType<typeof startup>>>, which: 'first' | 'end') => Object.fromEntries(Object.entries(cases).map(([name, timed]) => [name, timed[which]]));
  /**
   * A workload's per-iteration times, direct and under doppel, in `times` alternating runs of `count / times`
   * iterations each, so that a change in the machine's load during the bench falls on both sides alike.
   */
  const loop = (script: string, args: (count: number) => string[], count: number, times = rounds, ttl = 0) => {
    const samples: [number[], number[]] = [[], []];
    const run = (how: [string, string[]]) => JSON.parse(execFileSync(...how, { encoding: 'utf8' })) as number[];
    const command = (n: number) => [node, `${here}workloads/${script}`, ...args(n)];
    // With a ttl, a first run of the same calls, not counted, leaves the warm session whose host then serves every
    // round (src/warm/): a session some time into a developer's work, its code past V8's interpreter at both ends.
    if (ttl > 0) for (let warmUp = 0; warmUp < 2; warmUp++) run(viaDoppel(command(count), ttl));
    for (let round = 0; round < times; round++) {
      samples[0].push(...run(direct(command(Math.ceil(count / times)))));
      samples[1].push(...run(viaDoppel(command(Math.ceil(count / times)), ttl)));
    }
    return compare(...samples);
  };
  const when = new Date().toISOString();
  const starts = wanted('startup') && {
    freshAgent: {
      sh: await startup(programs.sh!, { ttl: 0 }),
      node: await startup(programs.node!, { ttl: 0 }),
      // A program whose first call needs the agent: a C lookup of a cluster name.
      getentHosts: await startup(['getent', 'hosts', redis.name], { ttl: 0 }),
      // A command's first start: no launch plan yet.
      shPlanless: await startup(programs.sh!, { ttl: 0, planless: true }),
      // As a developer's runs a while apart: a fresh session with the default agent.ttl (1 s), which leaves a host.
      shDefaultTtl: await startup(programs.sh!, { ttl: 1, afresh: true }),
    },
    // The first run leaves a warm session host; every later one starts its program through it (src/warm/).
    warmSession: { sh: await startup(programs.sh!, { ttl: 10 }), node: await startup(programs.node!, { ttl: 10 }) },
  };
  const results = {
    when,
    machine: `${cpus().length} x ${cpus()[0]?.model ?? 'unknown CPU'}`,
    node: process.version,
    runs,
    loops,
    restarts,
    restartRounds,
    rounds,
    direct: 'the same program run inside the target with nsenter -n -m',
    ...(starts && {
      startupToFirstLine: { freshAgent: pick(starts.freshAgent, 'first'), warmSession: pick(starts.warmSession, 'first') },
      // The same runs to the command's end: a fresh doppel exec returns once its CLI has started, confirmed the
      // session and ended it (its agent gone), however soon the program ended.
      startupToExit: { freshAgent: pick(starts.freshAgent, 'end'), warmSession: pick(starts.warmSession, 'end') },
      // What each name runs, both ways (the direct case keeps this PATH, and the target's mount namespace sees the same
      // files): a pyenv shim, say, is a bash script starting several programs on every start.
      restartPrograms: Object.fromEntries(Object.entries(restartPrograms).map(([name, [command]]) => [name, whichSync(command!, process.env.PATH, existsSync) ?? command])),
      restartLoop: Object.fromEntries(Object.entries(restartPrograms).map(([name, command]) => [name, loop('restart-loop.mjs', (n) => [String(n), ...command], restarts * restartRounds, restartRounds)])),
    }),
    ...(wanted('calls') && {
      file4KiBOpenReadClose: loop('file-loop.mjs', (n) => [world.target.benchFile, String(n)], loops),
      dnsLookup: loop('dns-loop.mjs', (n) => [redis.name, String(n)], loops),
      tcpConnectRoundTrip: loop('tcp-loop.mjs', (n) => [redis.address, String(redis.port), String(n)], loops),
      udpRoundTrip: loop('udp-loop.mjs', (n) => [udpEcho.address, String(udpEcho.port), String(n)], loops),
      dnsResolve4OverUdp: loop('resolve-loop.mjs', (n) => [redis.name, String(n)], loops),
      // The same calls from programs started in a warm session that has served 2 x `loops` of them before.
      warmSession: {
        file4KiBOpenReadClose: loop('file-loop.mjs', (n) => [world.target.benchFile, String(n)], loops, rounds, 30),
        dnsLookup: loop('dns-loop.mjs', (n) => [redis.name, String(n)], loops, rounds, 30),
        tcpConnectRoundTrip: loop('tcp-loop.mjs', (n) => [redis.address, String(redis.port), String(n)], loops, rounds, 30),
      },
    }),
    loadAverage: [...load, loadavg()[0]!],
  };
  writeResults(only === undefined ? 'exec' : `exec-${only}`, results);
} finally {
  await world.destroy();
}
