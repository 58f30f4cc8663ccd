// `doppel demo`: a pod built from namespaces on this machine, and a program run with and without doppel against it (root).
import type { Command } from 'commander';
import process from 'node:process';
import { createProgress } from '../progress.ts';

export function register(program: Command): void {
  program
    .command('demo')
    .description('build a small pod from Linux namespaces on this machine and show what a program sees without and with doppel (root, no cluster)')
    .option('-q, --quiet', 'no progress lines')
    .action(async (options: { quiet?: boolean }) => {
      // Loaded here, not with the CLI: the demo's servers bring node:http, which every other command would pay for.
      const [{ runDemo }, { sweepDeadSessionDirs }] = await Promise.all([import('../../demo/run-demo.ts'), import('../../proxy/proxy.ts')]);
      sweepDeadSessionDirs();
      process.exitCode = await runDemo(createProgress({ quiet: options.quiet === true }), (text) => process.stdout.write(text));
    });
}
