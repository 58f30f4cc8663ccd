// Benchmarks the layer's cost per call, with and without it in the same run: local stat, read and loopback connect
// (direct = the same program on the host without doppel), next to remote stat and reads through a real agent in a
// test world (direct = the program inside the target with nsenter), in alternating rounds. Writes bench/results/layer.json.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createWorld } from '../test/world/world.ts';
import { writeResults } from './results-file.ts';
import { compare } from './stats.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const repo = fileURLToPath(new URL('..', import.meta.url));
const doppel = fileURLToPath(new URL('../bin/doppel', import.meta.url));
const node = process.execPath;
const localLoops = Number(process.env.BENCH_LOCAL_LOOPS ?? 20000);
const remoteLoops = Number(process.env.BENCH_REMOTE_LOOPS ?? 1000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);

const scratch = mkdtempSync(join(tmpdir(), 'doppel-layer-bench-'));
const world = await createWorld();
try {
  const loopBin = join(scratch, 'layer-loop');
  execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', loopBin, `${here}workloads/layer-loop.c`]);
  const localFile = join(scratch, 'local-4k.bin');
  writeFileSync(localFile, Buffer.alloc(4096, 7));
  const pid = String(world.target.pid);
  const remoteFile = world.target.benchFile;

  const times = (command: string, args: string[]) => JSON.parse(execFileSync(command, args, { cwd: repo, encoding: 'utf8', maxBuffer: 64 << 20 })) as number[];
  const underDoppel = (program: string[]) => times(doppel, ['exec', '-q', '--target', `process/${pid}`, '--', ...program]);
  /** Direct and doppel runs taken in turns, so that a change in the machine's load falls on both. */
  const alternate = (direct: () => number[], viaDoppel: () => number[]) => {
    const samples: [number[], number[]] = [[], []];
    for (let round = 0; round < rounds; round++) {
      samples[0].push(...direct());
      samples[1].push(...viaDoppel());
    }
    return compare(...samples);
  };
  /** A local call: the program alone on the host against the same program under doppel. */
  const local = (program: string[]) => alternate(() => times(program[0]!, program.slice(1)), () => underDoppel(program));
  /** A remote call: the program inside the target (nsenter) against the same program under doppel. */
  const remote = (program: string[]) => alternate(() => times('nsenter', ['-t', pid, '-n', '-m', ...program]), () => underDoppel(program));
  const perRound = (loops: number) => String(Math.ceil(loops / rounds));
  const c = (mode: string, path: string, loops: number) => [loopBin, mode, path, perRound(loops)];

  const results = {
    when: new Date().toISOString(),
    machine: { cpu: cpus()[0]?.model, cores: cpus().length, kernel: release(), node: process.version },
    localLoops,
    remoteLoops,
    rounds,
    direct: 'local cases: the same program on the host without doppel; remote cases: inside the target with nsenter -n -m',
    local: {
      statC: local(c('stat', '/usr/bin/env', localLoops)),
      statRelativeC: local(c('stat', 'package.json', localLoops)),
      statNode: local([node, `${here}workloads/stat-loop.mjs`, '/usr/bin/env', perRound(localLoops)]),
      openReadClose4KiBC: local(c('read', localFile, localLoops)),
      openReadClose4KiBNode: local([node, `${here}workloads/file-loop.mjs`, localFile, perRound(localLoops)]),
      loopbackConnectC: local(c('connect', '-', localLoops)),
    },
    remote: {
      // A different path each time: every stat is a round trip.
      statMissingC: remote(c('missing', '/srv/no-such-file', remoteLoops)),
      // The same path over and over: after the first, answered from the layer's 100 ms stat memory.
      statRepeatedC: remote(c('stat', remoteFile, remoteLoops)),
      openReadClose4KiBC: remote(c('read', remoteFile, remoteLoops)),
      // stat, open + read + close, stat: the open's answer brings the stat for the second one.
      statOpenReadStatC: remote(c('stat-open', remoteFile, remoteLoops)),
      // A TCP socket made in the target's network by the layer; the server's accept is the kernel's.
      connectCloseC: remote(c('connect-to', `${world.services.redis.address}:${world.services.redis.port}`, remoteLoops)),
      // A UDP socket connected to an echo (as c-ares connects one per query): made there too, no relay.
      udpConnectedEchoC: remote(c('udp-echo', `${world.services.udpEcho.address}:${world.services.udpEcho.port}`, remoteLoops)),
      udpBoundEpollEchoC: remote(c('udp-bound', `${world.services.udpEcho.address}:${world.services.udpEcho.port}`, remoteLoops)),
    },
  };
  writeResults('layer', results);
} finally {
  await world.destroy();
  rmSync(scratch, { recursive: true, force: true });
}
