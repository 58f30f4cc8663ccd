// Speaking to a warm session host (src/warm/) from a test, as the layer's trampoline does.
import { existsSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeLaunchAnswer, encodeLaunchRequest, LAUNCH_RESP_SIZE, type LaunchAnswer } from '../../src/warm/launch-wire.ts';
import { until } from '../support/until.ts';
import { hostProcesses } from './leftovers.ts';

export const warmDir = join(tmpdir(), 'doppel-warm');
const entry = fileURLToPath(new URL('../../dist/cli/entry.js', import.meta.url));

/** The launch sockets of the hosts of target `pid`. */
export const launchSockets = (pid: number) => (existsSync(warmDir) ? readdirSync(warmDir).filter((name) => name.startsWith(`launch-${pid}-`)) : []);

/** Asks the host at `socket` (a name in the warm directory) to run `args` for the process `pid`, which it then stops when it goes. */
export function askHost(socket: string, request: { pid: number; args: string[] }): Promise<LaunchAnswer> {
  const env = Object.fromEntries(Object.entries(process.env).filter((pair): pair is [string, string] => pair[1] !== undefined));
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
  const [socket] = launchSockets(pid);
  if (!socket) throw new Error(`no host of process ${pid}`);
  await askHost(socket, { pid: process.pid, args: ['exec', '--target', `process/${pid}`, '--env-exclude', 'NOT_THE_SESSIONS_FILTER', '--', 'true'] });
  await until('the host to go', () => (hostProcesses(pid).length === 0 ? true : undefined));
}
