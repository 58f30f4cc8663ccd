// The real agent (src/agent/main.ts) as a child process serving this test process's files, on a socketpair at its fd 3 as the process platform starts it.
import { spawn } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';

export interface AgentProcess {
  /** Our end of the agent's fd 3. */
  socket: Duplex;
  /** Settles with the exit code. */
  exited: Promise<number | null>;
  log(): string;
  kill(): void;
}

export function startAgentProcess(logLevel = 'info'): AgentProcess {
  const main = fileURLToPath(new URL('../../src/agent/main.ts', import.meta.url));
  const child = spawn(process.execPath, [main, '--pid', String(process.pid), '--fd', '3', '--log-level', logLevel], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (chunk: Buffer) => (log += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    socket: child.stdio[3] as Duplex,
    exited,
    log: () => log,
    kill: () => child.kill('SIGKILL'),
  };
}
