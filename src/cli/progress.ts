// Progress for slow steps on stderr: one plain line per finished step, and on a terminal a spinner for a step that
// turns out slow. The spinner library (ora) loads only then: most steps end before it would have been drawn, and
// loading it costs about as much as the whole start-up of a warm session.
import process from 'node:process';
import { isatty } from 'node:tty';
import type { Ora } from 'ora';

/** A step that takes longer than this shows what it waits for. */
const SLOW_MS = 1000;
/** On a terminal, a step still running after this gets a spinner. */
const SPINNER_MS = 150;

export interface Progress {
  /** Runs a slow step; `work` may say what the step waits for now, which the line then shows with the time so far. */
  step<T>(text: string, work: (status: (text: string) => void) => Promise<T>): Promise<T>;
  /** A line of its own that is not a step, left out by --quiet. */
  note(text: string): void;
  warn(text: string): void;
}

export function createProgress(options: { quiet: boolean }): Progress {
  // Neither the `performance` global nor process.stderr: each loads modules (perf_hooks, a stream) a quiet start spares.
  const now = () => process.uptime() * 1000;
  const started = now();
  const seconds = (since: number) => `${((now() - since) / 1000).toFixed(2)}s`;
  const terminal = isatty(2);
  return {
    async step(text, work) {
      if (options.quiet) return work(() => {});
      const since = now();
      let status = '';
      let finished = false;
      const line = () => `${text}${status ? `: ${status}` : ''} (${seconds(since)})`;
      let spinner: Ora | undefined;
      // On a terminal the elapsed time ticks. Off one, a step that turns out slow gets a line saying what it waits
      // for, and another at each change; quick steps stay one line.
      let slow = false;
      const show = () => {
        if (spinner) spinner.text = line();
        else if (slow && status) process.stderr.write(`doppel: ${line()}\n`);
      };
      const timers: NodeJS.Timeout[] = [];
      if (terminal) {
        const startSpinner = async () => {
          const { default: ora } = await import('ora');
          if (finished) return;
          spinner = ora({ text: line(), stream: process.stderr, prefixText: 'doppel' }).start();
          timers.push(setInterval(show, SLOW_MS).unref());
        };
        // Without the spinner when it cannot load (a Node.js before 22.12 cannot require its ES module): the step's
        // lines stay.
        timers.push(setTimeout(() => void startSpinner().catch(() => undefined), SPINNER_MS).unref());
      } else {
        timers.push(setTimeout(() => ((slow = true), show()), SLOW_MS).unref());
      }
      const onStatus = (now: string) => {
        if (now === status) return;
        status = now;
        show();
      };
      try {
        const result = await work(onStatus);
        const done = `${text} (${seconds(since)}, ${seconds(started)} total)`;
        if (spinner) spinner.succeed(done);
        else process.stderr.write(terminal ? `doppel ✔ ${done}\n` : `doppel: ${done}\n`);
        return result;
      } catch (error) {
        // The error itself is the one line the user reads; the spinner just goes away.
        spinner?.stop();
        throw error;
      } finally {
        finished = true;
        for (const timer of timers) clearTimeout(timer);
      }
    },
    note(text) {
      if (!options.quiet) process.stderr.write(`doppel: ${text}\n`);
    },
    warn(text) {
      process.stderr.write(`doppel: warning: ${text}\n`);
    },
  };
}
