// `test/cluster/up`: builds (or reuses) the binaries, starts a single-node cluster, and prints
// `export KUBECONFIG=<path>` as its last line.
import process from 'node:process';
import { up } from './lib/cluster.ts';
import { kubeconfigPath } from './lib/settings.ts';
import { say, StepError } from './lib/steps.ts';

try {
  await up();
  say('cluster up');
  process.stdout.write(`export KUBECONFIG=${kubeconfigPath}\n`);
} catch (error) {
  if (error instanceof StepError && !error.logFile) process.stderr.write(`doppel test cluster: ${error.message}\n`);
  process.stderr.write('doppel test cluster: up failed; see the lines above. test/cluster/down removes what it started.\n');
  process.exitCode = 1;
}
