// The warm session host (src/warm/) and bin/doppel's launch through it: after a session on a process target, the next
// `doppel exec` with the same configuration starts its program in that session (the same agent, the same host) as the
// shell's own child; anything else (another configuration, another target, --trace, a host that went or was killed)
// runs the CLI, which gives the same result. Nothing is left behind on any path: no host, agent, socket file, socket
// directory or iptables rule.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { after, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { until } from '../support/until.ts';
import { suiteWorld } from './suite-world.ts';
import { agentProcesses, hostProcesses, proxyDirs } from './leftovers.ts';
import { doppelBin, execIn, ok, runDoppel, startDoppel } from './run-doppel.ts';
import { serveUnderDoppel } from './serve-under-doppel.ts';
import { curlTarget, targetAnswersAgain } from './target-http.ts';
import { agentSockets, askHost, launchSockets, nothingLeft, pidsOf, startingMarkers, warmDir } from './warm-host.ts';
import { sanitizedEnv, sanitizerReport } from '../layer/sanitized.ts';
import { startTime } from '../../src/agent/process-identity.ts';

const gate = needsRoot('warm session hosts of process targets');

describe('warm session hosts', gate, () => {
  const world = suiteWorld((w) => nothingLeft(w.target.pid));
  const pid = () => world().target.pid;
  const secret = () => world().target.env.DOPPEL_TEST_SECRET!;
  const [remotePath, remoteContent] = [() => Object.keys(world().target.files)[0]!, () => Object.values(world().target.files)[0]!];
  const exec = (flags: string[], command: string[]) => ['exec', '--target', `process/${pid()}`, ...flags, '--', ...command];

  /** A session that leaves a host: the first CLI's, with agent.ttl `ttl`; once the host listens. */
  async function warmUp(ttl: string, flags: string[] = []): Promise<{ host: number; agent: number }> {
    ok(await execIn(pid(), ['true'], { flags: ['--agent-ttl', ttl, ...flags] }));
    const [host] = pidsOf(hostProcesses(pid()));
    const [agent] = pidsOf(agentProcesses(pid()));
    assert.ok(host && agent, `no host or agent stayed: ${hostProcesses(pid())} ${agentProcesses(pid())}`);
    await until('the host to listen', () => (launchSockets(pid()).length === 1 ? true : undefined));
    assert.deepEqual(startingMarkers(pid()), []);
    return { host, agent };
  }


  test('the next doppel exec runs in the warm session: same agent and host, the target\'s context, its own pid and exit status', async () => {
    const { host, agent } = await warmUp('30');
    const program = ['sh', '-c', `printf '%s|%s|' "$DOPPEL_TEST_SECRET" $$; cat ${remotePath()}; exit 7`];
    for (let run = 0; run < 3; run++) {
      const { child, finished } = startDoppel(exec(['--agent-ttl', '30'], program));
      const result = await finished;
      assert.equal(result.status, 7, result.stderr);
      // The program is the process bin/doppel started: no CLI between them.
      assert.equal(result.stdout, `${secret()}|${child.pid}|${remoteContent()}`);
      assert.equal(result.stderr, `doppel: reusing the warm session of process ${pid()} (host pid ${host})\n`);
      assert.deepEqual(pidsOf(agentProcesses(pid())), [agent]);
      assert.deepEqual(pidsOf(hostProcesses(pid())), [host]);
    }
    // bin/doppel through a link (as npm installs it) and by a relative path reaches the same host.
    const links = mkdtempSync(join(tmpdir(), 'doppel-test-'));
    after(() => rmSync(links, { recursive: true, force: true }));
    symlinkSync(doppelBin, join(links, 'doppel'));
    for (const [file, cwd] of [[join(links, 'doppel'), undefined], ['bin/doppel', fileURLToPath(new URL('../..', import.meta.url))]]) {
      const viaPath = spawnSync(file!, exec(['--agent-ttl', '30'], ['sh', '-c', 'printf %s "$DOPPEL_TEST_SECRET"']), { cwd, encoding: 'utf8', timeout: 60_000 });
      assert.equal(viaPath.stdout, secret(), viaPath.stderr);
      assert.equal(viaPath.stderr, `doppel: reusing the warm session of process ${pid()} (host pid ${host})\n`);
    }
    // -q: nothing of ours on stderr. The program's own death by a signal is the caller's to see.
    const killed = await runDoppel(exec(['-q', '--agent-ttl', '30'], ['sh', '-c', 'echo $$; kill -TERM $$']));
    assert.equal(killed.signal, 'SIGTERM');
    assert.equal(killed.stderr, '');
    // A signal to the process bin/doppel started reaches the program.
    const { child, finished } = startDoppel(exec(['-q', '--agent-ttl', '30'], ['sh', '-c', 'trap "echo got-term; exit 5" TERM; echo ready; while :; do sleep 0.05; done']));
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk));
    await until('the program', () => (out.includes('ready') ? true : undefined));
    child.kill('SIGTERM');
    const trapped = await finished;
    assert.equal(trapped.status, 5);
    assert.equal(trapped.stdout, 'ready\ngot-term\n');
    // The host reads every request afresh: after the -q ones, one without it is told where it runs.
    const told = await runDoppel(exec(['--agent-ttl', '30'], ['true']));
    assert.equal(told.stderr, `doppel: reusing the warm session of process ${pid()} (host pid ${host})\n`);
    // The host's ttl is its own session's (30 s), so it goes now.
    process.kill(host, 'SIGTERM');
  });

  test('a program that left nothing in its proxy leaves it to the next one of the same place and program; elsewhere, another', async () => {
    const { host } = await warmUp('30');
    const name = world().services.redis.name;
    // The proxy's socket, and a lookup the agent answers on its socket in the proxy's directory.
    const program = ['sh', '-c', `printf '%s\\n' "$DOPPEL_LAYER_SOCKET"; getent hosts ${name}`];
    const run = async (cwd?: string) => {
      const result = await runDoppel(exec(['-q', '--agent-ttl', '30'], program), { ...(cwd && { cwd }) });
      assert.equal(result.status, 0, result.stderr);
      const [socket, lookup] = result.stdout.split('\n');
      assert.match(lookup!, new RegExp(`^${world().services.redis.address}\\s+${name.replaceAll('.', '\\.')}$`));
      return socket!;
    };
    const first = await run();
    assert.equal(await run(), first);
    assert.equal(await run(), first);
    // Another working directory makes another fs policy: another proxy, and the kept one is closed.
    const elsewhere = await run(tmpdir());
    assert.notEqual(elsewhere, first);
    assert.equal(existsSync(dirname(first)), false);
    process.kill(host, 'SIGTERM');
  });

  test('the host makes ready the command whose session left it: that command\'s next run takes the proxy made before it came', async () => {
    const program = ['sh', '-c', 'printf %s "$DOPPEL_LAYER_SOCKET"'];
    const first = ok(await runDoppel(exec(['-q', '--agent-ttl', '30'], program)));
    const host = await until('the host', () => pidsOf(hostProcesses(pid()))[0]);
    // Before any request: the host's own proxy directory, made for the first run's command.
    const [ready] = await until('the host\'s proxy for that command', () => (proxyDirs([host]).length === 1 ? proxyDirs([host]) : undefined));
    assert.notEqual(dirname(first), join(tmpdir(), ready!));
    const next = ok(await runDoppel(exec(['-q', '--agent-ttl', '30'], program)));
    assert.equal(dirname(next), join(tmpdir(), ready!));
    process.kill(host, 'SIGTERM');
  });

  test('the very next doppel exec, started as the last one returns, waits for the host that session left, and runs in it', async () => {
    // The session's end does not wait for its host to start: its marker says that it is starting.
    ok(await execIn(pid(), ['true'], { flags: ['--agent-ttl', '30'] }));
    const next = await runDoppel(exec(['--agent-ttl', '30'], ['sh', '-c', 'printf %s "$DOPPEL_TEST_SECRET"']));
    const [host] = pidsOf(hostProcesses(pid()));
    const [agent] = pidsOf(agentProcesses(pid()));
    assert.equal(ok(next), secret());
    assert.equal(next.stderr, `doppel: reusing the warm session of process ${pid()} (host pid ${host})\n`);
    assert.deepEqual([pidsOf(hostProcesses(pid())), pidsOf(agentProcesses(pid()))], [[host], [agent]]);
    assert.deepEqual(startingMarkers(pid()), []);
    process.kill(host!, 'SIGTERM');
  });

  test('a configuration file found in the working directory is followed and named, by the CLI and the warm session alike; not under -q, nor when -f gives it', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'doppel-test-'));
    after(() => rmSync(cwd, { recursive: true, force: true }));
    mkdirSync(join(cwd, '.mirrord'));
    writeFileSync(join(cwd, '.mirrord', 'mirrord.json'), JSON.stringify({ target: { path: `process/${pid()}` }, agent: { ttl: 30 }, feature: { env: { exclude: 'DOPPEL_TEST_*' } } }));
    const run = async (flags: string[]) => {
      const result = await runDoppel(['exec', ...flags, '--', 'sh', '-c', 'printf %s "${DOPPEL_TEST_SECRET:-excluded}"'], { cwd });
      assert.equal(ok(result), 'excluded');
      return result.stderr;
    };
    const note = 'doppel: configuration from .mirrord/mirrord.json\n';
    assert.ok((await run([])).startsWith(note));
    const host = await until('the host to listen', () => (launchSockets(pid()).length === 1 ? pidsOf(hostProcesses(pid()))[0] : undefined));
    const reusing = `doppel: reusing the warm session of process ${pid()} (host pid ${host})\n`;
    assert.equal(await run([]), `${note}${reusing}`);
    assert.equal(await run(['-q']), '');
    assert.equal(await run(['-f', '.mirrord/mirrord.json']), reusing);
    process.kill(host, 'SIGTERM');
  });

  test('a marker left by a host killed as it started, its pid gone or another\'s since, is passed by and swept', async () => {
    const marker = (hostPid: number) => join(warmDir, `launch-${pid()}-${startTime(pid())}-${hostPid}.sock.starting`);
    const dead = marker(spawnSync('true').pid!);
    writeFileSync(dead, '');
    // A live process that is no host, under a marker older than any start is waited for.
    const other = spawn('sleep', ['60'], { stdio: 'ignore' });
    after(() => other.kill('SIGKILL'));
    const reused = marker(other.pid!);
    writeFileSync(reused, '');
    const old = new Date(Date.now() - 10_000);
    utimesSync(reused, old, old);
    const run = await runDoppel(exec(['--agent-ttl', '1'], ['sh', '-c', 'printf %s "$DOPPEL_TEST_SECRET"']));
    assert.equal(ok(run), secret());
    assert.doesNotMatch(run.stderr, /reusing/);
    assert.equal(existsSync(dead), false, 'the dead host\'s marker is still there');
    assert.equal(existsSync(reused), false, 'the stale marker of a live pid is still there');
    other.kill('SIGKILL');
    await nothingLeft(pid());
  });

  test('a program in the warm session takes the target\'s port; when it exits the port goes back, and the next one takes it again', async () => {
    const { host, agent } = await warmUp('30', ['--steal']);
    // Answers one caller, then exits without closing its server: its session's end gives the port back.
    const script = `require('http').createServer((q, s) => s.end('local', () => process.exit(0))).listen(Number(process.argv[1]), () => console.log('ready'))`;
    for (let round = 0; round < 2; round++) {
      const server = serveUnderDoppel(pid(), [process.execPath, '-e', script, String(world().target.http.port)], { flags: ['--agent-ttl', '30', '--steal'] });
      await server.line(/^ready/);
      assert.equal(await curlTarget(world(), `/steal-${round}`), 'local');
      assert.equal((await server.finished).status, 0);
      await targetAnswersAgain(world());
    }
    assert.deepEqual(world().target.http.requests().filter((line) => line.includes('steal')), [], 'the target got a stolen request');
    assert.deepEqual([pidsOf(hostProcesses(pid())), pidsOf(agentProcesses(pid()))], [[host], [agent]]);
    process.kill(host, 'SIGTERM');
  });

  test('the trampoline under AddressSanitizer and UBSan: the wait at a starting host\'s marker, the request, the answer and the exec', async () => {
    const { host } = await warmUp('30');
    // The host as it looks while starting: its marker, no socket yet (moved aside here), which comes a moment later and
    // then the marker goes. The trampoline finds the socket only through its wait at the marker.
    const socket = join(warmDir, launchSockets(pid())[0]!);
    const marker = `${socket}.starting`;
    writeFileSync(marker, '');
    renameSync(socket, `${socket}.aside`);
    spawn('sh', ['-c', 'sleep 0.2; mv "$0.aside" "$0"; rm "$0.starting"', socket], { stdio: 'ignore' });
    const sanitized = sanitizedEnv();
    const entry = fileURLToPath(new URL('../../dist/cli/entry.js', import.meta.url));
    // What bin/doppel runs, with the sanitized layer (after libasan, which must come first) in the trampoline.
    const env = { ...sanitized, DOPPEL_LAYER_LIBRARY: undefined, DOPPEL_LAUNCH: warmDir, DOPPEL_LAUNCH_PRELOAD: sanitized.LD_PRELOAD, LD_PRELOAD: `${sanitized.LD_PRELOAD}:${sanitized.DOPPEL_LAYER_LIBRARY}` };
    const run = spawnSync('/usr/bin/env', [process.execPath, '--enable-source-maps', entry, ...exec(['--agent-ttl', '30'], ['sh', '-c', 'printf %s "$DOPPEL_TEST_SECRET"'])], { env, encoding: 'utf8', timeout: 60_000 });
    assert.doesNotMatch(run.stderr, sanitizerReport);
    assert.equal(run.stdout, secret(), run.stderr);
    assert.match(run.stderr, new RegExp(`reusing the warm session of process ${pid()} \\(host pid ${host}\\)`));
    assert.equal(existsSync(marker), false);
    process.kill(host, 'SIGTERM');
  });

  test('another configuration, --trace or a missing program runs the CLI, which reuses the agent the host gave back', async () => {
    const { host, agent } = await warmUp('30');
    // Another environment filter: the CLI's answer, from the same agent.
    const other = await runDoppel(exec(['--agent-ttl', '30', '--env-exclude', 'DOPPEL_TEST_SECRET'], ['sh', '-c', 'printf "[%s]" "$DOPPEL_TEST_SECRET"']));
    assert.equal(ok(other), '[]');
    assert.match(other.stderr, new RegExp(`reusing the warm agent of process ${pid()}`));
    assert.deepEqual(pidsOf(agentProcesses(pid())), [agent]);
    await until('the first host to go', () => (pidsOf(hostProcesses(pid())).includes(host) ? undefined : true));
    // That CLI left a host of its own, for its configuration.
    const [second] = pidsOf(hostProcesses(pid()));
    assert.ok(second, 'the CLI left no host');
    const traced = await execIn(pid(), ['cat', remotePath()], { flags: ['--agent-ttl', '30', '--env-exclude', 'DOPPEL_TEST_SECRET', '--trace'] });
    assert.equal(ok(traced), remoteContent());
    assert.match(traced.stderr, /trace .* program spawned/);
    assert.deepEqual(pidsOf(agentProcesses(pid())), [agent]);
    // A program that is not there: the CLI's error and status.
    await until('a host', () => hostProcesses(pid())[0]);
    const missing = await execIn(pid(), ['no-such-program-here'], { flags: ['--agent-ttl', '30', '--env-exclude', 'DOPPEL_TEST_SECRET'] });
    assert.equal(missing.status, 127);
    assert.match(missing.stderr, /command not found: no-such-program-here/);
    // The agent went back to waiting warm for 30 s; a last session with a short ttl ends it.
    ok(await execIn(pid(), ['true'], { flags: ['--agent-ttl', '1'] }));
    assert.deepEqual(pidsOf(agentProcesses(pid())), [agent]);
  });

  test('a host answers a request as the layer sends it: not for another target or doppel, and gives its agent back for another configuration', async () => {
    const { host } = await warmUp('30');
    const [socket] = launchSockets(pid());
    // The process the host takes for the program; the test stands in for its layer.
    const program = spawn('sleep', ['60'], { stdio: 'ignore' });
    after(() => program.kill('SIGKILL'));
    const request = (args: string[]) => askHost(socket!, { pid: program.pid!, args });
    assert.deepEqual(await request(['exec', '-t', 'process/1', '--agent-ttl', '30', '--', 'true']), { run: false });
    assert.deepEqual(await request(['ls']), { run: false });
    const answer = await request(exec(['--agent-ttl', '30'], ['sh', '-c', 'true']));
    assert.ok(answer.run);
    assert.equal(answer.file, '/usr/bin/sh');
    assert.deepEqual(answer.argv, ['sh', '-c', 'true']);
    assert.equal(answer.env.DOPPEL_TEST_SECRET, secret());
    assert.match(answer.env.LD_PRELOAD ?? '', /libdoppel\.so$/);
    assert.ok(existsSync(answer.env.DOPPEL_LAYER_SOCKET!), 'the launch has no proxy');
    // That program has not ended, so the host is busy.
    assert.deepEqual(await request(exec(['--agent-ttl', '30'], ['true'])), { run: false });
    assert.deepEqual(pidsOf(hostProcesses(pid())), [host]);
    // A host that goes stops its program first, as a CLI would.
    process.kill(host, 'SIGTERM');
    await until('the host to go', () => (hostProcesses(pid()).length === 0 ? true : undefined));
    assert.equal(program.signalCode, 'SIGTERM');
    assert.equal(existsSync(answer.env.DOPPEL_LAYER_SOCKET!), false, 'the launch\'s proxy outlived its host');

    const next = await warmUp('30');
    const [nextSocket] = launchSockets(pid());
    assert.deepEqual(await askHost(nextSocket!, { pid: program.pid!, args: exec(['--agent-ttl', '30', '--fs-mode', 'local'], ['true']) }), { run: false });
    await until('the host to go', () => (hostProcesses(pid()).length === 0 ? true : undefined));
    assert.deepEqual(pidsOf(agentProcesses(pid())), [next.agent], 'the agent did not stay warm');
    assert.equal(agentSockets(pid()).length, 1);
    const fallback = await runDoppel(exec(['--agent-ttl', '1', '--fs-mode', 'local'], ['true']));
    ok(fallback);
    assert.match(fallback.stderr, /reusing the warm agent/);
  });

  test('the agent lost while a program runs in the warm session: the program hears it as from the CLI, and is stopped', async () => {
    const { agent } = await warmUp('60');
    // The host writes to the program's stderr through /proc, which opens a file, pipe or terminal but not a socket
    // (what child_process gives): here it is a file.
    const errors = join(mkdtempSync(join(tmpdir(), 'doppel-test-')), 'stderr');
    after(() => rmSync(dirname(errors), { recursive: true, force: true }));
    const { child, finished } = startDoppel(exec(['-q', '--agent-ttl', '60'], ['sh', '-c', 'echo up; exec sleep 30']), { wrap: ['sh', '-c', 'exec "$@" 2>"$0"', errors] });
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk));
    await until('the program', () => (out.includes('up') ? true : undefined));
    process.kill(agent, 'SIGKILL');
    assert.equal((await finished).signal, 'SIGTERM');
    assert.match(readFileSync(errors, 'utf8'), new RegExp(`^doppel: the agent in process ${pid()} .* while the program ran.*\\[E_AGENT_LOST\\]\n  hint: `));
  });

  test('after its ttl the host and its agent are gone, and the next run starts afresh', async () => {
    await warmUp('1');
    await nothingLeft(pid());
    const next = await runDoppel(exec(['--agent-ttl', '1'], ['sh', '-c', 'printf %s "$DOPPEL_TEST_SECRET"']));
    assert.equal(ok(next), secret());
    assert.doesNotMatch(next.stderr, /reusing/);
  });

  test('a host killed outright takes its agent with it; its socket file and proxy directory go at the next start', async () => {
    const { host, agent } = await warmUp('60');
    // A launch under way when the host dies: the program's layer loses its proxy, not its life.
    const running = startDoppel(exec(['-q', '--agent-ttl', '60'], ['sh', '-c', 'echo up; sleep 0.5; echo done']));
    let out = '';
    running.child.stdout!.on('data', (chunk: Buffer) => (out += chunk));
    await until('the program', () => (out.includes('up') ? true : undefined));
    const proxyDirs = readdirSync(tmpdir()).filter((name) => name.startsWith(`doppel-${host}-`));
    assert.equal(proxyDirs.length, 1, 'the launch has no proxy directory');
    process.kill(host, 'SIGKILL');
    await until('the agent to go', () => (isRunning(agent) ? undefined : true));
    assert.equal((await running.finished).stdout, 'up\ndone\n');
    assert.equal(launchSockets(pid()).length, 1);
    const next = await runDoppel(exec(['--agent-ttl', '1'], ['sh', '-c', 'printf %s "$DOPPEL_TEST_SECRET"']));
    assert.equal(ok(next), secret());
    assert.doesNotMatch(next.stderr, /reusing/);
    assert.ok(!launchSockets(pid()).some((name) => name.endsWith(`-${host}.sock`)), 'the dead host\'s socket is still there');
    assert.deepEqual(readdirSync(tmpdir()).filter((name) => name.startsWith(`doppel-${host}-`)), []);
  });

  test('a host whose target exits goes, and leaves nothing', async () => {
    const target: ChildProcess = spawn('nsenter', ['-t', String(pid()), '-n', '-m', 'sleep', '600'], { stdio: 'ignore' });
    const targetPid = target.pid!;
    try {
      await until('the target', () => (existsSync(`/proc/${targetPid}/ns/net`) && agentProcesses(targetPid).length === 0 ? true : undefined));
      ok(await execIn(targetPid, ['true'], { flags: ['--agent-ttl', '60'] }));
      assert.equal(hostProcesses(targetPid).length, 1, 'no host stayed');
      target.kill('SIGKILL');
      await nothingLeft(targetPid);
      // bin/doppel finds no host and the CLI says what is wrong.
      const gone = await execIn(targetPid, ['true'], { flags: ['--agent-ttl', '60'] });
      assert.match(gone.stderr, /E_TARGET_NOT_FOUND/);
    } finally {
      target.kill('SIGKILL');
    }
  });
});

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
