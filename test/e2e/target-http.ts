// The test world's target server as callers on the host reach it: curl, and waiting for the target's own answer.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { World } from '../world/world.ts';

const run = promisify(execFile);

export const targetUrl = (world: World, path: string) => `http://${world.target.address}:${world.target.http.port}${path}`;

export async function curlTarget(world: World, path: string): Promise<string> {
  return (await run('curl', ['-sS', '-m', '5', targetUrl(world, path)])).stdout;
}

/** The target's own answer comes back (polled: an unsubscribe follows a program's close or exit asynchronously). */
export async function targetAnswersAgain(world: World): Promise<void> {
  const deadline = Date.now() + 5000;
  let last = '';
  while (Date.now() < deadline) {
    last = await curlTarget(world, '/again').catch((error: Error) => error.message);
    if (last === world.target.http.body) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.fail(`the target did not answer again; last answer: ${last}`);
}
