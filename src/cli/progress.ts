// Progress for slow steps on stderr: a spinner on a terminal, one plain line per finished step otherwise.
import ora from 'ora';
import process from 'node:process';

export interface Progress {
  step<T>(text: string, work: () => Promise<T>): Promise<T>;
  warn(text: string): void;
}

export function createProgress(options: { quiet: boolean }): Progress {
  const started = performance.now();
  const seconds = (since: number) => `${((performance.now() - since) / 1000).toFixed(2)}s`;
  const terminal = process.stderr.isTTY === true;
  return {
    async step(text, work) {
      if (options.quiet) return work();
      const since = performance.now();
      const spinner = terminal ? ora({ text, stream: process.stderr, prefixText: 'doppel' }).start() : undefined;
      try {
        const result = await work();
        const done = `${text} (${seconds(since)}, ${seconds(started)} total)`;
        if (spinner) spinner.succeed(done);
        else process.stderr.write(`doppel: ${done}\n`);
        return result;
      } catch (error) {
        // The error itself is the one line the user reads; the spinner just goes away.
        spinner?.stop();
        throw error;
      }
    },
    warn(text) {
      process.stderr.write(`doppel: warning: ${text}\n`);
    },
  };
}
