// Write mode against the direct case in the same run (the program inside the target's namespaces with nsenter):
// a written file is a memfd sent back on close, so writes cost nothing each and close pays the round trip.
// Writes medians, p90/p99 and ratios to bench/results/write.json.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createWorld } from '../test/world/world.ts';
import { writeResults } from './results-file.ts';
import { compare } from './stats.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const doppel = fileURLToPath(new URL('../bin/doppel', import.meta.url));
const node = process.execPath;
const loops = Number(process.env.BENCH_LOOPS ?? 500);

const world = await createWorld();
try {
  const pid = String(world.target.pid);
  const dir = '/srv/app/bench-writes';
  execFileSync('nsenter', ['-t', pid, '-m', 'mkdir', '-p', dir]);
  const run = (args: string[], viaDoppel: boolean) => {
    const [command, argv] = viaDoppel
      ? [doppel, ['exec', '-q', '--fs-mode', 'write', '--target', `process/${pid}`, '--', node, ...args]]
      : ['nsenter', ['-t', pid, '-n', '-m', node, ...args]];
    return JSON.parse(execFileSync(command, argv, { encoding: 'utf8' })) as number[];
  };
  const loop = (script: string, args: string[]) => compare(run([`${here}workloads/${script}`, ...args], false), run([`${here}workloads/${script}`, ...args], true));
  const results = {
    when: new Date().toISOString(),
    node: process.version,
    loops,
    direct: 'the same program run inside the target with nsenter -n -m',
    create4KiBWriteClose: loop('write-loop.mjs', [dir, String(loops), 'w', '1', '4096']),
    rewrite4KiBInPlaceClose: loop('write-loop.mjs', [dir, String(loops), 'r+', '1', '4096']),
    create100SmallWritesClose: loop('write-loop.mjs', [dir, String(loops), 'w', '100', '64']),
    // One remote round trip: what each write would cost if writes were sent one by one.
    remoteRoundTrip: loop('file-loop.mjs', [world.target.benchFile, String(loops)]),
  };
  writeResults('write', results);
} finally {
  await world.destroy();
}
