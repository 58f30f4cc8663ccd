// Several developers' sessions on one target port, each through its own real agent in the test world: disjoint HTTP
// filters share the port (one kept-alive caller reaching both), a colliding unfiltered steal follows on_concurrent_steal
// (abort, continue, override), a mirror gets copies while another session steals, and when the session routing the
// port leaves (or its agent is killed) another takes it over; no chain of ours stays behind.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { Agent, request } from 'node:http';
import { promisify } from 'node:util';
import { after, afterEach, before, describe, test } from 'node:test';
import type { DoppelError } from '../../src/errors.ts';
import { agentProcesses } from '../e2e/leftovers.ts';
import { localPeer, podPeer, type RecordingServer } from '../support/http-peers.ts';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { agentSession, incomingRequests, type Incoming } from './agent-session.ts';

const run = promisify(execFile);
const gate = needsRoot('several sessions on one target port');
/** A port of the pod's own, served by a recording target server of this test's. */
const PORT = 8002;

interface DevSession {
  program: RecordingServer & { port: number };
  /** Lines the session's user was shown about other sessions. */
  notices: string[];
  /** Errors that ended the session. */
  aborted: DoppelError[];
  /** The program listens: the session subscribes the port. */
  listen(): Promise<void>;
  /** The session ends as `doppel exec` ends it. */
  stop(): Promise<void>;
}

describe('several sessions on one target port', gate, () => {
  let world: World;
  let target: RecordingServer;
  const closers: (() => unknown)[] = [];
  const url = (path: string) => `http://${world.target.address}:${PORT}${path}`;
  const curl = async (path: string, ...args: string[]) => (await run('curl', ['-sS', '-m', '5', ...args, url(path)])).stdout;
  const chains = () =>
    ['iptables-legacy-save', 'iptables-nft-save'].flatMap((save) => [...execFileSync('nsenter', [`--net=/proc/${world.target.pid}/ns/net`, '--', save], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).matchAll(/^:(DOPPEL-\S+)/gm)].map((m) => m[1]!));

  before(async () => {
    world = await createWorld({ firewall: 'nft' });
    target = await podPeer(world.target.pid, PORT);
  });
  afterEach(async () => {
    while (closers.length > 0) await closers.pop()!();
    assert.deepEqual(agentProcesses(world.target.pid), [], 'an agent was left running');
    assert.deepEqual(chains(), [], 'a chain of ours was left in the target\'s namespace');
    assert.equal(await curl('/after'), 'target GET /after ', 'the target answers its port again');
  });
  after(async () => {
    await target?.stop();
    await world?.destroy();
  });

  /** One developer's session: its own agent, as `doppel exec` starts it, and a program answering as `who`. */
  async function session(who: string, incoming: Incoming): Promise<DevSession> {
    const program = await localPeer(who);
    closers.push(() => program.stop());
    const { client } = await agentSession(world.target.pid, closers);
    const notices: string[] = [];
    const aborted: DoppelError[] = [];
    const requests = incomingRequests(client, { feature: { network: { incoming } } }, closers, {
      owner: `${who}@laptop`,
      notice: (text) => notices.push(text),
      abort: (error) => aborted.push(error),
    });
    return {
      program,
      notices,
      aborted,
      listen: () => requests.listen(PORT, { family: 4, address: '127.0.0.1', port: program.port }),
      async stop() {
        await requests.close();
        client.close();
      },
    };
  }

  /** Each developer's header. */
  const as = (who: string) => ['-H', `X-Dev: ${who}`];
  const filtered = (who: string): Incoming => ({ mode: 'steal', http_filter: { header_filter: `^x-dev: ${who}$` } });

  /** A GET on `agent`'s kept-alive connection; resolves with the body. */
  function get(agent: Agent, path: string, headers: Record<string, string> = {}): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = request(url(path), { agent, headers }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
      req.end();
    });
  }

  /** Asks until `expected` answers (a takeover takes a moment; longer on a busy machine), for at most 15 s. */
  async function eventually(path: string, expected: string, ...args: string[]): Promise<void> {
    let last = '';
    for (const deadline = Date.now() + 15_000; Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 100))) {
      last = await curl(path, ...args).catch((error: Error) => error.message);
      if (last === expected) return;
    }
    assert.equal(last, expected);
  }

  test('two sessions with disjoint header filters: each gets its own requests, the rest reach the target', async () => {
    const alice = await session('alice', filtered('alice'));
    await alice.listen();
    const bob = await session('bob', filtered('bob'));
    await bob.listen();
    assert.equal(await curl('/a', ...as('alice')), 'alice GET /a ');
    assert.equal(await curl('/b', ...as('bob')), 'bob GET /b ');
    assert.equal(await curl('/none'), 'target GET /none ');
    assert.equal(await curl('/carol', ...as('carol')), 'target GET /carol ');

    // One caller's kept-alive connection, request by request to whichever session's filter matches.
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    agent.on('free', (socket) => sockets.add(socket));
    try {
      assert.deepEqual(
        [await get(agent, '/k1', { 'x-dev': 'bob' }), await get(agent, '/k2', { 'x-dev': 'alice' }), await get(agent, '/k3'), await get(agent, '/k4', { 'x-dev': 'bob' })],
        ['bob GET /k1 ', 'alice GET /k2 ', 'target GET /k3 ', 'bob GET /k4 '],
      );
      assert.equal(sockets.size, 1, 'all four requests went over one connection');
    } finally {
      agent.destroy();
    }
    assert.match(alice.program.received().toString(), /GET \/a [\s\S]*GET \/k2 /);
    assert.doesNotMatch(alice.program.received().toString(), /\/b |\/k1 |\/k3 |\/k4 /);
    assert.doesNotMatch(bob.program.received().toString(), /\/a |\/k2 |\/k3 /);
    assert.deepEqual([alice.notices, bob.notices, alice.aborted, bob.aborted], [[], [], [], []]);
  });

  test('an unfiltered steal that collides with another session\'s steal: abort ends it with a line naming the other', async () => {
    const alice = await session('alice', filtered('alice'));
    await alice.listen();
    const bob = await session('bob', { mode: 'steal' });
    await assert.rejects(bob.listen(), (error: Error & { code?: string }) => error.code === 'EBUSY');
    assert.equal(bob.aborted.length, 1);
    assert.equal(bob.aborted[0]!.code, 'E_INCOMING_CONFLICT');
    assert.match(bob.aborted[0]!.message, new RegExp(`port ${PORT} is already stolen by alice@laptop`));
    assert.match(bob.aborted[0]!.hint ?? '', /on_concurrent_steal/);
    assert.equal(await curl('/a', ...as('alice')), 'alice GET /a ', 'the first session keeps its requests');
    assert.equal(await curl('/x'), 'target GET /x ');
  });

  test('on_concurrent_steal continue: the second session goes on without the traffic, and is told who has it', async () => {
    const alice = await session('alice', { mode: 'steal' });
    await alice.listen();
    const bob = await session('bob', { mode: 'steal', on_concurrent_steal: 'continue' });
    await bob.listen();
    assert.deepEqual(bob.notices, [`port ${PORT} is stolen by alice@laptop: this session goes on without its traffic (on_concurrent_steal: continue)`]);
    assert.equal(await curl('/one'), 'alice GET /one ');
    assert.equal(await curl('/two', ...as('bob')), 'alice GET /two ');
    assert.equal(bob.program.received().length, 0);
  });

  test('on_concurrent_steal override: the second session takes the port, and the first is told', async () => {
    const alice = await session('alice', { mode: 'steal' });
    await alice.listen();
    assert.equal(await curl('/before'), 'alice GET /before ');
    const bob = await session('bob', { mode: 'steal', on_concurrent_steal: 'override' });
    await bob.listen();
    assert.equal(await curl('/after-override'), 'bob GET /after-override ');
    await eventually('/told', 'bob GET /told ');
    for (let i = 0; i < 50 && alice.notices.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(alice.notices, [`port ${PORT} no longer brings this session any traffic: bob@laptop took it over with on_concurrent_steal: override`]);
    assert.doesNotMatch(alice.program.received().toString(), /after-override/);
  });

  test('a mirror gets a copy of every request while another session steals the matched ones', async () => {
    const watcher = await session('watcher', { mode: 'mirror' });
    await watcher.listen();
    const alice = await session('alice', filtered('alice'));
    await alice.listen();
    assert.equal(await curl('/stolen', ...as('alice')), 'alice GET /stolen ');
    assert.equal(await curl('/passed'), 'target GET /passed ');
    for (let i = 0; i < 50 && !/\/passed /.test(watcher.program.received().toString()); i++) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.match(watcher.program.received().toString(), /GET \/stolen HTTP\/1\.1\r\n[\s\S]*GET \/passed HTTP\/1\.1\r\n/);
  });

  for (const how of ['ends', 'is killed'] as const) {
    test(`the session routing the port ${how}: another session takes it over and keeps its requests`, async () => {
      const alice = await session('alice', filtered('alice'));
      await alice.listen();
      const [aliceAgent] = agentProcesses(world.target.pid);
      assert.ok(aliceAgent, 'the first session has an agent');
      const bob = await session('bob', filtered('bob'));
      await bob.listen();
      assert.equal(await curl('/b1', ...as('bob')), 'bob GET /b1 ');
      if (how === 'ends') await alice.stop();
      else process.kill(Number(aliceAgent!.split(' ')[0]), 'SIGKILL');
      await eventually('/b2', 'bob GET /b2 ', ...as('bob'));
      assert.equal(await curl('/a2', ...as('alice')), 'target GET /a2 ', 'the session that left gets nothing more');
      assert.equal(chains().length, 1, `only the new router's chain is left: ${chains().join(', ')}`);
      // And a third session joins whoever routes now.
      const carol = await session('carol', filtered('carol'));
      await carol.listen();
      assert.equal(await curl('/c', ...as('carol')), 'carol GET /c ');
      assert.equal(await curl('/b3', ...as('bob')), 'bob GET /b3 ');
    });
  }
});
