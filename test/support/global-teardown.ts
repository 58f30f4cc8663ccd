// The test run's global teardown: suites that needed the test cluster started it; it does not outlive the run.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { stateDir } from '../cluster/lib/settings.ts';

export function globalTeardown(): void {
  if (!existsSync(stateDir)) return;
  const down = spawnSync(fileURLToPath(new URL('../cluster/down', import.meta.url)), [], { encoding: 'utf8' });
  if (down.status !== 0) throw new Error(`test/cluster/down failed after the run: ${down.stderr.trim()}`);
}
