// The agent bin/doppel starts beside the CLI on a process target (src/platform/process/shell-agent.ts): the session
// runs on it, the program never sees how it was named, a configuration that asks for another agent ends it, and a CLI
// killed at any moment of its start leaves neither agent nor file behind.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { isAlive } from '../../src/process-alive.ts';
import { needsRoot } from '../support/root.ts';
import { agentProcesses, proxyDirs } from './leftovers.ts';
import { execIn, ok, startDoppel } from './run-doppel.ts';
import { suiteWorld } from './suite-world.ts';
import { noHostOf, warmDir } from './warm-host.ts';

const gate = needsRoot('agents bin/doppel starts for a process target');

/** A shell line that prints the command lines of the target's agents, one per line, as `agent: ...`. */
const listAgents = (pid: number) => `pgrep -af 'agent/main\\.js --pid ${pid} ' | sed 's/^[0-9]* .*agent\\/main\\.js/agent:/'`;

describe('the agent bin/doppel starts', gate, () => {
  const world = suiteWorld();
  before(() => noHostOf(() => world().target.pid));

  test('serves the session: the program\'s first lookup is answered by it, and DOPPEL_EARLY_AGENT stays out of the program\'s environment', async () => {
    const { pid } = world().target;
    const { redis } = world().services;
    const out = ok(await execIn(pid, ['sh', '-c', `getent hosts ${redis.name}; ${listAgents(pid)}; echo "early: [\${DOPPEL_EARLY_AGENT-}]"`], { flags: ['--agent-ttl', '0'] }));
    const lines = out.trim().split('\n');
    assert.equal(lines[0], `${redis.address.padEnd(15)} ${redis.name}`);
    const agents = lines.filter((line) => line.startsWith('agent:'));
    assert.equal(agents.length, 1, out);
    assert.match(agents[0]!, /--listen \S+\/doppel-warm\/early-\d+ --parent \d+ /, out);
    assert.equal(lines.at(-1), 'early: []');
  });

  test('a socket a killed warm session host left behind does not keep it from starting', async () => {
    const { pid } = world().target;
    let dead = 4_000_000;
    while (isAlive(dead)) dead++;
    // A bound Unix socket whose process has gone, as a host killed outright leaves it.
    const stale = join(warmDir, `launch-${pid}-1-${dead}.sock`);
    execFileSync('python3', ['-c', 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', stale]);
    try {
      const out = ok(await execIn(pid, ['sh', '-c', listAgents(pid)], { flags: ['--agent-ttl', '0'] }));
      assert.match(out, /--listen \S+\/doppel-warm\/early-\d+ --parent \d+ /);
    } finally {
      rmSync(stale, { force: true });
    }
  });

  test('a socket of another target\'s host, named for a pid that runs (as another PID namespace\'s is), does not keep it from starting', async () => {
    const { pid } = world().target;
    const stale = join(warmDir, `launch-kube-${process.pid}.sock`);
    execFileSync('python3', ['-c', 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', stale]);
    try {
      const out = ok(await execIn(pid, ['sh', '-c', listAgents(pid)], { flags: ['--agent-ttl', '0'] }));
      assert.match(out, /--listen \S+\/doppel-warm\/early-\d+ --parent \d+ /);
    } finally {
      rmSync(stale, { force: true });
    }
  });

  test('is ended, and another started, when the configuration asks for another agent than the command line\'s', async () => {
    const { pid } = world().target;
    const dir = mkdtempSync(join(tmpdir(), 'doppel-shell-agent-test-'));
    try {
      const file = join(dir, 'config.json');
      writeFileSync(file, JSON.stringify({ agent: { log_level: 'debug', ttl: 0 } }));
      const out = ok(await execIn(pid, ['sh', '-c', `echo "$DOPPEL_TEST_SECRET"; ${listAgents(pid)}`], { flags: ['-f', file] }));
      const agents = out.split('\n').filter((line) => line.startsWith('agent:'));
      assert.equal(out.split('\n')[0], world().target.env.DOPPEL_TEST_SECRET);
      assert.equal(agents.length, 1, out);
      assert.match(agents[0]!, /--fd 3 --log-level debug /, out);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('goes with a CLI killed at any moment of its start, and leaves no file', async () => {
    const { pid } = world().target;
    for (const afterMs of [0, 15, 40, 80, 150, 300]) {
      const { child, finished } = startDoppel(['exec', '--target', `process/${pid}`, '-q', '--agent-ttl', '0', '--', 'sleep', '1']);
      await new Promise((resolve) => setTimeout(resolve, afterMs));
      child.kill('SIGKILL');
      await finished;
      // The socket directory of a CLI killed outright is the next session's to sweep (exec-failures.test.ts).
      const left = () => ({ agents: agentProcesses(pid), files: proxyDirs().filter((entry) => entry.startsWith('doppel-warm/')) });
      for (let waited = 0; waited < 5000 && (left().agents.length > 0 || left().files.length > 0); waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual(left(), { agents: [], files: [] }, `the CLI killed ${afterMs} ms into its start`);
    }
    ok(await execIn(pid, ['true']));
  });
});
