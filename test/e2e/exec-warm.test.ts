// Warm agents: a session that ends cleanly leaves its agent warm for agent.ttl, the next session on the same target
// reuses it (the same agent process), and a warm agent that must not be reused (its target gone, its ttl passed, its
// CLI killed) is not, and leaves nothing: no agent process, no socket file. A warm session host (warm-launch.test.ts)
// takes a parked agent at once; here it is made to give it back, so that the agent waits parked as it does for a CLI
// that comes before a host is up or with another configuration.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { until } from '../support/until.ts';
import { suiteWorld } from './suite-world.ts';
import { agentProcesses, leftoversAfter } from './leftovers.ts';
import { execIn, ok, runDoppel, startDoppel } from './run-doppel.ts';
import { agentSockets, hostGivesBack, nothingLeft, pidsOf, warmDir } from './warm-host.ts';

const gate = needsRoot('warm agents of process targets');
const agentPids = (pid: number) => pidsOf(agentProcesses(pid));

describe('warm agents', gate, () => {
  const world = suiteWorld((w) => nothingLeft(w.target.pid));
  const pid = () => world().target.pid;
  const secret = () => world().target.env.DOPPEL_TEST_SECRET!;
  const [remotePath, remoteContent] = [() => Object.keys(world().target.files)[0]!, () => Object.values(world().target.files)[0]!];


  test('the next session on the target reuses the warm agent, says so, and serves from it', async () => {
    // The environment and the file the CLI reads itself (process platform); the name only the agent can resolve.
    const { redis } = world().services;
    const program = ['sh', '-c', `printf '%s|' "$DOPPEL_TEST_SECRET"; cat ${remotePath()}; getent hosts ${redis.name}`];
    const expected = () => `${secret()}|${remoteContent()}${redis.address.padEnd(15)} ${redis.name}\n`;
    const first = await execIn(pid(), program, { flags: ['--agent-ttl', '30'] });
    assert.equal(ok(first), expected());
    assert.doesNotMatch(first.stderr, /reusing/);
    await hostGivesBack(pid());
    const [warm] = agentPids(pid());
    assert.ok(warm, 'no agent stayed warm');
    assert.equal(agentSockets(pid()).length, 1);

    // Without -q: the progress line says what happened.
    const second = await runDoppel(['exec', '--target', `process/${pid()}`, '--agent-ttl', '30', '--', ...program]);
    assert.equal(ok(second), expected());
    assert.match(second.stderr, new RegExp(`reusing the warm agent of process ${pid()}`));
    assert.deepEqual(agentPids(pid()), [warm], 'the second session had an agent of its own');

    // And again, with --trace: the reused agent times its answers too.
    const third = await execIn(pid(), ['getent', 'hosts', redis.name], { flags: ['--agent-ttl', '1', '--trace'] });
    assert.equal(ok(third), `${redis.address.padEnd(15)} ${redis.name}\n`);
    assert.match(third.stderr, /call getaddrinfo "[^"]+" -> remote: proxy [\d.]+ \| dns\.lookup link [\d.]+ \+ agent [\d.]+/);
    assert.deepEqual(agentPids(pid()), [warm]);
    // Its ttl is the last session's: 1 s, after which nothing is left (afterEach).
  });

  test('a warm agent whose target exits goes, and leaves nothing', async () => {
    // A target of our own in the world's namespaces, to end it.
    const target: ChildProcess = spawn('nsenter', ['-t', String(pid()), '-n', '-m', 'sleep', '600'], { stdio: 'ignore' });
    const targetPid = target.pid!;
    try {
      await until('the target', () => (existsSync(`/proc/${targetPid}/ns/net`) && agentPids(targetPid).length === 0 ? true : undefined));
      ok(await execIn(targetPid, ['true'], { flags: ['--agent-ttl', '60'] }));
      await hostGivesBack(targetPid);
      assert.equal(agentPids(targetPid).length, 1, 'no agent stayed warm');
      assert.equal(agentSockets(targetPid).length, 1);
      target.kill('SIGKILL');
      await nothingLeft(targetPid);
    } finally {
      target.kill('SIGKILL');
    }
  });

  test('after its ttl a warm agent is gone, and the next session starts a fresh one', async () => {
    ok(await execIn(pid(), ['true'], { flags: ['--agent-ttl', '1'] }));
    const [warm] = agentPids(pid());
    assert.ok(warm, 'no agent stayed warm');
    await nothingLeft(pid());
    const next = await runDoppel(['exec', '--target', `process/${pid()}`, '--agent-ttl', '1', '--', 'sh', '-c', 'printf %s "$DOPPEL_TEST_SECRET"']);
    assert.equal(ok(next), secret());
    assert.doesNotMatch(next.stderr, /reusing/);
  });

  test('the agent of a killed CLI is not kept warm', async () => {
    const { child, finished } = startDoppel(['exec', '--target', `process/${pid()}`, '-q', '--agent-ttl', '60', '--', 'sh', '-c', 'echo $$; exec sleep 30']);
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk));
    const programPid = Number(await until('the program', () => (out.includes('\n') ? out.trim() : undefined)));
    await until('the agent', () => agentPids(pid())[0]);
    child.kill('SIGKILL');
    process.kill(programPid, 'SIGKILL');
    await finished;
    // Its socket directory stays for the next start to sweep (as for any killed CLI); its agent is gone at once.
    assert.deepEqual((await leftoversAfter(pid(), 8000)).agents, []);
    assert.deepEqual(agentSockets(pid()), []);
    const next = await runDoppel(['exec', '--target', `process/${pid()}`, '--agent-ttl', '1', '--', 'true']);
    assert.doesNotMatch(ok(next) + next.stderr, /reusing/);
  });

  test('--agent-ttl 0 keeps no agent warm', async () => {
    ok(await execIn(pid(), ['true'], { flags: ['--agent-ttl', '0'] }));
    assert.deepEqual(agentPids(pid()), []);
    assert.deepEqual(agentSockets(pid()), []);
  });

  /** A session's agent left warm, then killed outright: its pid. */
  const killedWarmAgent = async () => {
    ok(await execIn(pid(), ['true'], { flags: ['--agent-ttl', '60'] }));
    await hostGivesBack(pid());
    const [warm] = agentPids(pid());
    assert.ok(warm, 'no agent stayed warm');
    process.kill(warm, 'SIGKILL');
    await until('the agent to die', () => (agentPids(pid()).length === 0 ? true : undefined));
    return warm;
  };

  test('a warm agent killed outright leaves a socket file that the next start removes', async () => {
    const warm = await killedWarmAgent();
    assert.equal(agentSockets(pid()).length, 1);
    const next = await runDoppel(['exec', '--target', `process/${pid()}`, '--agent-ttl', '1', '--', 'true']);
    assert.doesNotMatch(ok(next) + next.stderr, /reusing/);
    // The killed agent's socket is gone; the new agent's (warm for 1 s) has another name.
    assert.ok(!agentSockets(pid()).some((entry) => entry.endsWith(`-${warm}.sock`)));
  });

  test('an agent killed between binding its socket and renaming it into place leaves a file that the next start removes (fault injection: the file renamed back)', async () => {
    const warm = await killedWarmAgent();
    const socket = agentSockets(pid()).find((entry) => entry.endsWith(`-${warm}.sock`));
    assert.ok(socket, `no socket of the killed agent among ${agentSockets(pid()).join(', ')}`);
    renameSync(join(warmDir, socket), join(warmDir, `${socket}.new`));
    ok(await runDoppel(['exec', '--target', `process/${pid()}`, '--agent-ttl', '1', '--', 'true']));
    assert.deepEqual(agentSockets(pid()).filter((entry) => entry.includes(`-${warm}.`)), []);
  });
});
