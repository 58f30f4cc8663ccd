// The trampoline's side of launch plans (layer/src/plan.c), plain and under AddressSanitizer/UBSan: /usr/bin/env with
// the layer preloaded, as bin/doppel runs it, and `sh` standing for the CLI env runs next. A plan whose checks all hold
// starts its program with the session's directory, the rules file (naming the started agent) and the listening socket
// made; any check that fails, a plan cut short, one others could have written, or no started agent: no program, and
// the CLI is told where this request's plan goes.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { getPriority as osPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { serveEarlyLookups } from '../../src/agent/layer-dns.ts';
import { createLog } from '../../src/agent/log.ts';
import { startTime } from '../../src/agent/process-identity.ts';
import { fileIdentity } from '../../src/cli/exec/launch-plan.ts';
import { encodeFastPath } from '../../src/proxy/layer-wire.ts';
import { encodePlan, PLAN_DIR_MARK, type Plan } from '../../src/warm/launch-wire.ts';
import { until } from '../support/until.ts';
import { sanitizedEnv, sanitizerReport } from './sanitized.ts';

const plainLayer = fileURLToPath(new URL('../../layer/build/libdoppel.so', import.meta.url));
const AGENT_PID = 4242;

for (const sanitized of [false, true]) {
  describe(`the trampoline's planned start${sanitized ? ' under AddressSanitizer and UBSan' : ''}`, () => {
    const root = mkdtempSync(join(tmpdir(), 'doppel-plan-layer-'));
    const [warm, plans, tmp] = ['warm', 'plans', 'tmp'].map((name) => join(root, name)) as [string, string, string];
    for (const dir of [warm, plans, tmp]) mkdirSync(dir, { mode: 0o700 });
    after(() => rmSync(root, { recursive: true, force: true }));
    const preload = () => {
      if (!sanitized) return { layer: plainLayer, env: {} };
      const { DOPPEL_LAYER_LIBRARY, LD_PRELOAD, ASAN_OPTIONS, UBSAN_OPTIONS } = sanitizedEnv();
      return { layer: `${LD_PRELOAD}:${DOPPEL_LAYER_LIBRARY}`, env: { ASAN_OPTIONS, UBSAN_OPTIONS } };
    };
    // The stand-in CLI, in C as it must reap no child it did not start (as Node.js does not; a shell or python3 does),
    // says what the trampoline told it, which file its descriptor is, and how its program ended.
    const cli = join(root, 'cli');
    writeFileSync(`${cli}.c`, [
      '#include <stdio.h>',
      '#include <stdlib.h>',
      '#include <unistd.h>',
      '#include <sys/resource.h>',
      '#include <sys/wait.h>',
      'static const char *var(const char *name) { const char *v = getenv(name); return v ? v : ""; }',
      'int main(void) {',
      '  printf("cli: planned=[%s] file=[%s] plans=[%s] priority=%d\\n", var("DOPPEL_PLANNED"), var("DOPPEL_PLAN_FILE"), var("DOPPEL_LAUNCH_PLANS"), getpriority(PRIO_PROCESS, 0));',
      '  int pid, fd, status;',
      '  char path[64], link[256] = "";',
      '  if (sscanf(var("DOPPEL_PLANNED"), "%d %d", &pid, &fd) != 2) return 0;',
      '  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);',
      '  if (readlink(path, link, sizeof link - 1) < 0) return 1;',
      '  printf("cli: fd %s\\n", link);',
      '  close(fd); /* it serves no layer: a program that asks finds the proxy gone */',
      '  fflush(stdout);',
      '  if (waitpid(pid, &status, 0) != pid) return 1;',
      '  printf("cli: status %d\\n", status);',
      '  return 0;',
      '}',
    ].join('\n'));
    execFileSync('cc', ['-Wall', '-Werror', '-o', cli, `${cli}.c`]);
    // bin/doppel's command line: the CLI's, `exec`, then `--` and the program's word and arguments.
    const request = ['--', 'sh', '-c', 'echo "program: X=$X socket=$DOPPEL_LAYER_SOCKET parent=$PPID priority=$(cut -d" " -f19 /proc/self/stat)"'];
    const trampoline = (extra: NodeJS.ProcessEnv = {}, args = request) => {
      const { layer, env } = preload();
      const result = spawnSync('/usr/bin/env', [cli, 'exec', ...args], {
        cwd: root,
        encoding: 'utf8',
        env: { PATH: process.env.PATH, TMPDIR: tmp, LD_PRELOAD: layer, DOPPEL_LAUNCH: warm, DOPPEL_LAUNCH_PRELOAD: '', DOPPEL_LAUNCH_PLANS: plans, DOPPEL_EARLY_AGENT: `${AGENT_PID} 1 info ${warm}`, ...env, ...extra },
      });
      assert.doesNotMatch(result.stderr, sanitizerReport, result.stderr);
      assert.equal(result.status, 0, result.stderr);
      return result.stdout;
    };
    // This request's plan file, as the first start (with no plan) is told it.
    const told = (out: string) => /file=\[(\S*)\]/.exec(out)![1]!;
    let key: string | undefined;
    const planFile = () => (key ??= told(trampoline()));
    const checked = join(root, 'checked.txt');
    writeFileSync(checked, 'as it was');
    const plan = (changes: Partial<Plan> = {}): Plan => ({
      checks: [
        { kind: 'content', subject: checked, expected: Buffer.from('as it was') },
        { kind: 'absent', subject: join(root, 'nothing-here'), expected: Buffer.alloc(0) },
        { kind: 'identity', subject: plainLayer, expected: fileIdentity(plainLayer) },
        { kind: 'start', subject: String(process.pid), expected: Buffer.from(startTime(process.pid)!) },
      ],
      file: '/bin/sh',
      // The program's word: its arguments are the request's.
      argv: ['sh'],
      env: ['X=1', `DOPPEL_LAYER_SOCKET=${PLAN_DIR_MARK}/layer.sock`],
      // A rules file's head (struct dp_hello_resp) and one byte of table; the trampoline puts the agent's pid at 4.
      fastPath: Buffer.concat([Buffer.alloc(24, 0xee), Buffer.from([7])]),
      ...changes,
    });
    const write = (file: string, bytes: Buffer, mode = 0o600) => {
      writeFileSync(file, bytes, { mode });
      chmodSync(file, mode);
    };
    const sessions = () => readdirSync(tmp).filter((name) => name.startsWith('doppel-'));

    test('with no plan, the CLI is told where this request\'s plan goes, and the trampoline\'s own variable is gone', () => {
      const out = trampoline();
      assert.match(out, new RegExp(`cli: planned=\\[\\] file=\\[${plans}/[0-9a-f]{16}\\] plans=\\[\\]`));
      assert.equal(planFile(), told(out), 'the same request has the same key');
      assert.notEqual(told(trampoline({ OTHER: '1' })), planFile(), 'another environment is another request');
      assert.equal(told(trampoline({ DOPPEL_EARLY_AGENT: `4343 1 info ${warm}` })), planFile(), 'each start has another agent');
      assert.equal(told(trampoline({}, ['--', 'sh', '-c', 'exit 1', 'x'])), planFile(), 'the program\'s arguments are not the request\'s');
      assert.notEqual(told(trampoline({}, ['--', 'dash', '-c', 'exit 1'])), planFile(), 'another program is another request');
      assert.notEqual(told(trampoline({}, ['-q', '--', 'sh', '-c', 'exit 1'])), planFile(), 'other flags are another request');
      // Without `--`, the program's word comes after exec's options and their values.
      const bare = told(trampoline({}, ['-t', 'process/1', 'sh', '-c', 'exit 1']));
      assert.equal(told(trampoline({}, ['-t', 'process/1', 'sh', '-t', 'x'])), bare, 'the program\'s own options are not the request\'s');
      assert.notEqual(told(trampoline({}, ['-t', 'process/2', 'sh', '-c', 'exit 1'])), bare, 'a value of exec\'s option is the request\'s');
      assert.equal(told(trampoline({}, ['-t', 'process/1', '--'])), '', 'no plan without a program\'s word');
    });

    test('a plan whose checks hold starts its program, with the session made for the CLI', () => {
      const file = planFile();
      write(file, encodePlan(plan()));
      const out = trampoline();
      const planned = /cli: planned=\[(\d+) (\d+) (-?\d+) (\S+) (\S+)\] .* priority=(-?\d+)/.exec(out);
      assert.ok(planned, out);
      const [, pid, , was, dir, used, priority] = planned;
      // The CLI yields the CPU to its program until it has its session (root may take its priority back), and is told
      // the priority it had; the program keeps that one.
      assert.equal(Number(was), osPriority());
      assert.equal(Number(priority), Number(was) + 10);
      try {
        assert.equal(used, file);
        assert.match(dir!, new RegExp(`^${tmp}/doppel-\\d+-\\w{6}$`));
        assert.match(out, /cli: fd socket:\[\d+\]/);
        // The program, a child of the process that became the CLI, with the directory in its environment.
        const parent = /program: X=1 socket=(\S+) parent=(\d+) priority=(-?\d+)/.exec(out);
        assert.ok(parent, out);
        assert.equal(parent[3], was);
        assert.equal(parent[1], `${dir}/layer.sock`);
        assert.notEqual(parent[2], pid);
        assert.equal(statSync(dir!).mode & 0o777, 0o700);
        assert.ok(statSync(join(dir!, 'layer.sock')).isSocket());
        // The lookups socket: a link to the one the started agent answers on, named for the CLI and that agent.
        assert.equal(readlinkSync(join(dir!, 'dns.sock')), join(warm, `early-${parent[2]}-${AGENT_PID}.dns.sock`));
        const rules = readFileSync(join(dir!, 'fast-path'));
        assert.equal(rules.readUInt32LE(4), AGENT_PID);
        assert.deepEqual([...rules.subarray(0, 4), ...rules.subarray(8)], [...plan().fastPath.subarray(0, 4), ...plan().fastPath.subarray(8)]);
      } finally {
        rmSync(dir!, { recursive: true, force: true });
      }
    });

    const unused = (why: string, make: (file: string) => void, extra: NodeJS.ProcessEnv = {}) =>
      test(`no program when ${why}`, () => {
        const file = planFile();
        make(file);
        const out = trampoline(extra);
        assert.doesNotMatch(out, /program:/, out);
        assert.match(out, /cli: planned=\[\]/, out);
        assert.deepEqual(sessions(), [], 'nothing made');
      });
    unused('a file holds other bytes', (file) => write(file, encodePlan(plan({ checks: [{ kind: 'content', subject: checked, expected: Buffer.from('as it wa') }] }))));
    unused('a file that should be absent is there', (file) => write(file, encodePlan(plan({ checks: [{ kind: 'absent', subject: checked, expected: Buffer.alloc(0) }] }))));
    unused('a file is another', (file) => write(file, encodePlan(plan({ checks: [{ kind: 'identity', subject: checked, expected: fileIdentity(plainLayer) }] }))));
    unused('the process started at another time', (file) => write(file, encodePlan(plan({ checks: [{ kind: 'start', subject: String(process.pid), expected: Buffer.from('1') }] }))));
    unused('the plan is cut short', (file) => write(file, encodePlan(plan()).subarray(0, -3)));
    unused('the plan is broken inside', (file) => {
      const bytes = encodePlan(plan());
      bytes.writeUInt32LE(0xffffffff, 24 + 4);
      write(file, bytes);
    });
    unused('others may write the plan', (file) => write(file, encodePlan(plan()), 0o620));
    unused('no agent was started', (file) => write(file, encodePlan(plan())), { DOPPEL_EARLY_AGENT: '' });
    test('a planned program\'s lookup waits for the started agent\'s lookups socket while that agent lives, and not once it is gone', async () => {
      const { layer, env } = preload();
      // The program under the layer, its rules saying the agent answers lookups (the handover pid is the started agent's).
      const fastPath = encodeFastPath({ rules: [], loopbackTcpLocal: false, remoteWrites: false, handoverPid: 0, udpInNetwork: false, agentDns: true, traced: false });
      const programEnv = [`DOPPEL_LAYER_SOCKET=${PLAN_DIR_MARK}/layer.sock`, 'DOPPEL_LAYER_LOG=debug', `LD_PRELOAD=${layer}`, ...Object.entries(env).map(([name, value]) => `${name}=${value}`)];
      const lookup = ['--', 'getent', 'hosts', 'localhost'];
      write(told(trampoline({}, lookup)), encodePlan(plan({ file: '/usr/bin/getent', argv: ['getent'], env: programEnv, fastPath })));
      const start = (agentPid: number) => {
        const child = spawn('/usr/bin/env', [cli, 'exec', ...lookup], {
          cwd: root,
          env: { PATH: process.env.PATH, TMPDIR: tmp, LD_PRELOAD: layer, DOPPEL_LAUNCH: warm, DOPPEL_LAUNCH_PRELOAD: '', DOPPEL_LAUNCH_PLANS: plans, DOPPEL_EARLY_AGENT: `${agentPid} 1 info ${warm}`, ...env },
        });
        const seen = { out: '', err: '' };
        child.stdout.on('data', (chunk: Buffer) => (seen.out += chunk));
        child.stderr.on('data', (chunk: Buffer) => (seen.err += chunk));
        const ended = new Promise<void>((resolve) => child.on('close', () => resolve()));
        return { seen, ended };
      };
      // This process stands for an agent still starting: the program asks at once, and it begins to answer (with the
      // agent's own lookups server) only after a while. The proxy is gone (the stand-in CLI closed its socket).
      const waiting = start(process.pid);
      const linked = (path: string) => {
        try {
          return readlinkSync(path);
        } catch {
          return undefined;
        }
      };
      const link = await until('the session\'s lookups link', () => sessions().map((name) => linked(join(tmp, name, 'dns.sock'))).find(Boolean));
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.doesNotMatch(waiting.seen.out, /localhost/, 'no answer before the agent listens');
      const server = await serveEarlyLookups(link, process.pid, createLog('warn'));
      try {
        await waiting.ended;
      } finally {
        await server?.close();
      }
      assert.doesNotMatch(waiting.seen.err, sanitizerReport, waiting.seen.err);
      assert.match(waiting.seen.out, /localhost/, waiting.seen.err);
      assert.match(waiting.seen.err, /op 7: asked the agent/);
      assert.doesNotMatch(waiting.seen.err, /asking the proxy/);
      for (const dir of sessions()) rmSync(join(tmp, dir), { recursive: true, force: true });
      // An agent that is gone is not waited for: the layer asks the proxy (gone too, so the lookup is this machine's).
      const gone = spawnSync('true').pid!;
      const unwaited = start(gone);
      await unwaited.ended;
      assert.doesNotMatch(unwaited.seen.err, sanitizerReport, unwaited.seen.err);
      assert.match(unwaited.seen.out, /localhost/, unwaited.seen.err);
      assert.match(unwaited.seen.err, /asking the proxy/);
      for (const dir of sessions()) rmSync(join(tmp, dir), { recursive: true, force: true });
    });

    test('a program that cannot run exits 127 with one line, its session left for the CLI to remove', () => {
      write(planFile(), encodePlan(plan({ file: join(root, 'no-such-program') })));
      const { layer, env } = preload();
      const result = spawnSync('/usr/bin/env', [cli, 'exec', ...request], {
        cwd: root,
        encoding: 'utf8',
        env: { PATH: process.env.PATH, TMPDIR: tmp, LD_PRELOAD: layer, DOPPEL_LAUNCH: warm, DOPPEL_LAUNCH_PRELOAD: '', DOPPEL_LAUNCH_PLANS: plans, DOPPEL_EARLY_AGENT: `${AGENT_PID} 1 info ${warm}`, ...env },
      });
      assert.doesNotMatch(result.stderr, sanitizerReport, result.stderr);
      assert.match(result.stderr, new RegExp(`doppel: cannot run ${root}/no-such-program: No such file or directory`));
      assert.match(result.stdout, new RegExp(`cli: status ${127 << 8}\n`));
      assert.equal(sessions().length, 1);
      for (const dir of sessions()) rmSync(join(tmp, dir), { recursive: true, force: true });
    });
  });
}
