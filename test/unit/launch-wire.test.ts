// The TypeScript side of the launch wire agrees with layer/include/doppel-launch.h: sizes, constants, and a request
// built by C as the trampoline builds it.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import {
  decodeLaunchAnswer, decodeLaunchRequest, encodeLaunchAnswer, encodeLaunchRequest, EXEC_FAILED, LAUNCH_ENV, LAUNCH_MAGIC, LAUNCH_MAX, LAUNCH_PREFIX,
  LAUNCH_PRELOAD_ENV, LAUNCH_REQ_SIZE, LAUNCH_RESP_SIZE, LaunchStatus, decodePlan, encodePlan, PLAN_CHECK_SIZE, PLAN_DIR_MARK, PLAN_FILE_ENV, PLAN_HDR_SIZE,
  PLAN_MAGIC, PLAN_SOCKET, PlanCheckKind, EARLY_DNS_SUFFIX, PLANNED_ENV, PLANS_ENV,
} from '../../src/warm/launch-wire.ts';

function runC(body: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'doppel-launch-wire-'));
  try {
    const include = fileURLToPath(new URL('../../layer/include/', import.meta.url));
    writeFileSync(join(dir, 'wire.c'), `#include <stdio.h>
#include <string.h>
#include "doppel-launch.h"
int main(void) {
${body}
return 0;
}`);
    execFileSync('cc', ['-Wall', '-Werror', '-I', include, '-o', join(dir, 'wire'), join(dir, 'wire.c')]);
    return execFileSync(join(dir, 'wire'), { encoding: 'utf8' }).trim();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('sizes, statuses and names match the C header', () => {
  const c = runC('printf("%zu %zu %u %u %d %d %d %s %s %s", sizeof(struct dp_launch_req), sizeof(struct dp_launch_resp), DP_LAUNCH_MAGIC, DP_LAUNCH_MAX, DP_LAUNCH_RUN, DP_LAUNCH_NO, DP_LAUNCH_EXEC_FAILED, DP_ENV_LAUNCH, DP_ENV_LAUNCH_PRELOAD, DP_LAUNCH_PREFIX);');
  assert.equal(c, [LAUNCH_REQ_SIZE, LAUNCH_RESP_SIZE, LAUNCH_MAGIC, LAUNCH_MAX, LaunchStatus.run, LaunchStatus.no, EXEC_FAILED, LAUNCH_ENV, LAUNCH_PRELOAD_ENV, LAUNCH_PREFIX].join(' '));
});

test('a request as C lays it out decodes, whole or not at all', () => {
  const hex = runC(`struct dp_launch_req r = {DP_LAUNCH_MAGIC, 0, 4242, 2, 1, 0};
    const char body[] = "/home/dev\\0node\\0exec\\0A=b=c";
    r.len = sizeof body;
    const unsigned char *p = (const void *)&r;
    for (size_t i = 0; i < sizeof r; i++) printf("%02x", p[i]);
    for (size_t i = 0; i < sizeof body; i++) printf("%02x", (unsigned char)body[i]);`);
  const bytes = Buffer.from(hex, 'hex');
  assert.equal(decodeLaunchRequest(bytes.subarray(0, bytes.length - 1)), undefined);
  assert.deepEqual(decodeLaunchRequest(Buffer.concat([bytes, Buffer.from('next')])), { request: { pid: 4242, cwd: '/home/dev', argv: ['node', 'exec'], env: { A: 'b=c' } }, size: bytes.length });
  assert.throws(() => decodeLaunchRequest(Buffer.alloc(LAUNCH_REQ_SIZE)), /not a launch request/);
  const request = { pid: 7, cwd: '/', argv: ['a', ''], env: { EMPTY: '', X: 'y' } };
  assert.deepEqual(decodeLaunchRequest(encodeLaunchRequest(request))?.request, request);
});

test('answers: no is a bare header; run carries the text, the file, argv and the environment', () => {
  assert.deepEqual(decodeLaunchAnswer(encodeLaunchAnswer({ run: false })), { run: false });
  assert.equal(encodeLaunchAnswer({ run: false }).length, LAUNCH_RESP_SIZE);
  const run = { run: true as const, text: 'doppel: hi\n', file: '/usr/bin/sh', argv: ['sh', '-c', 'echo $X'], env: { X: '1', LD_PRELOAD: '/l.so' } };
  assert.deepEqual(decodeLaunchAnswer(encodeLaunchAnswer(run)), run);
});

test('launch plans: sizes, names and check kinds match the C header, and a plan decodes as it was encoded', () => {
  const c = runC('printf("%zu %zu %u %d %d %d %d %s %s %s %s %s %s %s", sizeof(struct dp_plan_hdr), sizeof(struct dp_plan_check), DP_PLAN_MAGIC, DP_CHECK_CONTENT, DP_CHECK_ABSENT, DP_CHECK_IDENTITY, DP_CHECK_START, DP_ENV_LAUNCH_PLANS, DP_ENV_PLAN_FILE, DP_ENV_PLANNED, DP_ENV_EARLY_AGENT, DP_PLAN_DIR_MARK, DP_PLAN_SOCKET, DP_EARLY_DNS_SUFFIX);');
  const { content, absent, identity, start } = PlanCheckKind;
  assert.equal(c, [PLAN_HDR_SIZE, PLAN_CHECK_SIZE, PLAN_MAGIC, content, absent, identity, start, PLANS_ENV, PLAN_FILE_ENV, PLANNED_ENV, 'DOPPEL_EARLY_AGENT', PLAN_DIR_MARK, PLAN_SOCKET, EARLY_DNS_SUFFIX].join(' '));
  const plan = {
    checks: [
      { kind: 'content' as const, subject: '/w/.doppel/config.json', expected: Buffer.from('{}') },
      { kind: 'absent' as const, subject: '/w/.mirrord/mirrord.json', expected: Buffer.alloc(0) },
      { kind: 'start' as const, subject: '42', expected: Buffer.from('1234') },
    ],
    file: '/usr/bin/sh',
    argv: ['sh', '-c', 'echo $X'],
    env: ['X=1', `DOPPEL_LAYER_SOCKET=${PLAN_DIR_MARK}/layer.sock`],
    fastPath: Buffer.from([1, 2, 3, 4]),
  };
  assert.deepEqual(decodePlan(encodePlan(plan)), plan);
  assert.throws(() => decodePlan(encodePlan(plan).subarray(0, -1)), /not a launch plan/);
});
