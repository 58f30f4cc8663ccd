// The agent bin/doppel starts beside the CLI (`--listen` on `early-<CLI pid>-<agent pid>.sock` in the warm
// directory, the layer's lookups on `early-<CLI pid>-<agent pid>.dns.sock`, its log in `early-<CLI pid>.log`), so
// that its Node.js starts with the CLI's rather than after it: the program's first remote calls (a lookup, a datagram)
// then find it ready. bin/doppel names it in DOPPEL_EARLY_AGENT (`<agent pid> <target pid> <log level> <directory>`),
// which the entry takes out of the environment before anything can pass it on; the platform adopts the agent if it is
// the one the configuration asks for, and every other way out ends it and removes its files.
import { fstatSync, openSync, readdirSync, readSync, unlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import process from 'node:process';
import { isAlive, running } from '../../process-alive.ts';
import { removeFile } from '../../remove-file.ts';
import { EARLY_DNS_SUFFIX } from '../../warm/launch-wire.ts';
import { warmDirectory } from './warm-agents.ts';

export interface ShellAgent {
  pid: number;
  socketPath: string;
  /** Its lookups socket (see earlyLookups). */
  lookupsPath: string;
  /** Its stderr, opened by us and unlinked: what it said stays readable, and no file of it outlives the session. */
  logFd: number | undefined;
}

let taken: { agentPid: number; targetPid: number; logLevel: string; dir: string } | undefined;
let started: number | undefined;

/** The pid of the agent bin/doppel started, whether this CLI adopted it or not (launch plans name it). */
export const shellAgentPid = (): number | undefined => started;

const earlyLog = (dir: string, cliPid: number) => join(dir, `early-${cliPid}.log`);
const earlySocket = (dir: string, cliPid: number, agentPid: number) => join(dir, `early-${cliPid}-${agentPid}.sock`);
/** Where it answers lookups from its start (src/agent/layer-dns.ts serveEarlyLookups). */
const earlyLookups = (dir: string, cliPid: number, agentPid: number) => join(dir, `early-${cliPid}-${agentPid}${EARLY_DNS_SUFFIX}`);

/** From the entry: DOPPEL_EARLY_AGENT leaves the environment, and an agent nobody adopts is ended when the CLI exits. */
export function takeShellAgent(env: NodeJS.ProcessEnv): boolean {
  const named = /^(\d+) (\d+) (\S+) (\/.*)$/.exec(env.DOPPEL_EARLY_AGENT ?? '');
  delete env.DOPPEL_EARLY_AGENT;
  // Never 0 or 1: signalling -0 or -1 means our own process group, or every process.
  if (!named || Number(named[1]) <= 1) return false;
  started = Number(named[1]);
  taken = { agentPid: started, targetPid: Number(named[2]), logLevel: named[3]!, dir: named[4]! };
  process.once('exit', endShellAgent);
  return true;
}

/** The agent bin/doppel started, if it is this target's with this log level, in our own warm directory, and running. */
export function adoptShellAgent(targetPid: number, logLevel: string): ShellAgent | undefined {
  const agent = taken;
  if (!agent) return undefined;
  if (agent.targetPid !== targetPid || agent.logLevel !== logLevel || resolve(agent.dir) !== warmDirectory() || !running(agent.agentPid)) {
    endShellAgent();
    return undefined;
  }
  taken = undefined;
  process.off('exit', endShellAgent);
  sweepEarlyFiles(agent.dir);
  const log = earlyLog(agent.dir, process.pid);
  let logFd: number | undefined;
  try {
    logFd = openSync(log, 'r');
    unlinkSync(log);
  } catch {
    // Its log is lost; the agent serves all the same.
  }
  return { pid: agent.agentPid, socketPath: earlySocket(agent.dir, process.pid, agent.agentPid), lookupsPath: earlyLookups(agent.dir, process.pid, agent.agentPid), logFd };
}

/** The end of what the agent wrote to its log. */
export function readShellAgentLog(agent: ShellAgent, maxBytes = 8192): string {
  if (agent.logFd === undefined) return '';
  try {
    const { size } = fstatSync(agent.logFd);
    const buffer = Buffer.alloc(Math.min(size, maxBytes));
    const read = readSync(agent.logFd, buffer, 0, buffer.length, size - buffer.length);
    return buffer.subarray(0, read).toString();
  } catch {
    return '';
  }
}

/** An adopted agent that ended: one killed left the lookups socket its session's end would have removed. */
export function removeEndedAgentFiles(agent: ShellAgent): void {
  removeFile(agent.lookupsPath);
}

/** An adopted agent that did not take its session: it serves no one, so it goes, and its socket with it. */
export function endUnadopted(agent: ShellAgent): void {
  kill(agent.pid);
  removeFile(agent.socketPath);
  removeFile(agent.lookupsPath);
}

function endShellAgent(): void {
  const agent = taken;
  taken = undefined;
  process.off('exit', endShellAgent);
  if (!agent) return;
  kill(agent.agentPid);
  for (const file of [earlySocket(agent.dir, process.pid, agent.agentPid), earlyLookups(agent.dir, process.pid, agent.agentPid), earlyLog(agent.dir, process.pid)]) removeFile(file);
}

/** The files of agents whose CLI was killed before it adopted them (their agents, orphaned, have exited). */
function sweepEarlyFiles(dir: string): void {
  try {
    for (const entry of readdirSync(dir)) {
      const cliPid = Number(/^early-(\d+)(?:-\d+(?:\.dns)?\.sock(?:\.new)?|\.log)$/.exec(entry)?.[1]);
      if (cliPid > 1 && cliPid !== process.pid && !isAlive(cliPid)) removeFile(join(dir, entry));
    }
  } catch {
    // nothing to sweep
  }
}

/** Its own process group (bin/doppel started it with setsid), so nsenter and Node.js go together. */
function kill(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}
