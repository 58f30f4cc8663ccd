// Every benchmark runs to its end and writes what issue 10 asks of it: each case's median, p90 and p99 both ways and
// their ratios, as JSON. Short runs (a few iterations), written to a directory of their own: no figure is checked
// against a time (that is the benchmarks' own job), only that each is there and is a time.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { everyAgentAndHost } from '../e2e/leftovers.ts';
import { kubectl, needsCluster } from '../kubernetes/support/cluster.ts';
import { needsRoot } from '../support/root.ts';
import { until } from '../support/until.ts';

const bench = fileURLToPath(new URL('../../bench/', import.meta.url));
const results = mkdtempSync(path.join(tmpdir(), 'doppel-bench-test-'));
after(() => rmSync(results, { recursive: true, force: true }));

/** Runs `bench/<script>` with `settings` (its iteration counts) and returns the JSON it wrote as `name`. */
async function runBench(script: string, name: string, settings: Record<string, string>): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [path.join(bench, script)], { env: { ...process.env, ...settings, BENCH_RESULTS: results }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const status = await new Promise<number | null>((resolve) => child.once('close', resolve));
  assert.equal(status, 0, `${script} failed: ${stderr.slice(-2000)}`);
  return JSON.parse(readFileSync(path.join(results, `${name}.json`), 'utf8')) as Record<string, unknown>;
}

type Json = Record<string, unknown>;
const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);
const isTime = (value: unknown) => typeof value === 'number' && Number.isFinite(value) && value > 0;

/** A summary of samples (bench/stats.ts): a count and times in ms, the percentiles in order. */
function assertSummary(value: unknown, where: string): void {
  assert.ok(isObject(value), `${where} is no summary`);
  assert.ok(typeof value.n === 'number' && value.n > 0, `${where}: no samples`);
  for (const key of ['medianMs', 'p90Ms', 'p99Ms']) assert.ok(isTime(value[key]), `${where}.${key} is ${String(value[key])}`);
  assert.ok((value.medianMs as number) <= (value.p90Ms as number) && (value.p90Ms as number) <= (value.p99Ms as number), `${where}: percentiles out of order`);
}

/** A case measured both ways: each way's summary and the ratios of doppel's to the direct case's. */
function assertComparison(value: unknown, where: string): void {
  assert.ok(isObject(value), `${where} is missing`);
  assertSummary(value.direct, `${where}.direct`);
  assertSummary(value.doppel, `${where}.doppel`);
  assert.ok(isObject(value.ratio), `${where}.ratio is missing`);
  for (const key of ['median', 'p90', 'p99']) assert.ok(isTime(value.ratio[key]), `${where}.ratio.${key} is ${String(value.ratio[key])}`);
}

/** Every comparison anywhere in `value`, by its path: each must be whole. */
function comparisons(value: unknown, where = ''): string[] {
  if (!isObject(value)) return [];
  if (isObject(value.direct) && 'medianMs' in value.direct && 'doppel' in value) {
    assertComparison(value, where);
    return [where];
  }
  return Object.entries(value).flatMap(([key, inner]) => comparisons(inner, where ? `${where}.${key}` : key));
}

const at = (value: unknown, dotted: string): unknown => dotted.split('.').reduce<unknown>((inner, key) => (isObject(inner) ? inner[key] : undefined), value);

/** What the benchmarks start (test worlds' namespaces, agents, warm session hosts) is gone after them. */
async function assertNothingLeft(namespacesBefore: string[]): Promise<void> {
  const left = () => [...namespaces().filter((name) => !namespacesBefore.includes(name)), ...everyAgentAndHost()];
  await until('the benchmarks\' namespaces, agents and hosts to go', () => (left().length === 0 ? true : undefined), 20_000).catch(() => undefined);
  assert.deepEqual(left(), []);
}

function namespaces(): string[] {
  try {
    return readdirSync('/run/netns');
  } catch {
    return [];
  }
}

describe('the benchmarks, short runs', needsRoot('the benchmarks'), () => {
  test('exec: start-up, remote calls and the restart loop, fresh and warm, against the direct case', async () => {
    const before = namespaces();
    const report = await runBench('exec-bench.ts', 'exec', { BENCH_RUNS: '2', BENCH_LOOPS: '20', BENCH_RESTARTS: '2', BENCH_RESTART_ROUNDS: '1', BENCH_ROUNDS: '1' });
    const cases = comparisons(report);
    // Issue 10's rows: sh and node to their first line fresh and warm, a lookup's start, a command's first start, the
    // command's end, the calls fresh and warm, and the restart loop for node, python3 and sh.
    for (const name of [
      'startupToFirstLine.freshAgent.sh',
      'startupToFirstLine.freshAgent.node',
      'startupToFirstLine.freshAgent.getentHosts',
      'startupToFirstLine.freshAgent.shPlanless',
      'startupToFirstLine.warmSession.sh',
      'startupToFirstLine.warmSession.node',
      'startupToExit.freshAgent.sh',
      'startupToExit.freshAgent.shDefaultTtl',
      'startupToExit.warmSession.node',
      'restartLoop.sh',
      'restartLoop.node',
      'restartLoop.python3',
      'file4KiBOpenReadClose',
      'dnsLookup',
      'tcpConnectRoundTrip',
      'udpRoundTrip',
      'dnsResolve4OverUdp',
      'warmSession.file4KiBOpenReadClose',
      'warmSession.dnsLookup',
      'warmSession.tcpConnectRoundTrip',
    ]) {
      assert.ok(cases.includes(name), `no ${name} in exec.json (it has ${cases.join(', ')})`);
    }
    assert.equal(at(report, 'restartLoop.sh.doppel.n'), 2);
    assert.match(String(report.machine), /^\d+ x /);
    await assertNothingLeft(before);
  });

  test('layer, write and incoming traffic: each case against the direct case', async () => {
    const before = namespaces();
    const layer = comparisons(await runBench('layer-bench.ts', 'layer', { BENCH_LOCAL_LOOPS: '200', BENCH_REMOTE_LOOPS: '20', BENCH_ROUNDS: '1' }));
    for (const name of ['local.statC', 'local.openReadClose4KiBNode', 'remote.openReadClose4KiBC', 'remote.connectCloseC', 'remote.udpConnectedEchoC']) assert.ok(layer.includes(name), `no ${name} in layer.json (it has ${layer.join(', ')})`);
    const write = comparisons(await runBench('write-bench.ts', 'write', { BENCH_LOOPS: '20' }));
    assert.deepEqual(write, ['create4KiBWriteClose', 'rewrite4KiBInPlaceClose', 'create100SmallWritesClose', 'remoteRoundTrip']);
    const incoming = await runBench('incoming-bench.ts', 'incoming', { BENCH_LOOPS: '50', BENCH_MIRROR_RATE: '100', BENCH_SECONDS: '1', BENCH_CONNECTIONS: '20' });
    assert.deepEqual(comparisons(incoming), ['stolenKeepAliveRequest', 'stolenWholeConnectionRequest', 'mirrored.callerLatency']);
    for (const name of ['stolenRequestsPerSecond', 'stolenWholeConnectionRequestsPerSecond']) {
      for (const key of ['direct', 'doppel', 'ratio']) assert.ok(isTime(at(incoming, `${name}.${key}`)), `${name}.${key} is ${String(at(incoming, `${name}.${key}`))}`);
    }
    // Every mirrored request reached the program, and every connection's bytes were the caller's.
    assert.equal(at(incoming, 'mirrored.requestsDelivered'), at(incoming, 'mirrored.requestsSent'));
    assert.equal(at(incoming, 'mirrored.connectionsByteExact'), at(incoming, 'mirrored.connections'));
    await assertNothingLeft(before);
  });

  test('the agent protocol: a transfer and small requests beside it', async () => {
    const report = await runBench('protocol-bench.ts', 'protocol', { BENCH_RUNS: '1' });
    const transfers = Object.entries(report).filter(([, value]) => isObject(value) && 'transfer' in value);
    assert.ok(transfers.length > 0, `protocol.json has ${Object.keys(report).join(', ')}`);
    for (const [name, value] of transfers) {
      assertSummary((value as Json).transfer, `${name}.transfer`);
      assertSummary((value as Json).smallRequestDuringThrottledTransfer, `${name}.smallRequestDuringThrottledTransfer`);
    }
  });
});

describe('the Kubernetes benchmark, a short run', needsCluster('the Kubernetes benchmark'), () => {
  test('start-ups (fresh, warm agent, warm session, process platform) and calls four ways, against bare and direct runs', async () => {
    const report = await runBench('kube-bench.ts', 'kube', { BENCH_RUNS: '2', BENCH_LOOPS: '20' });
    const starts = comparisons(report.startupToFirstLine);
    for (const name of ['kubernetes', 'kubernetesWarmSession', 'kubernetesWarmAgent', 'processPlatform']) assert.ok(starts.includes(name), `no start-up ${name} in kube.json (it has ${starts.join(', ')})`);
    // Each call: the direct case, the process platform, and Kubernetes from the node and from another machine.
    for (const call of ['file4KiBOpenReadClose', 'dnsLookup', 'tcpConnectHttpRoundTrip', 'udpRoundTrip', 'dnsResolve4OverUdp']) {
      for (const way of ['direct', 'processPlatform', 'kubernetes', 'kubernetesOtherMachine']) assertSummary(at(report, `perCall.${call}.${way}`), `perCall.${call}.${way}`);
      for (const key of ['median', 'p90', 'p99']) assert.ok(isTime(at(report, `perCall.${call}.ratio.kubernetesToDirect.${key}`)), `perCall.${call}.ratio.kubernetesToDirect.${key}`);
    }
    // Its namespace (and with it every agent Job) is gone, and so is every host its runs left (it makes no network namespace).
    assert.equal((await kubectl(['get', 'namespaces', '-o', 'name'])).split('\n').filter((name) => name.startsWith('namespace/doppel-k8s-bench-')).length, 0);
    await assertNothingLeft(namespaces());
  });
});
