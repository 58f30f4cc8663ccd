// Progress for slow steps on stderr: a spinner on a terminal, one plain line per finished step otherwise.
import ora from 'ora';
import process from 'node:process';

/** A step that takes longer than this shows what it waits for. */
const SLOW_MS = 1000;

export interface Progress {
  /** Runs a slow step; `work` may say what the step waits for now, which the line then shows with the time so far. */
  step<T>(text: string, work: (status: (text: string) => void) => Promise<T>): Promise<T>;
  warn(text: string): void;
}

export function createProgress(options: { quiet: boolean }): Progress {
  const started = performance.now();
  const seconds = (since: number) => `${((performance.now() - since) / 1000).toFixed(2)}s`;
  const terminal = process.stderr.isTTY === true;
  return {
    async step(text, work) {
      if (options.quiet) return work(() => {});
      const since = performance.now();
      let status = '';
      const line = () => `${text}${status ? `: ${status}` : ''} (${seconds(since)})`;
      const spinner = terminal ? ora({ text, stream: process.stderr, prefixText: 'doppel' }).start() : undefined;
      // On a terminal the elapsed time ticks. Off one, a step that turns out slow gets a line saying what it waits
      // for, and another at each change; quick steps stay one line.
      let slow = false;
      const show = () => {
        if (spinner) spinner.text = line();
        else if (slow && status) process.stderr.write(`doppel: ${line()}\n`);
      };
      const ticker = spinner ? setInterval(show, SLOW_MS).unref() : setTimeout(() => ((slow = true), show()), SLOW_MS).unref();
      const onStatus = (now: string) => {
        if (now === status) return;
        status = now;
        show();
      };
      try {
        const result = await work(onStatus);
        const done = `${text} (${seconds(since)}, ${seconds(started)} total)`;
        if (spinner) spinner.succeed(done);
        else process.stderr.write(`doppel: ${done}\n`);
        return result;
      } catch (error) {
        // The error itself is the one line the user reads; the spinner just goes away.
        spinner?.stop();
        throw error;
      } finally {
        clearTimeout(ticker);
      }
    },
    warn(text) {
      process.stderr.write(`doppel: warning: ${text}\n`);
    },
  };
}
