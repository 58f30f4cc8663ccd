// Runs a server program under doppel (bin/doppel exec) and lets a test wait for the lines it prints while it runs.
import { startDoppel, type Finished, type RunOptions } from './run-doppel.ts';

export interface RunningServer {
  /** The next printed line (after the last one matched) that matches `pattern`; fails if doppel ends first. */
  line(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Sends a signal to doppel, which passes it on to the program. */
  signal(signal: NodeJS.Signals): void;
  readonly finished: Promise<Finished>;
}

export function serveUnderDoppel(pid: number, command: string[], options: RunOptions & { flags?: string[] } = {}): RunningServer {
  return serveWithDoppel(['exec', '--target', `process/${pid}`, '-q', ...(options.flags ?? []), '--', ...command], options);
}

/** The same for any `doppel` command line (a Kubernetes target, say). */
export function serveWithDoppel(args: string[], options: RunOptions = {}): RunningServer & { pid: number } {
  const { child, finished } = startDoppel(args, options);
  const lines: string[] = [];
  let partial = '';
  let next = 0;
  const wake = new Set<() => void>();
  child.stdout!.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop()!;
    lines.push(...parts);
    for (const notify of wake) notify();
  });
  let ended: Finished | undefined;
  void finished.then((result) => {
    ended = result;
    for (const notify of wake) notify();
  });

  return {
    line(pattern, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => settle(new Error(`no line matching ${pattern} within ${timeoutMs} ms; printed so far:\n${lines.join('\n')}`)), timeoutMs);
        const settle = (outcome: RegExpMatchArray | Error) => {
          clearTimeout(timer);
          wake.delete(look);
          if (outcome instanceof Error) reject(outcome);
          else resolve(outcome);
        };
        function look() {
          for (; next < lines.length; next++) {
            const match = pattern.exec(lines[next]!);
            if (match) {
              next++;
              return settle(match);
            }
          }
          if (ended) settle(new Error(`doppel ended (status ${ended.status}) before printing a line matching ${pattern}\nstdout: ${ended.stdout}\nstderr: ${ended.stderr}`));
        }
        wake.add(look);
        look();
      });
    },
    signal: (signal) => child.kill(signal),
    pid: child.pid!,
    finished,
  };
}
