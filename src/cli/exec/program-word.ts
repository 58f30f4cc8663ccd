// Where the program's word is on a `doppel exec` command line: after exec's options, or after `--`. What follows it is
// the program's own (exec's passThroughOptions). Read before commander loads, by the entry's early agent and by launch
// plans; bin/doppel and layer/src/plan.c read it the same way, with the same list.

/** The options of `doppel exec` that take a value (commands/exec.ts). */
export const EXEC_VALUE_OPTIONS = [
  '-t', '--target', '-n', '--target-namespace', '-a', '--agent-namespace', '-i', '--agent-image', '--agent-ttl', '--agent-startup-timeout',
  '--agent-log-level', '--fs-mode', '-x', '--env-exclude', '-s', '--env-include', '--env-file', '-f', '--config-file', '--context',
];

/** The index of the program's word in `args`, whose exec options start at `from`; -1 when there is none. */
export function programWordAt(args: readonly string[], from: number): number {
  for (let i = from; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') return i + 1 < args.length ? i + 1 : -1;
    if (!arg.startsWith('-')) return i;
    if (!arg.includes('=') && EXEC_VALUE_OPTIONS.includes(arg)) i++;
  }
  return -1;
}
