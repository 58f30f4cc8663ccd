// `test/cluster/up`: builds (or reuses) the binaries, starts a single-node cluster, and prints
// `export KUBECONFIG=<path>` as its last line.
import process from 'node:process';
import { up } from './lib/cluster.ts';
import { kubeconfigPath } from './lib/settings.ts';
import { say } from './lib/steps.ts';

try {
  await up();
  say('cluster up');
  process.stdout.write(`export KUBECONFIG=${kubeconfigPath}\n`);
} catch {
  process.stderr.write('doppel test cluster: up failed; see the lines above, then run test/cluster/down\n');
  process.exitCode = 1;
}
