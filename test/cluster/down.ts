// `test/cluster/down`: stops every cluster process and removes all it made on the host.
import process from 'node:process';
import { down } from './lib/cluster.ts';
import { step } from './lib/steps.ts';

try {
  await step('cluster down', down);
} catch {
  process.exitCode = 1;
}
