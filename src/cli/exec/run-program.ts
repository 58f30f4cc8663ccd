// Runs the user's program with the terminal passed through, relays signals, and reports its exit status the shell way.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { constants } from 'node:os';
import process from 'node:process';
import { isatty } from 'node:tty';
import { DoppelError } from '../../errors.ts';
import { childExit } from '../../process-alive.ts';

export interface RunningProgram {
  kill(signal: NodeJS.Signals): void;
  /** The exit status doppel passes on: the program's code, or 128 + signal number. */
  readonly status: Promise<number>;
}

/** Signals a terminal sends to the whole foreground group: the program already has them when stdin is a terminal. */
const terminalSignals: NodeJS.Signals[] = ['SIGINT', 'SIGQUIT'];
const relayedSignals: NodeJS.Signals[] = ['SIGTERM', 'SIGHUP', 'SIGUSR1', 'SIGUSR2'];

/** `onFirstOutput` (for --trace) passes the program's stdout through a pipe to see its first byte; otherwise stdout is ours. */
export function runProgram(command: string[], env: NodeJS.ProcessEnv, onFirstOutput?: () => void): RunningProgram & { child: ChildProcess } {
  const [file, ...args] = command;
  if (file === undefined) throw new DoppelError('E_USAGE', 'no command given', { category: 'usage', hint: 'doppel exec --target KIND/NAME -- COMMAND [ARGS...]' });
  const child = spawn(file, args, { stdio: ['inherit', onFirstOutput ? 'pipe' : 'inherit', 'inherit'], env });
  if (onFirstOutput) {
    child.stdout!.once('data', onFirstOutput);
    child.stdout!.pipe(process.stdout);
  }
  const kill = (signal: NodeJS.Signals) => void child.kill(signal);
  const unhook = relaySignals(kill);
  const status = new Promise<number>((resolve, reject) => {
    child.once('error', (error: NodeJS.ErrnoException) => {
      unhook();
      if (error.code === 'ENOENT') {
        reject(new DoppelError('E_COMMAND_NOT_FOUND', `command not found: ${file}`, { category: 'usage', hint: 'check the command after --, and that it is on PATH', exitCode: 127 }));
      } else if (error.code === 'EACCES') {
        reject(new DoppelError('E_COMMAND_NOT_EXECUTABLE', `cannot run ${file}: permission denied`, { category: 'usage', hint: 'make it executable (chmod +x)', exitCode: 126 }));
      } else {
        reject(error);
      }
    });
    child.once('exit', async (code, signal) => {
      unhook();
      // What the program wrote last is still in the pipe; a child it left behind may hold the pipe open, though.
      if (child.stdout && !child.stdout.readableEnded) await Promise.race([once(child.stdout, 'end'), new Promise((resolve) => setTimeout(resolve, 500).unref())]).catch(() => undefined);
      resolve(signal ? 128 + (constants.signals[signal] ?? 0) : (code ?? 1));
    });
  });
  return { child, kill, status };
}

/** How often an adopted program is looked at besides its SIGCHLD (which may have come before the handler was set). */
const ADOPTED_POLL_MS = 100;

/**
 * The program bin/doppel's trampoline started from a plan (launch-plan.ts) before this process became the CLI: our
 * child, which Node.js did not spawn and does not reap, so its end is read from /proc at each SIGCHLD.
 */
export function adoptProgram(pid: number): RunningProgram {
  const kill = (signal: NodeJS.Signals) => {
    try {
      process.kill(pid, signal);
    } catch {
      // It has exited.
    }
  };
  const unhook = relaySignals(kill);
  const status = new Promise<number>((resolve) => {
    const look = () => {
      const ended = childExit(pid);
      if (!ended) return;
      const { status } = ended;
      process.off('SIGCHLD', look);
      clearInterval(timer);
      unhook();
      // Something else reaped it (nothing of ours does): its status is lost, and the 1 passed on is ours.
      if (status === undefined) process.stderr.write(`doppel: warning: the program (pid ${pid}) ended, but its exit status could not be read; exiting with 1\n`);
      // waitpid's form: a signal number in the low 7 bits, else the exit code in the next byte.
      resolve(status === undefined ? 1 : status & 0x7f ? 128 + (status & 0x7f) : (status >> 8) & 0xff);
    };
    process.on('SIGCHLD', look);
    const timer = setInterval(look, ADOPTED_POLL_MS);
    look();
  });
  return { kill, status };
}

/** Relays the signals the program does not get by itself; returns the undoing. */
function relaySignals(kill: (signal: NodeJS.Signals) => void): () => void {
  // Not process.stdin.isTTY: making the stdin stream loads and runs stream code the session never uses.
  const fromTerminal = isatty(0);
  const handlers = new Map<NodeJS.Signals, () => void>();
  for (const signal of [...terminalSignals, ...relayedSignals]) {
    const handler = () => {
      if (fromTerminal && terminalSignals.includes(signal)) return;
      kill(signal);
    };
    handlers.set(signal, handler);
    process.on(signal, handler);
  }
  return () => {
    for (const [signal, handler] of handlers) process.off(signal, handler);
  };
}
