// Warm agents and warm session hosts (src/warm/) seen from a test: their socket files, speaking to a host as the
// layer's trampoline does, and that nothing of them is left.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sweepWarmSockets } from '../../src/platform/process/warm-agents.ts';
import { warmPath } from '../../src/platform/process/warm-path.ts';
import { decodeLaunchAnswer, encodeLaunchRequest, LAUNCH_RESP_SIZE, type LaunchAnswer } from '../../src/warm/launch-wire.ts';
import { until } from '../support/until.ts';
import { hostProcesses, leftoversAfter } from './leftovers.ts';

export const warmDir = warmPath();
const entry = fileURLToPath(new URL('../../dist/cli/entry.js', import.meta.url));

const warmFiles = (prefix: string) => (existsSync(warmDir) ? readdirSync(warmDir).filter((name) => name.startsWith(prefix)) : []);
/** The files of the hosts of target `pid`: their launch sockets, and the markers of those starting (src/warm/start-host.ts). */
export const hostFiles = (pid: number) => warmFiles(`launch-${pid}-`);
/** The launch sockets of the hosts of target `pid`. */
export const launchSockets = (pid: number) => hostFiles(pid).filter((name) => name.endsWith('.sock'));
/** The markers of the hosts of target `pid` that are starting. */
export const startingMarkers = (pid: number) => hostFiles(pid).filter((name) => name.endsWith('.sock.starting'));
/** The sockets of the warm agents of target `pid`. */
export const agentSockets = (pid: number) => warmFiles(`${pid}-`);

/**
 * Until no warm session host of target `pid` runs or starts (an earlier suite's, within its ttl): bin/doppel asks one
 * first, and starts no agent of its own when it says no. A killed host's socket or marker, which bin/doppel passes by,
 * the sweep removes.
 */
export const noHostOf = (pid: () => number) =>
  until('the warm session hosts of earlier suites to go', () => (existsSync(warmDir) && (sweepWarmSockets(warmDir), hostFiles(pid()).length > 0) ? undefined : true), 30_000);

/** The PIDs in `pgrep -a` lines. */
export const pidsOf = (lines: string[]) => lines.map((line) => Number(line.split(' ')[0]));

/** Rules of ours in the target's network namespace, in either iptables backend. */
export function chainsLeft(pid: number): string[] {
  return ['iptables-legacy-save', 'iptables-nft-save'].flatMap((save) => {
    try {
      return execFileSync('nsenter', [`--net=/proc/${pid}/ns/net`, save], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
        .split('\n')
        .filter((line) => line.includes('DOPPEL'));
    } catch {
      return [];
    }
  });
}

/** Nothing of any session on `pid`: no agent or host, no socket directory, no warm or launch socket, no rule. */
export async function nothingLeft(pid: number): Promise<void> {
  assert.deepEqual(await leftoversAfter(pid, 8000), { agents: [], dirs: [] });
  await until('the warm sockets and markers to go', () => (hostFiles(pid).length + agentSockets(pid).length === 0 ? true : undefined), 3000);
  assert.deepEqual(chainsLeft(pid), []);
}

/** Asks the host at `socket` (a name in the warm directory) to run `args` for the process `pid`, which it then stops when it goes. */
export function askHost(socket: string, request: { pid: number; args: string[]; env?: NodeJS.ProcessEnv }): Promise<LaunchAnswer> {
  const env = Object.fromEntries(Object.entries(request.env ?? process.env).filter((pair): pair is [string, string] => pair[1] !== undefined));
  return new Promise((resolve, reject) => {
    const client = connect({ path: join(warmDir, socket) });
    let answer = Buffer.alloc(0);
    client.on('data', (chunk: Buffer) => (answer = Buffer.concat([answer, chunk])));
    client.on('error', reject);
    // Closing without a byte is what an exec looks like to the host.
    client.on('end', () => {
      client.end();
      resolve(answer.length >= LAUNCH_RESP_SIZE ? decodeLaunchAnswer(answer) : { run: false });
    });
    client.write(encodeLaunchRequest({ pid: request.pid, cwd: process.cwd(), argv: [process.execPath, '--enable-source-maps', entry, ...request.args], env }));
  });
}

/** Has the host of target `pid` give its agent back (a request with another configuration), so that it waits parked. */
export async function hostGivesBack(pid: number): Promise<void> {
  const socket = await until(`a host of process ${pid} listening`, () => launchSockets(pid)[0]);
  await askHost(socket, { pid: process.pid, args: ['exec', '--target', `process/${pid}`, '--env-exclude', 'NOT_THE_SESSIONS_FILTER', '--', 'true'] });
  await until('the host to go', () => (hostProcesses(pid).length === 0 ? true : undefined));
}
