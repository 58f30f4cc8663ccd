// What a doppel session leaves in a namespace: its agent Jobs and pods, and the state of the target pods it must not change.
import assert from 'node:assert/strict';
import { kubectl, poll } from './cluster.ts';

/** The agent's ttl in tests (the default) plus the 30 s the issue allows for Kubernetes to remove a finished Job. */
export const LEFTOVER_GRACE_MS = 31_000;

/** `job.batch/NAME` and `pod/NAME` of every doppel agent in the namespace. */
export async function doppelObjects(namespace: string): Promise<string[]> {
  const out = await kubectl(['get', 'jobs,pods', '-n', namespace, '-l', 'app.kubernetes.io/managed-by=doppel', '-o', 'name']);
  return out.split('\n').filter((line) => line !== '');
}

export async function doppelJobs(namespace: string): Promise<string[]> {
  return (await doppelObjects(namespace)).filter((name) => name.startsWith('job'));
}

/** Fails unless every doppel Job and pod is gone within `LEFTOVER_GRACE_MS`. */
export async function assertNothingLeft(namespace: string): Promise<void> {
  await poll(`no doppel Job or pod left in ${namespace}`, async () => ((await doppelObjects(namespace)).length === 0 ? true : undefined), LEFTOVER_GRACE_MS);
}

/** Each pod's name, uid and per-container restart counts: a session must change none of them. */
export async function podStates(namespace: string, selector?: string): Promise<string> {
  const args = ['get', 'pods', '-n', namespace, '-o', 'jsonpath={range .items[*]}{.metadata.name} {.metadata.uid}{range .status.containerStatuses[*]} {.name}={.restartCount}{end}{"\\n"}{end}'];
  if (selector !== undefined) args.push('-l', selector);
  const out = await kubectl(args);
  // Agent pods come and go; only the targets' state counts.
  return out
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith('doppel-agent-'))
    .sort()
    .join('\n');
}

/** The `doppel.dev/target` of each agent Job: which pods have an agent now. */
export async function agentTargets(namespace: string): Promise<string[]> {
  const out = await kubectl(['get', 'jobs', '-n', namespace, '-l', 'app.kubernetes.io/managed-by=doppel', '-o', 'jsonpath={range .items[*]}{.metadata.annotations.doppel\\.dev/target}{"\\n"}{end}']);
  return out
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.split('/')[1] ?? line)
    .sort();
}

/** stderr of a failed doppel: exactly one `doppel: ... [CODE]` line and its hint. */
export function assertOneLineError(stderr: string, code: string, message: RegExp): void {
  const errors = stderr.split('\n').filter((line) => /^doppel: (?!warning:).*\[E_[A-Z_]+\]$/.test(line));
  assert.equal(errors.length, 1, `one error line expected in:\n${stderr}`);
  assert.ok(errors[0]!.endsWith(`[${code}]`), `expected ${code}: ${errors[0]}`);
  assert.match(errors[0]!, message);
  assert.match(stderr, new RegExp(`\\[${code}\\]\\n  hint: .+`), 'the error has a hint');
}
