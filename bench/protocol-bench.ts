// Benchmarks the agent protocol over real sockets: a 64 MiB file by fs.fetch (channel) against fs.read pieces (a version 1 agent),
// small-request latency during that transfer on a throttled link, and how long a stalled link takes to notice; writes bench/results/protocol.json.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Connection } from '../src/protocol/connection.ts';
import { decodeControl, encodeControl } from '../src/protocol/messages.ts';
import { connectAgent } from '../src/proxy/agent-client.ts';
import { startAgentProcess } from '../test/protocol/agent-process.ts';
import { socketPair } from '../test/protocol/pair.ts';
import { relayBetween, relayedLink, type RelayOptions } from '../test/protocol/relay.ts';
import { writeResults } from './results-file.ts';
import { summarize } from './stats.ts';

const MiB = 1024 * 1024;
const THROTTLE = 32 * MiB;
const runs = Number(process.env.BENCH_RUNS ?? 5);

const asVersion1: RelayOptions['helloFromB'] = (frame) => {
  const message = frame.kind === 'control' ? decodeControl(frame.body) : undefined;
  if (message?.t !== 'hello') throw new Error('the agent did not start with its hello');
  return { kind: 'control', body: encodeControl({ ...message, version: 1 }) };
};

/** The real agent process behind a relay, and the real client. */
async function session(options: RelayOptions) {
  const agent = startAgentProcess('error');
  const near = await socketPair();
  const link = relayBetween(near.b, agent.socket, options);
  const client = await connectAgent(near.a, { handshakeTimeoutMs: 5000 });
  return {
    client,
    link,
    close: async () => {
      client.close();
      near.close();
      await agent.exited;
    },
  };
}

/** One 64 MiB transfer; with `probe`, an fs.stat every 20 ms once 2 MiB crossed, timed in ns, with the bytes that crossed ahead of each answer. */
async function transfer(file: string, options: RelayOptions, probe: boolean) {
  const { client, link, close } = await session(options);
  const latencies: number[] = [];
  const ahead: number[] = [];
  try {
    const start = process.hrtime.bigint();
    let done = false;
    const whole = client.fetch(file).finally(() => (done = true));
    while (probe && !done) {
      if (link.forwarded.bToA >= 2 * MiB) {
        const issued = process.hrtime.bigint();
        const before = link.forwarded.bToA;
        await client.stat(file, true);
        if (done) break;
        latencies.push(Number(process.hrtime.bigint() - issued));
        ahead.push(link.forwarded.bToA - before);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await whole;
    return { ns: Number(process.hrtime.bigint() - start), latencies, ahead };
  } finally {
    await close();
  }
}

async function stallNoticedMs(): Promise<number> {
  const link = await relayedLink();
  const [client, agent] = await Promise.all([
    Connection.open(link.a, { role: 'client', software: 'bench-client', handshakeTimeoutMs: 5000 }),
    Connection.open(link.b, { role: 'agent', software: 'bench-agent', handshakeTimeoutMs: 5000 }),
  ]);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const start = Date.now();
  link.stall();
  await Promise.all([client.closed, agent.closed]);
  link.close();
  return Date.now() - start;
}

const dir = mkdtempSync(join(tmpdir(), 'doppel-protocol-bench-'));
try {
  const file = join(dir, 'big');
  writeFileSync(file, randomBytes(64 * MiB));
  const report: Record<string, unknown> = { fileMiB: 64, throttleMiBps: THROTTLE / MiB, runs };
  for (const [name, hello] of [['fetch', undefined], ['readPieces', asVersion1]] as const) {
    const plain: number[] = [];
    const latencies: number[] = [];
    const ahead: number[] = [];
    for (let i = 0; i < runs; i++) {
      plain.push((await transfer(file, { helloFromB: hello }, false)).ns);
      const throttled = await transfer(file, { helloFromB: hello, bytesPerSecond: THROTTLE }, true);
      latencies.push(...throttled.latencies);
      ahead.push(...throttled.ahead);
    }
    const sortedAhead = [...ahead].sort((a, b) => a - b);
    report[name] = {
      transfer: summarize(plain),
      smallRequestDuringThrottledTransfer: summarize(latencies),
      bytesAheadMedianKiB: Math.round((sortedAhead[Math.floor(sortedAhead.length / 2)] ?? NaN) / 1024),
      bytesAheadMaxKiB: Math.round((sortedAhead.at(-1) ?? NaN) / 1024),
    };
  }
  report.stallNoticedMs = await stallNoticedMs();
  writeResults('protocol', report);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
