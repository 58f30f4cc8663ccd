// Warm agents of process targets, seen from the CLI: a session that ends cleanly parks its agent on a Unix socket in
// our 0700 directory, named `<target pid>-<target start time>-<agent pid>.sock`, for agent.ttl; the next session on
// the same target (the same process, not a later one with its PID) connects there instead of starting an agent.
import { lstatSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import process from 'node:process';
import { isAlive } from '../../process-alive.ts';
import { removeFile } from '../../remove-file.ts';
import { WARM_MAX_LINE, WARM_OK, warmLine, type WarmClient } from '../../protocol/warm-preface.ts';
import { LAUNCH_STARTING, LAUNCH_STARTING_MS } from '../../warm/launch-wire.ts';
import { warmPath } from './warm-path.ts';

/** A warm agent answers its preface at once; one that does not is busy or going. */
const ANSWER_TIMEOUT_MS = 1000;

/** Our directory for warm agents' sockets, made 0700 if missing; undefined when it is not ours alone (then no agent stays warm). */
export function warmDirectory(): string | undefined {
  const dir = warmPath();
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') return undefined;
  }
  try {
    const stat = lstatSync(dir);
    return stat.isDirectory() && stat.uid === process.getuid?.() && (stat.mode & 0o077) === 0 ? dir : undefined;
  } catch {
    return undefined;
  }
}

export const warmSocket = (dir: string, targetPid: number, targetStart: string, agentPid: number) => join(dir, `${targetPid}-${targetStart}-${agentPid}.sock`);

/**
 * Connects to a warm agent of this very target process and has it take `client`'s session; undefined when there is
 * none (or every one is busy). Sockets of warm agents that were killed are removed on the way.
 */
export async function reachWarmAgent(dir: string, targetPid: number, targetStart: string, client: WarmClient): Promise<{ socket: Socket; agentPid: number } | undefined> {
  const ours = `${targetPid}-${targetStart}-`;
  for (const { entry, agentPid, launch } of sweepWarmSockets(dir)) {
    if (launch || !entry.startsWith(ours)) continue;
    const socket = await handOver(join(dir, entry), client);
    if (socket) return { socket, agentPid };
  }
  return undefined;
}

/** Removes the sockets of warm agents and warm session hosts (src/warm/, of any target) that were killed; returns the live ones. */
export function sweepWarmSockets(dir: string): { entry: string; agentPid: number; launch: boolean }[] {
  return readdirSync(dir).flatMap((entry) => {
    // Process targets' `<target pid>-<start>-<pid>`, Kubernetes targets' hosts `launch-kube-<pid>`; `.new` while its
    // agent binds it (renamed into place once it listens, src/agent/warm.ts), a host's `.starting` marker while it
    // starts (src/warm/start-host.ts).
    const match = /^(launch-)?(?:\d+-\d+|(?<=launch-)kube)-(\d+)\.sock(\.new|(?<=^launch-.*)\.starting)?$/.exec(entry);
    const agentPid = Number(match?.[2]);
    // Never 0 or 1: signalling those means a process group, or init.
    if (!Number.isInteger(agentPid) || agentPid <= 1) return [];
    // A marker is stale when its host is dead, or once it is too old to be waited at (that pid may be another's now).
    if (!isAlive(agentPid) || (match?.[3] === LAUNCH_STARTING && age(join(dir, entry)) >= LAUNCH_STARTING_MS)) {
      removeFile(join(dir, entry));
      return [];
    }
    // Not listening yet: no agent to reach there.
    if (match?.[3] !== undefined) return [];
    return [{ entry, agentPid, launch: match?.[1] !== undefined }];
  });
}

/** Milliseconds since the file was last modified (0 if it is gone). */
function age(path: string): number {
  try {
    return Date.now() - statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}

/**
 * Connects `socket` to the agent at `path`, sends the preface and waits for `ok`; the agent's hello may follow it in the
 * same read, so what follows is put back.
 */
export function handOver(path: string, client: WarmClient, socket = new Socket()): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    socket.connect({ path });
    let answer = Buffer.alloc(0);
    const finish = (taken: boolean) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      if (!taken) socket.destroy();
      resolve(taken ? socket : undefined);
    };
    const timer = setTimeout(() => finish(false), ANSWER_TIMEOUT_MS);
    const onError = (error?: NodeJS.ErrnoException) => {
      // Nobody listens: the agent was killed (a zombie still counts as alive until it is reaped).
      if (error?.code === 'ECONNREFUSED') removeFile(path);
      finish(false);
    };
    const onClose = () => onError();
    const onData = (chunk: Buffer) => {
      answer = Buffer.concat([answer, chunk]);
      const end = answer.indexOf(0x0a);
      if (end < 0) {
        if (answer.length > WARM_MAX_LINE) finish(false);
        return;
      }
      if (answer.subarray(0, end + 1).toString('latin1') !== WARM_OK) return finish(false);
      socket.pause();
      if (end + 1 < answer.length) socket.unshift(answer.subarray(end + 1));
      finish(true);
    };
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.write(warmLine(client));
  });
}
