// A session of several agents, as a workload's replicas give it: which line a replica's end is told with. The agents
// are real (the process platform's, in the test world); the replica events are played by the test: fault injection
// of a watch that reports a pod's going a moment after its agent ended, which a cluster does only now and then.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startSession, type Session } from '../../src/cli/exec/session.ts';
import type { AgentTransport } from '../../src/platform/agent-transport.ts';
import type { Platform, ReplicaEvents } from '../../src/platform/platform.ts';
import { createProcessPlatform } from '../../src/platform/process/process-platform.ts';
import { agentProcesses } from '../e2e/leftovers.ts';
import { needsRoot } from '../support/root.ts';
import { until } from '../support/until.ts';
import { createWorld, type World } from '../world/world.ts';

const gate = needsRoot('a session of several real agents');
let world: World;
before(async () => {
  if (!gate.skip) world = await createWorld();
});
after(async () => {
  await world?.destroy();
});

/** Three agents on the test world's target, as three replicas' agents; `events` are the test's to send. */
function replicas(): { platform: Platform; transports: () => AgentTransport[]; events: () => ReplicaEvents } {
  const platforms = [0, 1, 2].map(() => createProcessPlatform({ pid: world.target.pid, logLevel: 'info' }));
  let started: AgentTransport[] = [];
  let events: ReplicaEvents | undefined;
  return {
    platform: {
      description: 'three replicas',
      hasTargetProcess: true,
      async start(progress) {
        // Named apart, as replicas are (the three agents share one target here).
        started = (await Promise.all(platforms.map((platform) => platform.start(progress)))).flat().map((transport, i) => ({ ...transport, description: `replica ${i}` }));
        return started;
      },
      follow(handlers) {
        events = handlers;
        return { stop: () => (events = undefined) };
      },
      remoteMounts: async () => [],
      stop: async () => void (await Promise.all(platforms.map((platform) => platform.stop()))),
      killNow: () => platforms.forEach((platform) => platform.killNow()),
    },
    transports: () => started,
    events: () => events!,
  };
}

test('an agent that ends just before its replica leaves is told in one line; one that ends alone, in its own', gate, async () => {
  const lines: string[] = [];
  const progress = { step: <T>(_: string, work: (status: (text: string) => void) => Promise<T>) => work(() => {}), warn: (text: string) => void lines.push(text) };
  const { platform, transports, events } = replicas();
  const { session } = await startSession(platform, { handshakeTimeoutMs: 20_000, communicationTimeoutMs: 20_000 }, progress);
  let closed: Session | undefined = session;
  try {
    await session.ready;
    const [first, second, third] = transports() as [AgentTransport, AgentTransport, AgentTransport];
    assert.equal(session.size(), 3);

    // The second replica's agent ends; its pod's going is reported a second later.
    process.kill(second.handoverPid!, 'SIGKILL');
    await until('the session to drop the second agent', () => (session.size() === 2 ? true : undefined));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    events().left(second, 'was deleted');
    assert.deepEqual(lines, [`${second.description} left the session: was deleted`]);

    // The primary's agent ends with no word of its replica: after a grace, its end is told, naming the next primary.
    process.kill(first.handoverPid!, 'SIGKILL');
    await until('the end of the primary\'s agent to be told', () => (lines.length === 2 ? true : undefined), 10_000);
    assert.equal(lines[1], `the agent in ${first.description} was killed by SIGKILL; ${third.description} serves the session now`);
    assert.equal(session.size(), 1);
    assert.equal((await session.agent.env(false)).vars.DOPPEL_TEST_SECRET !== undefined, true, 'the third agent serves the session');
    await session.close({ park: false });
    closed = undefined;
    assert.equal(lines.length, 2);
  } finally {
    await closed?.close({ park: false });
  }
  assert.deepEqual(agentProcesses(world.target.pid), [], 'an agent was left running');
});
