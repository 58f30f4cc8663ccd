// Ctrl-C, SIGTERM or SIGHUP while a session starts: the platform is stopped, which calls its start off, the start's
// failure takes its usual way out (everything made removed) and the CLI exits with the signal's status. Node's default,
// an exit on the spot, left a Kubernetes agent's Job running until its launcher gave up waiting for its first client
// (agent.startup_timeout). Once the program runs, its own signal handling (run-program.ts) takes over.
import { constants } from 'node:os';
import process from 'node:process';
import { DoppelError } from '../../errors.ts';

const stopSignals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export interface StartInterrupt {
  /** What to throw instead of the start's own failure, once a signal stopped it. */
  readonly reason: DoppelError | undefined;
  /** The program is started: signals are its handling's from now. */
  end(): void;
}

export function interruptibleStart(stop: () => void): StartInterrupt {
  let reason: DoppelError | undefined;
  const handlers = stopSignals.map((signal) => {
    const handler = () => {
      if (reason) return;
      reason = new DoppelError('E_INTERRUPTED', `${signal} while the session started: stopped, with nothing of it left on the target`, { category: 'usage', exitCode: 128 + constants.signals[signal] });
      stop();
    };
    process.on(signal, handler);
    return () => process.off(signal, handler);
  });
  return {
    get reason() {
      return reason;
    },
    end: () => handlers.forEach((off) => off()),
  };
}
