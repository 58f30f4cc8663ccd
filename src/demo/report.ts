// The demo's words: what the pod is, how the sample program runs, and what it saw without and with doppel, side by side.
import { basename } from 'node:path';
import type { Pod } from './pod.ts';
import type { PodSpec } from './pod-spec.ts';
import { sampleArguments, sampleProgram } from './run-sample.ts';
import type { SampleReport, Seen } from './sample-program.ts';

type Item = keyof SampleReport;
const items: Item[] = ['variable', 'file', 'name', 'service'];

const PLAIN_WIDTH = 30;

/** What the sample program should see under doppel: the pod's values. */
function podValues(spec: PodSpec): Record<Item, string> {
  return {
    variable: spec.env[spec.variable] ?? '',
    file: spec.file.content.trim(),
    name: spec.service.address,
    service: spec.service.answer,
  };
}

export function describePod(spec: PodSpec, pod: Pod): string {
  const others = Object.keys(spec.env).filter((name) => name !== spec.variable);
  return [
    'doppel demo: a small "pod" made of Linux namespaces on this machine, and one program run without and with doppel.',
    '',
    `The pod is process ${pod.pid}, with network and mount namespaces of its own, and`,
    `  its own variables       ${spec.variable}=${spec.env[spec.variable]} (and ${others.join(', ')})`,
    `  a file only it sees     ${spec.file.path} (a tmpfs in its mount namespace)`,
    `  its own resolver        its /etc/hosts says ${spec.service.name} is ${spec.service.address}`,
    `  a cluster-only service  ${spec.service.url} (process ${pod.servicePid}), linked to the pod alone`,
    '',
    `The same program runs twice (${sampleProgram}):`,
    `  without doppel  node ${basename(sampleProgram)} ${sampleArguments(spec).join(' ')}`,
    `  with doppel     doppel exec --target process/${pod.pid} -- node ${basename(sampleProgram)} (same arguments)`,
    '',
  ].join('\n');
}

export function sideBySide(plain: SampleReport, withDoppel: SampleReport): string {
  const rows = items.map((item) => [item, cell(plain[item], PLAIN_WIDTH), cell(withDoppel[item], Infinity)] as const);
  const width = Math.max('without doppel'.length, ...rows.map(([, left]) => left.length));
  const line = (label: string, left: string, right: string) => `  ${label.padEnd(10)}${left.padEnd(width + 4)}${right}`.trimEnd();
  return ['', 'What it sees:', line('', 'without doppel', 'with doppel'), ...rows.map(([label, left, right]) => line(label, left, right)), ''].join('\n');
}

/** The items for which the program under doppel did not see the pod's value. */
export function mismatches(spec: PodSpec, withDoppel: SampleReport): string[] {
  const expected = podValues(spec);
  return items.filter((item) => {
    const seen = withDoppel[item];
    return !('value' in seen) || seen.value !== expected[item];
  });
}

export const closing = [
  '',
  'With doppel, the same program, unchanged and on this machine, saw the pod\'s variable, file, name and service.',
  'Try it with a program and a process of your own: sudo doppel exec --target process/PID -- COMMAND',
  '',
].join('\n');

const reasons: Record<string, string> = {
  UNSET: 'not set',
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  ENOTFOUND: 'name not found',
  EAI_AGAIN: 'no answer from DNS',
  ECONNREFUSED: 'connection refused',
  EHOSTUNREACH: 'unreachable',
  ENETUNREACH: 'unreachable',
  ETIMEDOUT: 'timed out',
};

function cell(seen: Seen, max: number): string {
  // Two spaces separate columns, so a cell never holds two in a row.
  const text = ('value' in seen ? seen.value : `(${reasons[seen.error] ?? seen.error})`).replace(/\s+/g, ' ');
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
