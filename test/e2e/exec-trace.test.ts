// doppel exec --trace: the start-up's steps in order, the agent's own marks among them, and each remote call hop by hop.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { leftoversAfter } from './leftovers.ts';
import { execIn, type Finished } from './run-doppel.ts';

const gate = needsRoot('doppel exec --trace against a process target');
const fixtures = fileURLToPath(new URL('./fixtures', import.meta.url));

/** The trace lines a run printed: milliseconds since the CLI started, and what happened then. */
function traceLines(result: Finished): { at: number; what: string }[] {
  return result.stderr
    .split('\n')
    .map((line) => /^doppel: trace +(\d+\.\d+) ms {2}(.*)$/.exec(line))
    .filter((match) => match !== null)
    .map((match) => ({ at: Number(match[1]), what: match[2]! }));
}

/**
 * Each chain in order. The agent named on the command line starts while the CLI loads and reads its configuration,
 * so the two meet only at the handshake; the steps of an inner list run concurrently.
 */
// The program's start does not wait for the agent's handshake on a process target (its environment is read from /proc),
// so the two chains meet only at the session's end.
const startup: (string | string[])[][] = [
  [
    'cli: started',
    'cli: modules loaded',
    'cli: configuration read',
    ['environment fetched', 'proxy listening'],
    'program spawned',
    'program: first byte of output',
    'program exited',
    'session closed',
  ],
  ['cli: started', 'spawning the agent', 'agent: process started', 'agent: modules loaded', 'agent: sending hello', 'handshake done', 'session closed'],
];

/** Asserts each chain's order; every step must be there. */
function assertOrder(lines: { at: number; what: string }[], chains: (string | string[])[][], stderr: string): void {
  const find = (step: string) => {
    const found = lines.find(({ what }) => what.startsWith(step));
    assert.ok(found, `no trace line for "${step}" in:\n${stderr}`);
    return found;
  };
  for (const chain of chains) {
    const stages = chain.map((stage) => (typeof stage === 'string' ? [stage] : stage).map(find));
    for (let i = 1; i < stages.length; i++) {
      for (const before of stages[i - 1]!) {
        for (const step of stages[i]!) assert.ok(step.at >= before.at, `"${step.what}" (${step.at} ms) came before "${before.what}" (${before.at} ms)`);
      }
    }
  }
}

/** `text` matched as it is in a regular expression. */
const literal = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('doppel exec --trace', gate, () => {
  let world: World;
  before(async () => {
    world = await createWorld();
  });
  after(async () => {
    await world?.destroy();
  });

  test('prints every step of the start-up in order, and each remote call with its hops', async () => {
    const [path, content] = Object.entries(world.target.files)[0]!;
    const { redis, udpEcho } = world.services;
    const connect = `python3 -c "import socket; socket.create_connection(('${redis.address}', ${redis.port})).close(); socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('${udpEcho.address}', ${udpEcho.port}))"`;
    const result = await execIn(world.target.pid, ['sh', '-c', `ls /srv/app/config > /dev/null && cat ${path}; getent hosts ${redis.name}; ${connect}; echo done`], { flags: ['--trace'] });
    assert.equal(result.status, 0, result.stderr);
    // The program's output still reaches doppel's stdout whole, through the pipe that sees its first byte.
    assert.equal(result.stdout, `${content}${redis.address.padEnd(15)} ${redis.name}\ndone\n`);
    const lines = traceLines(result);
    assertOrder(lines, startup, result.stderr);
    // Started from the command line: before the CLI's modules, not after its configuration.
    assertOrder(lines, [['spawning the agent', 'cli: modules loaded']], result.stderr);
    // The remote directory: its time in the proxy, and the CLI's own looks at the target's directory (process
    // platform), one hop each. cat opens the file itself, in the target's root, without asking.
    const directory = lines.find(({ what }) => what.startsWith('call open "/srv/app/config" -> remote:'));
    assert.ok(directory, `no trace of the remote directory in:\n${result.stderr}`);
    assert.match(directory.what, /: proxy \d+\.\d{3} \| fs\.stat \(local\) link \d+\.\d{3} \+ agent \d+\.\d{3} \| proxy \d+\.\d{3} \| fs\.readdir \(local\) link \d+\.\d{3} \+ agent \d+\.\d{3} \| proxy \d+\.\d{3} = \d+\.\d{3} ms$/);
    assert.ok(lines.some(({ what }) => /^calls open remote via fs\.stat \(local\)\+fs\.readdir \(local\) x\d+: proxy [\d.]+ \/ [\d.]+, link [\d.]+ \/ [\d.]+, agent [\d.]+ \/ [\d.]+ \(median \/ p99 ms\)$/.test(what)), result.stderr);
    // cat's open of the file, settled by the layer itself, timed by it and told to the proxy.
    const layerCall = (call: string, subject: string) => new RegExp(`^call ${call} ${literal(JSON.stringify(subject))} -> remote: layer \\d+\\.\\d{3} ms$`);
    assert.ok(lines.some(({ what }) => layerCall('open', path).test(what)), result.stderr);
    assert.ok(lines.some(({ what }) => /^calls open remote in the layer x\d+: layer [\d.]+ \/ [\d.]+ \(median \/ p99 ms\)$/.test(what)), result.stderr);
    // And python's connection and datagram socket, made in the target's network by the layer, unasked.
    assert.ok(lines.some(({ what }) => layerCall('connect', `${redis.address}:${redis.port}`).test(what)), result.stderr);
    assert.ok(lines.some(({ what }) => layerCall('udpSend', `${udpEcho.address}:${udpEcho.port}`).test(what)), result.stderr);
    // A name only the agent resolves: its round trip split into the link and the agent's own time.
    const lookup = lines.find(({ what }) => what.startsWith(`call getaddrinfo ${JSON.stringify(world.services.redis.name)} -> remote:`));
    assert.ok(lookup, `no trace of the lookup in:\n${result.stderr}`);
    assert.match(lookup.what, /: proxy \d+\.\d{3} \| dns\.lookup link \d+\.\d{3} \+ agent \d+\.\d{3} \| proxy \d+\.\d{3} = \d+\.\d{3} ms$/);
    // The agent's marks are the CLI's trace lines, not lines of its log.
    assert.doesNotMatch(result.stderr, /agent: trace @/);
    assert.deepEqual(await leftoversAfter(world.target.pid), { agents: [], dirs: [] });
  });

  test('the program starts before its agent answers, reads the target\'s files at once, and its lookups wait for the agent (fault injection: an nsenter slow by 1.5 s)', async () => {
    const [path, content] = Object.entries(world.target.files)[0]!;
    const env = { ...process.env, PATH: `${fixtures}/slow-nsenter:${process.env.PATH}`, DOPPEL_TEST_NSENTER_DELAY: '1.5' };
    const { redis } = world.services;
    const result = await execIn(world.target.pid, ['sh', '-c', `ls /srv/app/config > /dev/null && cat ${path}; echo "$DOPPEL_TEST_SECRET"; getent hosts ${redis.name}`], { env, flags: ['--trace'] });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, `${content}${world.target.env.DOPPEL_TEST_SECRET}\n${redis.address.padEnd(15)} ${redis.name}\n`);
    // A call's line carries the time it was asked. A directory (read by the proxy) and the file's content (the
    // program's first output, opened by the layer) came before the agent answered; the first lookup (IPv6, which the
    // name has none of) was asked before too, and waited for it.
    const lookup = `call getaddrinfo ${JSON.stringify(redis.name)} ->`;
    assertOrder(traceLines(result), [['program spawned', 'call open "/srv/app/config" -> remote', 'program: first byte of output', 'handshake done']], result.stderr);
    assertOrder(traceLines(result), [['program spawned', lookup, 'handshake done']], result.stderr);
    assert.deepEqual(await leftoversAfter(world.target.pid), { agents: [], dirs: [] });
  });

  test('a configuration that asks for another agent than the command line\'s ends the early one and starts its own', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'doppel-trace-test-'));
    try {
      const file = join(dir, 'config.json');
      writeFileSync(file, JSON.stringify({ agent: { log_level: 'debug', ttl: 0 } }));
      const result = await execIn(world.target.pid, ['sh', '-c', 'echo "$DOPPEL_TEST_SECRET"'], { flags: ['--trace', '-f', file] });
      assert.equal(result.status, 0, result.stderr);
      assert.equal(result.stdout, `${world.target.env.DOPPEL_TEST_SECRET}\n`);
      const spawns = traceLines(result).filter(({ what }) => what === 'spawning the agent');
      assert.equal(spawns.length, 2, result.stderr);
      // The second is the configuration's: after it was read.
      assert.ok(spawns[1]!.at >= traceLines(result).find(({ what }) => what.startsWith('cli: configuration read'))!.at, result.stderr);
      assert.deepEqual(await leftoversAfter(world.target.pid), { agents: [], dirs: [] });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('an untraced start loads none of the built-in modules only later steps use before it spawns the program, nor its agent before its hello', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'doppel-trace-test-'));
    try {
      const file = join(dir, 'builtins.txt');
      const env = { ...process.env, NODE_OPTIONS: `--require ${join(fixtures, 'builtins-at-spawn.cjs')}`, DOPPEL_TEST_BUILTINS_FILE: file };
      const result = await execIn(world.target.pid, ['true'], { env });
      assert.equal(result.status, 0, result.stderr);
      const loaded = readFileSync(file, 'utf8').split('\n');
      assert.ok(loaded.includes('child_process') && loaded.includes('net'), loaded.join(' '));
      // The perf_hooks behind the `performance` global (a trace's clock), the promise APIs of fs, dns and timers (a
      // proxy's file, name and listener work), fs/promises' readline, and the call tracer's AsyncLocalStorage: each loads
      // at its first use.
      for (const later of ['perf_hooks', 'fs/promises', 'internal/readline/interface', 'dns/promises', 'timers/promises', 'internal/async_local_storage/async_context_frame']) {
        assert.ok(!loaded.includes(later), `${later} was loaded before the program was spawned`);
      }
      // The agent's hello waits for no clock either.
      const agent = readFileSync(`${file}.agent`, 'utf8').split('\n');
      assert.ok(agent.includes('net'), agent.join(' '));
      assert.ok(!agent.includes('perf_hooks'), 'the agent loaded perf_hooks before its hello');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('DOPPEL_TRACE=1 does the same; without either there is no trace line', async () => {
    const traced = await execIn(world.target.pid, ['sh', '-c', 'echo hi'], { env: { ...process.env, DOPPEL_TRACE: '1' } });
    assert.equal(traced.status, 0, traced.stderr);
    assert.ok(traceLines(traced).some(({ what }) => what.startsWith('program: first byte of output')), traced.stderr);
    const plain = await execIn(world.target.pid, ['sh', '-c', 'echo hi'], { env: { ...process.env, DOPPEL_TRACE: '' } });
    assert.equal(plain.status, 0, plain.stderr);
    assert.equal(plain.stdout, 'hi\n');
    assert.deepEqual(traceLines(plain), []);
  });

  test('a --trace after -- belongs to the program', async () => {
    const result = await execIn(world.target.pid, ['sh', '-c', 'echo "$1"', 'sh', '--trace'], { env: { ...process.env, DOPPEL_TRACE: '' } });
    assert.equal(result.stdout, '--trace\n');
    assert.deepEqual(traceLines(result), []);
  });
});
