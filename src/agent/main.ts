// The agent's entry point: serve one client on an inherited fd (a socketpair from the CLI), on a Unix socket its CLI
// connects to (`--listen`: started by bin/doppel beside the CLI's own start), or on a connection its launcher hands
// over (`--fd ipc`: started ahead of its client, so its own start is off the client's path; it admits the client by
// the session's token), from inside the target's network namespace; exit when the client, or the target, is gone. A
// client that parks the agent (`agent.park`) leaves it warm: it then serves the next client that comes to its Unix
// socket within the ttl, and exits when none does.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';
import process from 'node:process';
import { parseArgs } from 'node:util';
import { isDoppelError } from '../errors.ts';
import { Connection, type RequestHandler } from '../protocol/connection.ts';
import { FEATURE_CONNECT_FD, type Operations } from '../protocol/messages.ts';
import type { WarmClient } from '../protocol/warm-preface.ts';
import { agentTraceLine } from '../trace.ts';
import { EARLY_DNS_SUFFIX } from '../warm/launch-wire.ts';
import { targetEnvironment } from './env.ts';
import type { Incoming } from './incoming.ts';
import { createLog, parseLogLevel, type Log } from './log.ts';
import { processPlace } from './process-identity.ts';
import { SESSION_PATTERN } from './session-id.ts';
import { listenWarm, type Warm } from './warm.ts';

// Not `performance.now()`: that global loads perf_hooks (about 1 ms), which an untraced agent spares; both count from
// the process's start.
const modulesLoaded = process.uptime() * 1000;
const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
const software = `doppel-agent ${version}`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      pid: { type: 'string' },
      // A descriptor number, or `ipc`: the launcher sends the connection, and its session, once a client connects.
      fd: { type: 'string' },
      // Or a Unix socket `<listen>-<our pid>.sock` its CLI connects to with a warm agent's preface (the session comes
      // with it); the CLI is the process `parent` (bin/doppel, which started us and then became the CLI), and our log
      // is `<listen>.log`.
      listen: { type: 'string' },
      parent: { type: 'string' },
      'log-level': { type: 'string', default: 'info' },
      'startup-timeout': { type: 'string', default: '60' },
      // Names the agent's iptables chains (DOPPEL-<session>), so that its platform can remove them if it is killed.
      session: { type: 'string' },
      // Marks on stderr for the CLI's --trace, and the time of each answer in the answer.
      trace: { type: 'boolean', default: false },
    },
  });
  const mark = (what: string, at?: number) => {
    if (values.trace) process.stderr.write(agentTraceLine(what, at));
  };
  mark('process started', 0);
  mark('modules loaded', modulesLoaded);
  const log = createLog(parseLogLevel(values['log-level']!));
  const pid = Number(values.pid);
  if (!Number.isInteger(pid) || pid <= 0) return usage(log, '--pid PID is required');
  if (!existsSync(`/proc/${pid}`)) return usage(log, `process ${pid} does not exist`);
  const timeoutMs = Number(values['startup-timeout']) * 1000;
  if (values.fd === undefined && values.listen === undefined) return usage(log, '--fd N or --listen PATH is required');
  if (values.listen !== undefined && !(Number(values.parent) > 1)) return usage(log, '--listen needs --parent PID');
  // An agent on an inherited descriptor or its own socket is the process platform's, in its CLI's PID namespace: it
  // removes the chains of sessions whose CLI is dead (see sweepWhenQuiet).
  const sweep = values.fd === 'ipc' ? undefined : sweepWhenQuiet(log);
  // Waits here, before any signal is ours to handle: a launcher that ends kills or leaves a waiting agent, and it exits.
  const handed = values.fd === 'ipc' ? await handedClient() : undefined;
  if (handed) {
    mark('client handed over');
    // Loaded here: the token check needs node:crypto, which an agent of the process platform does without.
    const { admit, REFUSED_EXIT } = await import('./admission.ts');
    try {
      await admit(handed.stream, process.env.DOPPEL_AGENT_TOKEN ?? '');
    } catch (error) {
      log.warn(`refused a client: ${(error as Error).message}`);
      return REFUSED_EXIT;
    }
    mark('client admitted');
  }
  const targetGone = new Promise<string>((resolve) => {
    const timer = setInterval(() => {
      if (!existsSync(`/proc/${pid}`)) resolve(`target process ${pid} exited`);
    }, 500);
    timer.unref();
  });
  const signalled = new Promise<string>((resolve) => {
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(signal, () => resolve(`received ${signal}`));
  });
  // bin/doppel's agent answers the layer's lookups from now on, a planned program's first ones included, until its
  // first session ends (src/agent/layer-dns.ts).
  let earlyLookups = values.listen === undefined ? undefined : await (await import('./layer-dns.ts')).serveEarlyLookups(`${values.listen}-${process.pid}${EARLY_DNS_SUFFIX}`, pid, log);
  // The request handlers' modules load while we wait for the CLI, at a pause in the planned program's lookups: loaded
  // after the hello, they held up the CLI's first request (and so a short session's end) by 5-10 ms.
  if (earlyLookups) void earlyLookups.quiet(LOOKUPS_PAUSE_MS).then(requestHandlers);
  const listened = values.listen === undefined ? undefined : await firstClient(values.listen, Number(values.parent), pid, Promise.race([targetGone, signalled]));
  if (values.listen !== undefined && !listened) {
    // Its CLI, which would have taken the log, is gone.
    rmSync(`${values.listen}.log`, { force: true });
    return 0;
  }

  // node:crypto costs a tenth of the agent's start: only an agent started without --session loads it.
  const session = listened?.client.session ?? handed?.session ?? values.session ?? `a${(await import('node:crypto')).randomBytes(4).toString('hex')}`;
  if (!SESSION_PATTERN.test(session)) return usage(log, `--session: "${session}" is not 1-21 letters, digits or dashes`);

  let stream = listened?.stream ?? handed?.stream ?? new Socket({ fd: Number(values.fd), readable: true, writable: true });
  // An agent on an inherited descriptor or its own socket was started for the CLI of the process platform, on the
  // program's machine and in its PID namespace: the program may take our sockets. A launcher's agent (Kubernetes)
  // serves another machine.
  const handover = !handed;
  let client: WarmClient = listened?.client ?? { session, trace: values.trace };
  for (;;) {
    let warm: Warm | undefined;
    // Only this client's traffic: the next one, if any, comes with a session of its own.
    const incoming = lazyIncoming({ session: client.session, software, log, notes: sweep !== undefined });
    // Every way out passes here, an uncaught error included: the namespace is left as it was found.
    const closeIncoming = () => incoming.close();
    process.once('exit', closeIncoming);
    const park = async (args: { socket: string; ttlMs: number }) => {
      await incoming.settled();
      incoming.close();
      warm = await listenWarm(args, pid);
      // The client's CLI exits, and with it the pipes our log goes to.
      for (const out of [process.stdout, process.stderr]) out.on('error', () => undefined);
    };
    mark('sending hello');
    let handle: RequestHandler | undefined;
    let handler: Promise<RequestHandler> | undefined;
    // Loaded once the hello has gone, while the client's side of the handshake runs (module loading holds the event loop
    // for milliseconds, in which the agent would otherwise wait for the client's answer, and then for its first request).
    const loadHandlers = () =>
      (handler ??= requestHandlers().then(({ createRequestHandler }) => {
        mark('request handlers loaded');
        return (handle = createRequestHandler(pid, log, { incoming, park, handover }));
      }));
    const opening = Connection.open(stream, {
      role: 'agent',
      software,
      ...(handover ? { features: [FEATURE_CONNECT_FD], pid: process.pid } : {}),
      // A launcher's client may run on this very machine (a single-node cluster) and then reach the target itself.
      ...(handed ? { target: processPlace(pid) } : {}),
      handshakeTimeoutMs: timeoutMs,
      onRequest: (op, args, connection) => {
        sweep?.request();
        if (handle) return handle(op, args, connection);
        if (op === 'env') return targetEnvironment(pid, args as Operations['env']['args']);
        // Requests that come while the handlers load wait for them, and so does every frame behind them: a channel's
        // data must not come before its request has attached the channel.
        const answer = loadHandlers().then((loaded) => ({ answer: loaded(op, args, connection) }));
        connection.hold(answer);
        return answer.then(({ answer }) => answer);
      },
      timeAnswers: client.trace,
    });
    // A timer's turn comes after the link's flush of the hello (setImmediate). A program started from a launch plan may
    // be asking the early lookups socket now, and the load (about 5 ms) would hold those lookups: it waits for a pause in
    // them, or for the first request.
    if (earlyLookups) void earlyLookups.quiet(LOOKUPS_PAUSE_MS).then(loadHandlers);
    else setTimeout(loadHandlers, 0);
    const connection = await opening;
    mark('handshake done');
    sweep?.start();
    log.info(`serving ${connection.peer.software} for process ${pid}`);

    const why = await Promise.race([connection.closed.then((error) => (error ? `connection failed: ${error.message}` : 'client disconnected')), targetGone, signalled]);
    // A rule being added now would outlive our removal; iptables waits for its lock, hence the bound.
    await Promise.race([incoming.settled(), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
    incoming.close();
    process.off('exit', closeIncoming);
    connection.close();
    await earlyLookups?.close();
    earlyLookups = undefined;
    const next = warm && why === 'client disconnected' ? await warm.next(Promise.race([targetGone, signalled])) : undefined;
    warm?.close();
    if (!next) {
      log.info(`exiting: ${why}`);
      await sweep?.now();
      return 0;
    }
    ({ stream, client } = next);
  }
}

/** A pause in a planned program's lookups this long lets the request handlers load (see their load). */
const LOOKUPS_PAUSE_MS = 10;

/** How long an agent started ahead of its CLI (`--listen`) waits for it: a CLI that is still alive may be slow. */
const LISTEN_TIMEOUT_MS = 60_000;

/**
 * The CLI that bin/doppel started beside us, on our socket: `parent` (bin/doppel became the CLI). None comes when that
 * CLI has gone (we then have another parent), or took an agent of its own and ended us.
 */
async function firstClient(base: string, parent: number, targetPid: number, stop: Promise<unknown>): Promise<{ stream: Socket; client: WarmClient } | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const orphaned = new Promise<void>((resolve) => {
    const check = () => process.ppid !== parent && resolve();
    check();
    timer = setInterval(check, 200);
  });
  try {
    // Named for our CLI and for us, so no other agent's (a dead CLI's whose pid was reused) is ever taken for ours.
    const warm = await listenWarm({ socket: `${base}-${process.pid}.sock`, ttlMs: LISTEN_TIMEOUT_MS }, targetPid);
    try {
      return await warm.next(Promise.race([stop, orphaned]));
    } finally {
      warm.close();
    }
  } finally {
    clearInterval(timer);
  }
}

/** The link is quiet when it carried no request for this long... */
const SWEEP_QUIET_MS = 100;
/** ...and the sweep waits for a quiet moment this many times at most (2 s). */
const SWEEP_MAX_WAITS = 20;

/**
 * The sweep of dead sessions' chains (`sweepDeadCliSessions`), run once the first session's link has been quiet for a
 * moment, or as the agent exits: its iptables-save processes fork from us, milliseconds each during which no call is
 * served, so not while the program's first calls come (done by the CLI there, they held up those calls for 5-10 ms).
 * It runs only where a note names a dead session's chain (chain-notes.ts); its module, with child_process, loads then.
 */
function sweepWhenQuiet(log: Log): { start(): void; request(): void; now(): Promise<void> } {
  let sweeping: Promise<void> | undefined;
  let requests = 0;
  const now = () =>
    (sweeping ??= import('./chain-notes.ts').then(({ netnsOf, sweepNoted }) => sweepNoted(netnsOf('self'), () => import('./iptables.ts').then(({ sweepDeadCliSessions }) => sweepDeadCliSessions([])))).then(
      (failures) => failures.forEach((failure) => log.warn(`could not remove a dead session's iptables rules: ${failure}`)),
      (error: Error) => log.warn(`could not look for dead sessions' iptables rules: ${error.message}`),
    ));
  return {
    start() {
      let seen = -1;
      let waits = 0;
      const check = () => {
        if (sweeping) return;
        if (requests === seen || waits++ === SWEEP_MAX_WAITS) return void now();
        seen = requests;
        setTimeout(check, SWEEP_QUIET_MS).unref();
      };
      check();
    },
    request: () => void requests++,
    now,
  };
}

/**
 * The launcher's client, unread, sent with its session over the IPC channel. We say `ready` first: a message
 * sent before our listener exists would be lost. The channel then closes, so nothing of the launcher holds us.
 */
function handedClient(): Promise<{ stream: Socket; session: string }> {
  return new Promise((resolve, reject) => {
    if (!process.send) return reject(new Error('--fd ipc needs the launcher\'s IPC channel'));
    const gone = () => reject(new Error('the launcher went away before handing over a client'));
    process.once('disconnect', gone);
    process.on('message', function take(message: unknown, handle: unknown) {
      const session = (message as { session?: unknown } | null)?.session;
      if (typeof session !== 'string' || !(handle instanceof Socket)) return;
      process.off('message', take);
      process.off('disconnect', gone);
      process.disconnect();
      resolve({ stream: handle, session });
    });
    process.send({ ready: true });
  });
}

/**
 * The request handlers' modules (files, DNS, environment, writes, outgoing, UDP), with the builtins only they load
 * (fs and stream promises, dns, dgram), load after the hello: the client's handshake does not wait for them.
 */
const requestHandlers = () => import('./serve.ts');

/**
 * Incoming traffic's modules (HTTP/1 and HTTP/2 parsers, the router) load at the first subscription: most sessions
 * never listen, and loading them is a third of the agent's start.
 */
function lazyIncoming(options: { session: string; software: string; log: Log; notes: boolean }): Incoming {
  let loading: Promise<Incoming> | undefined;
  let loaded: Incoming | undefined;
  let closed = false;
  const load = () =>
    (loading ??= import('./incoming.ts').then(({ createIncoming }) => {
      loaded = createIncoming(options);
      // Closed while loading: the real one refuses every subscription from the start.
      if (closed) loaded.close();
      return loaded;
    }));
  return {
    subscribe: async (args, client) => (await load()).subscribe(args, client),
    unsubscribe: async (args) => (await load()).unsubscribe(args),
    settled: async () => (loading ? (await loading).settled() : undefined),
    close() {
      closed = true;
      loaded?.close();
    },
  };
}

function usage(log: Log, message: string): number {
  log.error(message);
  return 2;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`agent: error: ${isDoppelError(error) ? error.message : ((error as Error).stack ?? String(error))}\n`);
    process.exit(1);
  },
);
