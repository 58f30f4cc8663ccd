// doppel exec --trace: the start-up's steps in order, the agent's own marks among them, and each remote call hop by hop.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { leftoversAfter } from './leftovers.ts';
import { execIn, type Finished } from './run-doppel.ts';

const gate = needsRoot('doppel exec --trace against a process target');

/** The trace lines a run printed: milliseconds since the CLI started, and what happened then. */
function traceLines(result: Finished): { at: number; what: string }[] {
  return result.stderr
    .split('\n')
    .map((line) => /^doppel: trace +(\d+\.\d+) ms {2}(.*)$/.exec(line))
    .filter((match) => match !== null)
    .map((match) => ({ at: Number(match[1]), what: match[2]! }));
}

/** In order; the steps of one inner list run concurrently, so each is only after the step before and before the next. */
const startup = [
  'cli: started',
  'cli: modules loaded',
  'cli: configuration read',
  'spawning the agent',
  'agent: process started',
  'agent: modules loaded',
  'agent: sending hello',
  'handshake done',
  ['environment fetched', 'proxy listening'],
  'program spawned',
  'program: first byte of output',
  'program exited',
  'session closed',
];

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
    const result = await execIn(world.target.pid, ['sh', '-c', `cat ${path}; echo done`], { flags: ['--trace'] });
    assert.equal(result.status, 0, result.stderr);
    // The program's output still reaches doppel's stdout whole, through the pipe that sees its first byte.
    assert.equal(result.stdout, `${content}done\n`);
    const lines = traceLines(result);
    const find = (step: string) => {
      const found = lines.find(({ what }) => what.startsWith(step));
      assert.ok(found, `no trace line for "${step}" in:\n${result.stderr}`);
      return found;
    };
    const stages = startup.map((stage) => (typeof stage === 'string' ? [stage] : stage).map(find));
    for (let i = 1; i < stages.length; i++) {
      for (const before of stages[i - 1]!) {
        for (const step of stages[i]!) assert.ok(step.at >= before.at, `"${step.what}" (${step.at} ms) came before "${before.what}" (${before.at} ms)`);
      }
    }
    // The remote open: its time in the proxy, the agent round trip split into the link and the agent's own time.
    const open = lines.find(({ what }) => what.startsWith(`call open ${JSON.stringify(path)} -> remote:`));
    assert.ok(open, `no trace of the remote open of ${path} in:\n${result.stderr}`);
    assert.match(open.what, /: proxy \d+\.\d{3} \| fs\.fetch link \d+\.\d{3} \+ agent \d+\.\d{3} \| proxy \d+\.\d{3} = \d+\.\d{3} ms$/);
    assert.ok(lines.some(({ what }) => /^calls open remote x\d+: proxy [\d.]+ \/ [\d.]+, link [\d.]+ \/ [\d.]+, agent [\d.]+ \/ [\d.]+ \(median \/ p99 ms\)$/.test(what)), result.stderr);
    // The agent's marks are the CLI's trace lines, not lines of its log.
    assert.doesNotMatch(result.stderr, /agent: trace @/);
    assert.deepEqual(await leftoversAfter(world.target.pid), { agents: [], dirs: [] });
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
