// The host's `unreachable` route for the demo's addresses, so nothing sent to them leaves the machine.
// A route carries no owner, so its metric is the demo's PID: a later demo can tell a dead run's route from a live one's.
import { spawnSync } from 'node:child_process';
import { DoppelError } from '../errors.ts';
import { isAlive } from '../process-alive.ts';
import { DEMO_RANGE } from './pod-spec.ts';

export function addUnreachableRoute(owner: number): void {
  // `replace`: a route left by a dead process that had our PID is ours to reuse.
  const result = spawnSync('ip', ['route', 'replace', 'unreachable', DEMO_RANGE, 'metric', String(owner)], { encoding: 'utf8' });
  if (result.status !== 0) {
    throw new DoppelError('E_DEMO_SETUP', `could not add the route that keeps ${DEMO_RANGE} on this machine: ${(result.stderr || result.error?.message || '').trim()}`, {
      category: 'usage',
      hint: 'the demo needs iproute2 (`ip`) and root',
    });
  }
}

export function removeUnreachableRoute(owner: number): void {
  spawnSync('ip', ['route', 'del', 'unreachable', DEMO_RANGE, 'metric', String(owner)], { stdio: 'ignore' });
}

/** The owners of the demo routes on this machine. */
export function unreachableRouteOwners(): number[] {
  const listed = spawnSync('ip', ['route', 'show', 'type', 'unreachable'], { encoding: 'utf8' }).stdout ?? '';
  const pattern = new RegExp(`^unreachable ${DEMO_RANGE.replaceAll('.', '\\.')} .*\\bmetric (\\d+)`);
  return listed.split('\n').flatMap((line) => {
    const owner = pattern.exec(line)?.[1];
    return owner === undefined ? [] : [Number(owner)];
  });
}

/** Removes the routes of demos that were killed before they could clean up. */
export function sweepDeadDemoRoutes(): void {
  for (const owner of unreachableRouteOwners()) if (!isAlive(owner)) removeUnreachableRoute(owner);
}
