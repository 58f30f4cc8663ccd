// Benchmarks incoming traffic on the process platform against the direct case in the same run, and writes
// bench/results/incoming.json: stolen HTTP/1.1 keep-alive requests (latency and requests per second; direct: the same
// program run in the target's network namespace, called the same way), mirrored requests at a fixed rate (delivered
// byte-exact to the program, and what mirroring adds to the caller's latency), and the agent's memory while 1,000
// stolen connections are open.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createWorld } from '../test/world/world.ts';
import { writeResults } from './results-file.ts';
import { compare, type Comparison } from './stats.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const doppel = fileURLToPath(new URL('../bin/doppel', import.meta.url));
const server = `${here}workloads/http-server.mjs`;
const loops = Number(process.env.BENCH_LOOPS ?? 2000);
const rate = Number(process.env.BENCH_MIRROR_RATE ?? 2000);
const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const connectionsHeld = Number(process.env.BENCH_CONNECTIONS ?? 1000);

/** One kept-alive connection that sends a request and waits for its whole answer (by Content-Length). */
class KeepAlive {
  private buffered = Buffer.alloc(0);
  private waiting: (() => void) | undefined;
  /** Every byte sent on it, for the mirror's byte-exact check. */
  readonly sent: Buffer[] = [];
  private readonly socket: Socket;
  private failed: ((error: Error) => void) | undefined;
  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('error', (error) => this.failed?.(error));
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.settle();
    });
  }

  static async open(host: string, port: number): Promise<KeepAlive> {
    const socket = connect({ host, port });
    await once(socket, 'connect');
    return new KeepAlive(socket);
  }

  /** Nanoseconds from write to the end of the answer. */
  request(bytes: Buffer): Promise<number> {
    const start = process.hrtime.bigint();
    this.sent.push(bytes);
    return new Promise((resolve, reject) => {
      this.waiting = () => resolve(Number(process.hrtime.bigint() - start));
      this.failed = reject;
      this.socket.write(bytes);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private settle(): void {
    const head = this.buffered.indexOf('\r\n\r\n');
    if (head < 0 || !this.waiting) return;
    const length = Number(/content-length: *(\d+)/i.exec(this.buffered.subarray(0, head).toString('latin1'))?.[1] ?? 0);
    if (this.buffered.length < head + 4 + length) return;
    this.buffered = this.buffered.subarray(head + 4 + length);
    const done = this.waiting;
    this.waiting = undefined;
    done();
  }
}

const get = (path: string) => Buffer.from(`GET ${path} HTTP/1.1\r\nHost: pod\r\nUser-Agent: doppel-bench\r\n\r\n`);

/** `count` requests in turn on one kept-alive connection. */
async function sequential(host: string, port: number, count: number): Promise<number[]> {
  const connection = await KeepAlive.open(host, port);
  const times: number[] = [];
  for (let i = 0; i < count; i++) times.push(await connection.request(get(`/seq/${i}`)));
  connection.close();
  return times;
}

/** Requests per second with `concurrency` kept-alive connections, each sending its next request when answered. */
async function throughput(host: string, port: number, concurrency: number, ms: number): Promise<number> {
  const connections = await Promise.all(Array.from({ length: concurrency }, () => KeepAlive.open(host, port)));
  let done = 0;
  const end = Date.now() + ms;
  await Promise.all(
    connections.map(async (connection, c) => {
      for (let i = 0; Date.now() < end; i++) {
        await connection.request(get(`/rps/${c}/${i}`));
        done++;
      }
    }),
  );
  for (const connection of connections) connection.close();
  return Math.round(done / (ms / 1000));
}

/** `rate` requests per second for `secs` seconds over 8 connections, each on its own schedule; their latencies and connections. */
async function paced(host: string, port: number, requestRate: number, secs: number): Promise<{ times: number[]; connections: KeepAlive[] }> {
  const count = 8;
  const interval = (count * 1000) / requestRate;
  const connections = await Promise.all(Array.from({ length: count }, () => KeepAlive.open(host, port)));
  const times: number[] = [];
  const start = performance.now();
  await Promise.all(
    connections.map(async (connection, c) => {
      for (let i = 0; i < (secs * requestRate) / count; i++) {
        const due = start + i * interval + (c * interval) / count;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        times.push(await connection.request(get(`/mirror/${c}/${i}`)));
      }
    }),
  );
  return { times, connections };
}

/** A server program run as `command`, ready once it prints "ready". */
async function started(command: string, args: string[]): Promise<ChildProcess> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let seen = '';
  child.stdout!.setEncoding('utf8');
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (text: string) => {
      seen += text;
      if (seen.includes('ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`${command} ${args.join(' ')} exited (${code}) before it was ready`)));
  });
  return child;
}

async function stopped(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exit = once(child, 'exit');
  child.kill('SIGTERM');
  await exit;
}

function withAddedP99(comparison: Comparison): Comparison & { addedP99Ms: number } {
  return { ...comparison, addedP99Ms: Math.round((comparison.doppel.p99Ms - comparison.direct.p99Ms) * 1000) / 1000 };
}

/** Resident memory of `pid` in MiB. */
function rssMiB(pid: number): number {
  const kib = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
  return Math.round((kib / 1024) * 10) / 10;
}

const world = await createWorld();
const scratch = mkdtempSync(path.join(tmpdir(), 'doppel-incoming-bench-'));
const children: ChildProcess[] = [];
try {
  const pid = world.target.pid;
  const host = world.target.address;
  const inPod = (args: string[]) => started('nsenter', [`--net=/proc/${pid}/ns/net`, '--', process.execPath, ...args]);
  const underDoppel = (flags: string[], args: string[]) => started(doppel, ['exec', '-q', '--target', `process/${pid}`, ...flags, '--', process.execPath, ...args]);

  // Stolen: the same program, called the same way, in the pod (direct) and under doppel --steal, where the agent takes
  // each request apart to keep probes with the target; with steal_probes it passes whole connections.
  const direct = await inPod([server, '8101']);
  children.push(direct);
  const stealing = await underDoppel(['--steal'], [server, '8100']);
  children.push(stealing);
  const agentPid = Number(execFileSync('pgrep', ['-f', `agent/main\\.(js|ts) --pid ${pid}( |$)`], { encoding: 'utf8' }).trim().split('\n')[0]);
  const startMiB = rssMiB(agentPid);
  const stolenLatency = compare(await sequential(host, 8101, loops), await sequential(host, 8100, loops));
  const rps = { direct: await throughput(host, 8101, 16, 3000), doppel: await throughput(host, 8100, 16, 3000) };
  const wholeConfig = path.join(scratch, 'steal-probes.json');
  writeFileSync(wholeConfig, JSON.stringify({ feature: { network: { incoming: { mode: 'steal', steal_probes: true } } } }));
  const wholeStealing = await underDoppel(['-f', wholeConfig], [server, '8103']);
  children.push(wholeStealing);
  const wholeLatency = compare(await sequential(host, 8101, loops), await sequential(host, 8103, loops));
  const wholeRps = { direct: await throughput(host, 8101, 16, 3000), doppel: await throughput(host, 8103, 16, 3000) };
  await stopped(wholeStealing);

  // Memory: the agent while `connectionsHeld` stolen connections are open, each having carried one request.
  const loadedMiB = rssMiB(agentPid);
  const held: KeepAlive[] = [];
  for (let i = 0; i < connectionsHeld; i++) {
    const connection = await KeepAlive.open(host, 8100);
    await connection.request(get(`/held/${i}`));
    held.push(connection);
  }
  const heldMiB = rssMiB(agentPid);
  for (const connection of held) connection.close();
  await stopped(stealing);
  await stopped(direct);

  // Mirrored: the pod's own server answers; first alone, then with a session mirroring its port to a recording program.
  const podServer = await inPod([server, '8102']);
  children.push(podServer);
  const alone = await paced(host, 8102, rate, seconds);
  alone.connections.forEach((connection) => connection.close());
  const record = path.join(scratch, 'mirror.json');
  const mirroring = await underDoppel([], [server, '8102', record]);
  children.push(mirroring);
  const mirrored = await paced(host, 8102, rate, seconds);
  mirrored.connections.forEach((connection) => connection.close());
  // The copies trail the answers: give the last ones a moment before the program writes what it got.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  await stopped(mirroring);
  const got = JSON.parse(readFileSync(record, 'utf8')) as { requests: number; hashes: string[] };
  const sentHashes = mirrored.connections.map((connection) => createHash('sha256').update(Buffer.concat(connection.sent)).digest('hex'));
  const sentRequests = mirrored.connections.reduce((sum, connection) => sum + connection.sent.length, 0);
  await stopped(podServer);

  const results = {
    when: new Date().toISOString(),
    node: process.version,
    direct: 'the same program run inside the target with nsenter -n, called the same way from the host',
    stolenKeepAliveRequest: withAddedP99(stolenLatency),
    stolenRequestsPerSecond: { concurrency: 16, ...rps, ratio: Math.round((rps.doppel / rps.direct) * 100) / 100 },
    stolenWholeConnectionRequest: withAddedP99(wholeLatency),
    stolenWholeConnectionRequestsPerSecond: { concurrency: 16, ...wholeRps, ratio: Math.round((wholeRps.doppel / wholeRps.direct) * 100) / 100 },
    mirrored: {
      ratePerSecond: rate,
      seconds,
      requestsSent: sentRequests,
      requestsDelivered: got.requests,
      connectionsByteExact: sentHashes.filter((hash) => got.hashes.includes(hash)).length,
      connections: sentHashes.length,
      callerLatency: compare(alone.times, mirrored.times),
    },
    agentMemoryMiB: { atStart: startMiB, afterTheRuns: loadedMiB, [`with${connectionsHeld}Connections`]: heldMiB },
  };
  writeResults('incoming', results);
} finally {
  for (const child of children) await stopped(child).catch(() => undefined);
  rmSync(scratch, { recursive: true, force: true });
  await world.destroy();
}
