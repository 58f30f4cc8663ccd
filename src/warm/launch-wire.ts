// The launch wire, mirroring layer/include/doppel-launch.h: the trampoline's request to a warm session host and the
// host's answer, a fixed little-endian header then NUL-terminated strings.

export const LAUNCH_ENV = 'DOPPEL_LAUNCH';
export const LAUNCH_PRELOAD_ENV = 'DOPPEL_LAUNCH_PRELOAD';
export const LAUNCH_PREFIX = 'launch-';
/** Beside where a host's socket will be, while it starts: its CLI's marker, at which the next trampoline waits. */
export const LAUNCH_STARTING = '.starting';
/** A marker this old is stale (its host killed as it started, its pid maybe reused): nobody waits there, the sweep removes it. */
export const LAUNCH_STARTING_MS = 3000;
export const LAUNCH_MAGIC = 0x314c5044;
export const LAUNCH_MAX = 16 << 20;
export const LAUNCH_REQ_SIZE = 24;
export const LAUNCH_RESP_SIZE = 16;
export const LaunchStatus = { run: 0, no: 1 } as const;
export const EXEC_FAILED = 'F'.charCodeAt(0);

export interface LaunchRequest {
  pid: number;
  cwd: string;
  /** The command that runs the CLI (node, its flags, the entry, then doppel's own arguments). */
  argv: string[];
  env: Record<string, string>;
}

/** A whole request once `buffer` holds one: the request and how many bytes it took; undefined while more must come. */
export function decodeLaunchRequest(buffer: Buffer): { request: LaunchRequest; size: number } | undefined {
  if (buffer.length < LAUNCH_REQ_SIZE) return undefined;
  if (buffer.readUInt32LE(0) !== LAUNCH_MAGIC) throw new Error('not a launch request');
  const len = buffer.readUInt32LE(4);
  if (len > LAUNCH_MAX) throw new Error(`a launch request of ${len} bytes`);
  if (buffer.length < LAUNCH_REQ_SIZE + len) return undefined;
  const strings = buffer.subarray(LAUNCH_REQ_SIZE, LAUNCH_REQ_SIZE + len).toString('utf8').split('\0');
  const [argc, envc] = [buffer.readUInt32LE(12), buffer.readUInt32LE(16)];
  // The last NUL leaves one empty piece after it.
  if (strings.length !== 1 + argc + envc + 1 || strings.at(-1) !== '') throw new Error('a malformed launch request');
  const env: Record<string, string> = {};
  for (const entry of strings.slice(1 + argc, 1 + argc + envc)) {
    const eq = entry.indexOf('=');
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return { request: { pid: buffer.readInt32LE(8), cwd: strings[0]!, argv: strings.slice(1, 1 + argc), env }, size: LAUNCH_REQ_SIZE + len };
}

export function encodeLaunchRequest(request: LaunchRequest): Buffer {
  const env = Object.entries(request.env).map(([name, value]) => `${name}=${value}`);
  const body = Buffer.from([request.cwd, ...request.argv, ...env].map((s) => `${s}\0`).join(''), 'utf8');
  const header = Buffer.alloc(LAUNCH_REQ_SIZE);
  header.writeUInt32LE(LAUNCH_MAGIC, 0);
  header.writeUInt32LE(body.length, 4);
  header.writeInt32LE(request.pid, 8);
  header.writeUInt32LE(request.argv.length, 12);
  header.writeUInt32LE(env.length, 16);
  return Buffer.concat([header, body]);
}

export type LaunchAnswer = { run: false } | { run: true; text: string; file: string; argv: string[]; env: Record<string, string> };

export function encodeLaunchAnswer(answer: LaunchAnswer): Buffer {
  const header = Buffer.alloc(LAUNCH_RESP_SIZE);
  if (!answer.run) {
    header.writeInt32LE(LaunchStatus.no, 4);
    return header;
  }
  const env = Object.entries(answer.env).map(([name, value]) => `${name}=${value}`);
  const body = Buffer.from([answer.text, answer.file, ...answer.argv, ...env].map((s) => `${s}\0`).join(''), 'utf8');
  header.writeUInt32LE(body.length, 0);
  header.writeInt32LE(LaunchStatus.run, 4);
  header.writeUInt32LE(answer.argv.length, 8);
  header.writeUInt32LE(env.length, 12);
  return Buffer.concat([header, body]);
}

export function decodeLaunchAnswer(buffer: Buffer): LaunchAnswer {
  if (buffer.readInt32LE(4) !== LaunchStatus.run) return { run: false };
  const [argc, envc] = [buffer.readUInt32LE(8), buffer.readUInt32LE(12)];
  const strings = buffer.subarray(LAUNCH_RESP_SIZE, LAUNCH_RESP_SIZE + buffer.readUInt32LE(0)).toString('utf8').split('\0');
  const env: Record<string, string> = {};
  for (const entry of strings.slice(2 + argc, 2 + argc + envc)) env[entry.slice(0, entry.indexOf('='))] = entry.slice(entry.indexOf('=') + 1);
  return { run: true, text: strings[0]!, file: strings[1]!, argv: strings.slice(2, 2 + argc), env };
}

// Launch plans (doppel-launch.h, layer/src/plan.c): the CLI's decision for a request, which the trampoline starts the
// next start of the same program from, with that start's arguments.
export const PLANS_ENV = 'DOPPEL_LAUNCH_PLANS';
export const PLAN_FILE_ENV = 'DOPPEL_PLAN_FILE';
export const PLANNED_ENV = 'DOPPEL_PLANNED';
export const PLAN_MAGIC = 0x31504c44;
export const PLAN_DIR_MARK = '@DOPPEL_SESSION_DIR@';
export const PLAN_SOCKET = 'layer.sock';
/** The lookups socket of the agent bin/doppel started: `early-<CLI pid>-<agent pid>` and this, in its directory. */
export const EARLY_DNS_SUFFIX = '.dns.sock';
export const PLAN_HDR_SIZE = 24;
export const PLAN_CHECK_SIZE = 8;
export const PlanCheckKind = { content: 0, absent: 1, identity: 2, start: 3 } as const;

export interface PlanCheck {
  kind: keyof typeof PlanCheckKind;
  subject: string;
  /** What it must be (nothing for `absent`). */
  expected: Buffer;
}

export interface Plan {
  checks: PlanCheck[];
  file: string;
  argv: string[];
  /** `NAME=value`, with PLAN_DIR_MARK for the session's directory. */
  env: string[];
  /** The session's DP_FAST_PATH_FILE. */
  fastPath: Buffer;
}

export function encodePlan(plan: Plan): Buffer {
  const strings = (list: string[]) => Buffer.from(list.map((s) => `${s}\0`).join(''), 'utf8');
  const checks = plan.checks.flatMap((check) => {
    const header = Buffer.alloc(PLAN_CHECK_SIZE);
    header.writeUInt32LE(PlanCheckKind[check.kind], 0);
    header.writeUInt32LE(check.expected.length, 4);
    return [header, strings([check.subject]), check.expected];
  });
  const body = Buffer.concat([...checks, strings([plan.file, ...plan.argv, ...plan.env]), plan.fastPath]);
  const header = Buffer.alloc(PLAN_HDR_SIZE);
  [PLAN_MAGIC, body.length, plan.checks.length, plan.argv.length, plan.env.length, plan.fastPath.length].forEach((value, i) => header.writeUInt32LE(value, i * 4));
  return Buffer.concat([header, body]);
}

export function decodePlan(buffer: Buffer): Plan {
  if (buffer.length < PLAN_HDR_SIZE || buffer.readUInt32LE(0) !== PLAN_MAGIC || buffer.readUInt32LE(4) !== buffer.length - PLAN_HDR_SIZE) throw new Error('not a launch plan');
  const [count, argc, envc, fastLen] = [8, 12, 16, 20].map((at) => buffer.readUInt32LE(at)) as [number, number, number, number];
  let at = PLAN_HDR_SIZE;
  const string = () => {
    const nul = buffer.indexOf(0, at);
    if (nul < 0) throw new Error('a malformed launch plan');
    const text = buffer.toString('utf8', at, nul);
    at = nul + 1;
    return text;
  };
  const checks: PlanCheck[] = [];
  for (let i = 0; i < count; i++) {
    const kind = (Object.keys(PlanCheckKind) as PlanCheck['kind'][]).find((name) => PlanCheckKind[name] === buffer.readUInt32LE(at));
    const len = buffer.readUInt32LE(at + 4);
    at += PLAN_CHECK_SIZE;
    const subject = string();
    if (kind === undefined) throw new Error('a malformed launch plan');
    checks.push({ kind, subject, expected: buffer.subarray(at, (at += len)) });
  }
  const file = string();
  const argv = Array.from({ length: argc }, string);
  const env = Array.from({ length: envc }, string);
  if (buffer.length - at !== fastLen) throw new Error('a malformed launch plan');
  return { checks, file, argv, env, fastPath: buffer.subarray(at) };
}

/** A host's launch socket in the warm directory: a process target's `launch-<pid>-<start>-<host pid>.sock`, a Kubernetes target's `launch-kube-<host pid>.sock`. */
export function launchSocketName(target: { pid: number; start: string } | 'kube', hostPid: number): string {
  return target === 'kube' ? `${LAUNCH_PREFIX}kube-${hostPid}.sock` : `${LAUNCH_PREFIX}${target.pid}-${target.start}-${hostPid}.sock`;
}
