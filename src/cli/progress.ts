// Progress display for slow steps: a spinner on a terminal, one plain line per finished step otherwise, always on stderr.
import ora from 'ora';
import process from 'node:process';

export interface Progress {
  step<T>(text: string, work: () => Promise<T>): Promise<T>;
  warn(text: string): void;
}

export function createProgress(options: { quiet: boolean }): Progress {
  const started = performance.now();
  const elapsed = (since: number) => `${((performance.now() - since) / 1000).toFixed(2)}s`;
  return {
    async step(text, work) {
      if (options.quiet) return work();
      const since = performance.now();
      const spinner = ora({ text, stream: process.stderr, prefixText: 'doppel' });
      if (spinner.isEnabled) spinner.start();
      try {
        const result = await work();
        spinner.succeed(`${text} (${elapsed(since)}, ${elapsed(started)} total)`);
        return result;
      } catch (error) {
        spinner.fail(`${text} failed after ${elapsed(since)}`);
        throw error;
      }
    },
    warn(text) {
      process.stderr.write(`doppel: warning: ${text}\n`);
    },
  };
}
