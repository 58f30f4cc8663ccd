// Benchmarks doppel against the direct case in the same run (the program run inside the target's namespaces with nsenter),
// and writes medians, p99s and ratios to bench/results/exec.json.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createWorld } from '../test/world/world.ts';
import { compare } from './stats.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const doppel = fileURLToPath(new URL('../bin/doppel', import.meta.url));
const node = process.execPath;
const runs = Number(process.env.BENCH_RUNS ?? 20);
const loops = Number(process.env.BENCH_LOOPS ?? 500);

/** Nanoseconds from spawn to the program's first line of output. */
function firstLine(command: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    child.stdout.once('data', () => resolve(Number(process.hrtime.bigint() - start)));
    child.once('error', reject);
  });
}

const world = await createWorld();
try {
  const pid = String(world.target.pid);
  const direct = (args: string[]): [string, string[]] => ['nsenter', ['-t', pid, '-n', '-m', node, ...args]];
  const viaDoppel = (args: string[]): [string, string[]] => [doppel, ['exec', '-q', '--target', `process/${pid}`, '--', node, ...args]];
  const startup: [number[], number[]] = [[], []];
  for (let i = 0; i < runs; i++) {
    startup[0].push(await firstLine(...direct(['-e', 'console.log("ready")'])));
    startup[1].push(await firstLine(...viaDoppel(['-e', 'console.log("ready")'])));
  }
  const loop = (script: string, args: string[]) => {
    const d = JSON.parse(execFileSync(...direct([`${here}workloads/${script}`, ...args]), { encoding: 'utf8' })) as number[];
    const v = JSON.parse(execFileSync(...viaDoppel([`${here}workloads/${script}`, ...args]), { encoding: 'utf8' })) as number[];
    return compare(d, v);
  };
  const { redis, udpEcho } = world.services;
  const results = {
    when: new Date().toISOString(),
    node: process.version,
    runs,
    loops,
    direct: 'the same program run inside the target with nsenter -n -m',
    startupToFirstLine: compare(...startup),
    file4KiBOpenReadClose: loop('file-loop.mjs', [world.target.benchFile, String(loops)]),
    dnsLookup: loop('dns-loop.mjs', [redis.name, String(loops)]),
    tcpConnectRoundTrip: loop('tcp-loop.mjs', [redis.address, String(redis.port), String(loops)]),
    udpRoundTrip: loop('udp-loop.mjs', [udpEcho.address, String(udpEcho.port), String(loops)]),
    dnsResolve4OverUdp: loop('resolve-loop.mjs', [redis.name, String(loops)]),
  };
  mkdirSync(`${here}results`, { recursive: true });
  writeFileSync(`${here}results/exec.json`, `${JSON.stringify(results, null, 2)}\n`);
  console.log(JSON.stringify(results, null, 2));
} finally {
  await world.destroy();
}
