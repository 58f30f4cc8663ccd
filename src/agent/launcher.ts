// The agent's entry point in a Kubernetes pod: listens on the pod's loopback and runs one agent per client inside the
// target container's network namespace, handing it the connection unread; the agent admits the client only if it holds
// the session token. The agent is started before its client comes (at the launcher's start, and while it waits
// agent.ttl for the next session), so its Node.js start is not on the client's path.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { REFUSED_EXIT } from './admission.ts';
import { findContainerProcess } from './find-container-process.ts';
import { launcherSessions } from './launcher-sessions.ts';
import { createLog, parseLogLevel, type Log } from './log.ts';
import { AGENT_NODE_FLAGS } from './node-flags.ts';

const agentMain = fileURLToPath(new URL('./main.js', import.meta.url));

interface Settings {
  containerId: string | undefined;
  port: number;
  ttlMs: number;
  startupMs: number;
  deadlineMs: number;
  logLevel: string;
  /** The CLI's --trace: each agent times its answers for the CLI's call lines. */
  trace: boolean;
}

function readSettings(): Settings {
  const { values } = parseArgs({
    options: {
      'container-id': { type: 'string' },
      port: { type: 'string' },
      ttl: { type: 'string', default: '1' },
      'startup-timeout': { type: 'string', default: '60' },
      deadline: { type: 'string', default: '86400' },
      'log-level': { type: 'string', default: 'info' },
      trace: { type: 'boolean', default: false },
    },
  });
  // Each agent reads it from the environment it inherits, to admit its client.
  const token = process.env.DOPPEL_AGENT_TOKEN ?? '';
  const seconds = (name: string, value: string | undefined) => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number of seconds`);
    return n * 1000;
  };
  const port = Number(values.port);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error('--port PORT is required');
  if (token.length < 16) throw new Error('DOPPEL_AGENT_TOKEN must hold the session token');
  return {
    containerId: values['container-id'],
    port,
    ttlMs: seconds('ttl', values.ttl),
    startupMs: seconds('startup-timeout', values['startup-timeout']),
    deadlineMs: seconds('deadline', values.deadline),
    logLevel: values['log-level']!,
    trace: values.trace!,
  };
}

async function main(): Promise<number> {
  const settings = readSettings();
  const log = createLog(parseLogLevel(settings.logLevel));
  // Targetless: the agent serves from this pod's own namespaces, with no target process.
  const pid = settings.containerId === undefined ? process.pid : await findContainerProcess(settings.containerId);
  if (pid === undefined) throw new Error(`no process of container ${settings.containerId} runs on this node`);
  log.info(settings.containerId === undefined ? 'targetless' : `target container ${settings.containerId} is process ${pid}`);
  const sessions = launcherSessions(pid);
  const report = (what: string, failures: string[]) => {
    for (const failure of failures) log.warn(`${what}: ${failure}`);
  };
  // An earlier Job's launcher killed with its agents left their redirects in the target's namespace.
  report('removing chains of a dead launcher', sessions.sweepDead());
  // Every way out, an uncaught error included, leaves no chain of ours behind.
  process.once('exit', () => report('removing this launcher\'s chains', sessions.removeAll()));

  const agents = new Set<ChildProcess>();
  /** The agent started ahead of the next client; not counted as serving anyone. */
  let spare: Spare | undefined;
  const startSpare = () => {
    const started = startAgent(pid, settings, log);
    spare = started;
    started.child.once('exit', () => {
      if (spare === started) spare = undefined;
    });
  };
  let everServed = false;
  let finish: (why: string) => void = () => {};
  const finished = new Promise<string>((resolve) => (finish = resolve));

  let idle: NodeJS.Timeout | undefined;
  const armIdle = () => {
    clearTimeout(idle);
    if (agents.size > 0) return;
    // Waiting for the next session (agent.ttl): its agent is ready before it comes.
    if (everServed && settings.ttlMs > 0 && !spare) startSpare();
    const ms = everServed ? settings.ttlMs : settings.startupMs;
    idle = setTimeout(() => finish(everServed ? `no client for ${ms / 1000}s after the last one left` : `no client connected within ${ms / 1000}s`), ms);
  };

  // Nagle would hold small protocol frames back for a delayed ACK (~40 ms per streamed call). Paused: not a byte is
  // read here, so nothing the client sends can be left behind when the connection moves to its agent.
  const server = createServer({ noDelay: true, pauseOnConnect: true }, (socket) => {
    clearTimeout(idle);
    if (!spare) startSpare();
    const { child: agent, ready } = spare!;
    spare = undefined;
    agents.add(agent);
    const session = sessions.next();
    agent.once('exit', (code, signal) => {
      agents.delete(agent);
      // A client without the token was refused by the agent: it was no session, and the wait goes on as it was.
      if (code !== REFUSED_EXIT) everServed = true;
      log.info(`agent for a client ended (${signal ?? `code ${code}`})`);
      // The agent removes its chains itself unless it was killed; what is gone already is no error.
      report(`removing the chains of session ${session}`, sessions.removeSession(session));
      armIdle();
    });
    void ready.then((up) => {
      if (!up) return socket.destroy();
      agent.send({ session }, socket, (error) => {
        if (error) socket.destroy();
      });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(settings.port, '127.0.0.1', resolve);
  });
  log.info(`listening on 127.0.0.1:${settings.port}`);
  startSpare();
  armIdle();

  setTimeout(() => finish(`the session's hard deadline of ${settings.deadlineMs / 1000}s passed`), settings.deadlineMs).unref();
  if (settings.containerId !== undefined) {
    setInterval(() => {
      if (!existsSync(`/proc/${pid}`)) finish(`target process ${pid} exited`);
    }, 500).unref();
  }
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(signal, () => finish(`received ${signal}`));

  const why = await finished;
  log.info(`exiting: ${why}`);
  server.close();
  clearTimeout(idle);
  spare?.child.kill('SIGTERM');
  for (const agent of agents) agent.kill('SIGTERM');
  // The agents remove their chains as they exit; the container's end would kill them midway, so wait (bounded: the
  // pod's grace period is 2 s), and the exit handler removes what they left.
  await waitForExit(agents, 1500);
  return 0;
}

function waitForExit(agents: Set<ChildProcess>, ms: number): Promise<void> {
  const exits = [...agents].map((agent) => new Promise((resolve) => agent.once('exit', resolve)));
  return Promise.race([Promise.all(exits).then(() => {}), new Promise<void>((resolve) => setTimeout(resolve, ms).unref())]);
}

/** Whether the target's network namespace is the launcher's own: targetless, or an ephemeral container in the target pod. */
function inTargetNetwork(pid: number): boolean {
  try {
    return pid === process.pid || readlinkSync('/proc/self/ns/net') === readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    // Unreadable: leave it to nsenter, which says why in its error.
    return false;
  }
}

interface Spare {
  child: ChildProcess;
  /** Whether it came up and waits for its client (false: it ended first). */
  ready: Promise<boolean>;
}

/** An agent in the target's network namespace, waiting for its client on the IPC channel (fd 3, through nsenter). */
function startAgent(pid: number, settings: Settings, log: Log): Spare {
  // Entering needs CAP_SYS_ADMIN, which an agent already in the namespace can do without.
  const enter = inTargetNetwork(pid) ? [] : ['nsenter', `--net=/proc/${pid}/ns/net`, '--'];
  const argv = [...enter, process.execPath, ...AGENT_NODE_FLAGS, agentMain, '--pid', String(pid), '--fd', 'ipc', '--log-level', settings.logLevel, ...(settings.trace ? ['--trace'] : [])];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  child.once('error', (error) => log.error(`could not start the agent: ${error.message}`));
  const ready = new Promise<boolean>((resolve) => {
    child.once('message', () => resolve(true));
    child.once('exit', () => resolve(false));
  });
  return { child, ready };
}

main().then(
  (code) => process.exit(code),
  (error: Error) => {
    process.stderr.write(`agent: error: ${error.message}\n`);
    process.exit(1);
  },
);
