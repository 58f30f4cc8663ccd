// iptables nat chains of one session in a network namespace: the backend the namespace already uses, a chain per
// session jumped to from PREROUTING, REDIRECT rules in it, and their removal (also from another process, through nsenter).
import { execFile, spawnSync } from 'node:child_process';
import { deadSessionChain } from './chain-notes.ts';
import { SESSION_PATTERN } from './session-id.ts';

export type Backend = 'iptables' | 'iptables-legacy' | 'iptables-nft';

/** The binaries that may hold our chains: a namespace's rules live in one of the two, whichever `iptables` names. */
const BACKENDS: readonly Backend[] = ['iptables-legacy', 'iptables-nft'];

/** Where the commands run: `[]` inside the namespace, `['nsenter', '--net=/proc/PID/ns/net', '--']` from outside it. */
export type Enter = readonly string[];

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function chainName(session: string): string {
  if (!SESSION_PATTERN.test(session)) throw new Error(`invalid session id "${session}": 1-21 letters, digits or dashes`);
  return `DOPPEL-${session}`;
}

function argv(enter: Enter, command: string, args: string[]): [string, string[]] {
  const [first, ...rest] = [...enter, command, ...args];
  return [first!, rest];
}

function run(enter: Enter, command: string, args: string[]): Promise<Result> {
  const [file, rest] = argv(enter, command, args);
  return new Promise((resolve) => {
    execFile(file, rest, { encoding: 'utf8' }, (error, stdout, stderr) => {
      const status = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
      resolve({ status, stdout, stderr: stderr || (error?.message ?? '') });
    });
  });
}

/** Synchronous, for exit handlers: the one place nothing asynchronous runs any more. */
function runSync(enter: Enter, command: string, args: string[]): Result {
  const [file, rest] = argv(enter, command, args);
  const result = spawnSync(file, rest, { encoding: 'utf8' });
  return { status: result.status, stdout: result.stdout ?? '', stderr: result.stderr || (result.error?.message ?? '') };
}

function saveCommand(backend: Backend): string {
  return backend === 'iptables' ? 'iptables-save' : `${backend}-save`;
}

/**
 * The backend whose tables hold rules in this namespace (the one with more, as Kubernetes' iptables wrapper
 * decides); `iptables` when neither has any. Listing without `-t` creates no table in either.
 */
export async function detectBackend(enter: Enter): Promise<Backend> {
  const [legacy, nft] = await Promise.all(BACKENDS.map(async (backend) => score((await run(enter, saveCommand(backend), [])).stdout)));
  if (legacy! > nft!) return 'iptables-legacy';
  if (nft! > legacy!) return 'iptables-nft';
  return 'iptables';
}

/** Rules count most; a table that exists without rules still says the namespace uses that backend. */
function score(save: string): number {
  const lines = save.split('\n');
  return lines.filter((line) => line.startsWith('-A ')).length * 1000 + lines.filter((line) => line.startsWith('*')).length;
}

async function nat(enter: Enter, backend: Backend, args: string[]): Promise<void> {
  const result = await run(enter, backend, ['-w', '-t', 'nat', ...args]);
  if (result.status !== 0) throw new Error(`${backend} -t nat ${args.join(' ')}: ${result.stderr.trim() || `exit status ${result.status}`}`);
}

/**
 * Creates the session's chain and puts the jump to it first in PREROUTING, ahead of what the namespace has. Its first
 * rule, a conntrack match, keeps the namespace tracking connections for as long as the chain exists: the kernel tracks
 * (and so translates) connections in a namespace only while some rule needs it, so deleting the last REDIRECT of a
 * namespace without a firewall would leave the connections it redirected untranslated, their answers lost.
 */
export async function createChain(enter: Enter, backend: Backend, chain: string): Promise<void> {
  await nat(enter, backend, ['-N', chain]);
  await nat(enter, backend, ['-A', chain, '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'RETURN']);
  await nat(enter, backend, ['-I', 'PREROUTING', '1', '-p', 'tcp', '-j', chain]);
}

/** Undoes createChain once its redirects are gone. */
export async function removeChain(enter: Enter, backend: Backend, chain: string): Promise<void> {
  await nat(enter, backend, ['-D', 'PREROUTING', '-p', 'tcp', '-j', chain]);
  await nat(enter, backend, ['-F', chain]);
  await nat(enter, backend, ['-X', chain]);
}

const redirect = (chain: string, port: number, toPort: number) => [chain, '-p', 'tcp', '-m', 'tcp', '--dport', String(port), '-j', 'REDIRECT', '--to-ports', String(toPort)];

export function addRedirect(enter: Enter, backend: Backend, chain: string, port: number, toPort: number): Promise<void> {
  return nat(enter, backend, ['-A', ...redirect(chain, port, toPort)]);
}

export function deleteRedirect(enter: Enter, backend: Backend, chain: string, port: number, toPort: number): Promise<void> {
  return nat(enter, backend, ['-D', ...redirect(chain, port, toPort)]);
}

/** Chains named DOPPEL-* in the nat table of `backend`, from its save output. */
function listChains(enter: Enter, backend: Backend): { chains: string[]; save: string } {
  return natChains(runSync(enter, saveCommand(backend), []).stdout);
}

/**
 * Removes the chains of the process platform's sessions (DOPPEL-<CLI pid>-<n>, its agent in the CLI's PID namespace)
 * whose CLI no longer runs: one killed outright took its agent along before either could remove them. The listing, all
 * that a sweep usually does, runs without blocking; the removal, when there is something to remove, is synchronous.
 * Returns what failed.
 */
export async function sweepDeadCliSessions(enter: Enter): Promise<string[]> {
  // One process lists both backends (each fork of a Node.js process costs milliseconds), a marker line between them;
  // the removal works from that listing.
  const marker = '# doppel: next backend';
  const { stdout } = await run(enter, 'sh', ['-c', BACKENDS.map((backend) => `${saveCommand(backend)} 2>/dev/null`).join(`; echo '${marker}'; `)]);
  const saves = stdout.split(`${marker}\n`);
  return BACKENDS.flatMap((backend, i) => {
    const { chains, save } = natChains(saves[i] ?? '');
    const picked = chains.filter(deadSessionChain);
    return picked.length > 0 ? removeFrom(enter, backend, picked, save) : [];
  });
}

function natChains(save: string): { chains: string[]; save: string } {
  const natTable = /^\*nat$([\s\S]*?)^COMMIT$/m.exec(save)?.[1] ?? '';
  const chains = [...natTable.matchAll(/^:(DOPPEL-[A-Za-z0-9-]+) /gm)].map((match) => match[1]!);
  return { chains, save: natTable };
}

/**
 * Removes `chain` and every jump to it (from any built-in chain) in `backend`; what is already gone is no error.
 * Returns what failed, for the caller's log.
 */
export function removeChainSync(enter: Enter, backend: Backend, chain: string): string[] {
  return removeFrom(enter, backend, [chain], listChains(enter, backend).save);
}

function removeFrom(enter: Enter, backend: Backend, chains: string[], natTable: string): string[] {
  const failures: string[] = [];
  const nat = (args: string[]) => {
    const result = runSync(enter, backend, ['-w', '-t', 'nat', ...args]);
    if (result.status !== 0) failures.push(`${backend} -t nat ${args.join(' ')}: ${result.stderr.trim()}`);
  };
  for (const line of natTable.split('\n')) {
    const rule = line.split(' ');
    // Our jumps have no quoted parts, so the saved words are the arguments to delete them with.
    if (rule[0] === '-A' && chains.includes(rule[rule.indexOf('-j') + 1] ?? '') && !chains.includes(rule[1]!)) nat(['-D', ...rule.slice(1)]);
  }
  for (const chain of chains) {
    if (!new RegExp(`^:${chain} `, 'm').test(natTable)) continue;
    nat(['-F', chain]);
    nat(['-X', chain]);
  }
  return failures;
}

/** Removes, in every backend, the DOPPEL-* chains that `doomed` picks (by name), with their jumps. Returns what failed. */
export function removeChainsSync(enter: Enter, doomed: (chain: string) => boolean): string[] {
  const failures: string[] = [];
  for (const backend of BACKENDS) {
    const { chains, save } = listChains(enter, backend);
    const picked = chains.filter(doomed);
    if (picked.length > 0) failures.push(...removeFrom(enter, backend, picked, save));
  }
  return failures;
}
