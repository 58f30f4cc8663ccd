// Timings for `doppel exec --trace` (or DOPPEL_TRACE=1): where a session's start-up and each remote call spend their
// time. Every line carries milliseconds since this process started (`performance.now()`), so that what happens before
// the first mark (Node's own start, module loading) shows as the first mark's time.
import process from 'node:process';

let on = false;

/** Turned on by the CLI's entry from its arguments, before its other modules load, and by the agent's `--trace`. */
export function enableTrace(): void {
  on = true;
}

export function tracing(): boolean {
  return on;
}

/** `--trace` among the CLI's own arguments (before `--`), or DOPPEL_TRACE=1. */
export function traceRequested(argv: readonly string[], env: NodeJS.ProcessEnv): boolean {
  if (env.DOPPEL_TRACE === '1') return true;
  for (const arg of argv) {
    if (arg === '--') return false;
    if (arg === '--trace') return true;
  }
  return false;
}

/** One line on stderr: `doppel: trace <ms since start> <what>`. */
export function trace(what: string, at?: number): void {
  // Not a default parameter: the `performance` global loads perf_hooks (about 1 ms), which an untraced start spares.
  if (on) process.stderr.write(`doppel: trace ${(at ?? performance.now()).toFixed(3).padStart(10)} ms  ${what}\n`);
}

/** The agent's marks travel on its stderr with wall-clock times, which the CLI turns into its own process time. */
export function agentTraceLine(what: string, at = performance.now()): string {
  return `agent: trace @${(performance.timeOrigin + at).toFixed(3)} ${what}\n`;
}

/** A line of the agent's stderr that is one of its marks, in the CLI's time; undefined for any other line. */
export function parseAgentTrace(line: string): { at: number; what: string } | undefined {
  const match = /^agent: trace @(\d+(?:\.\d+)?) (.*)$/.exec(line);
  return match ? { at: Number(match[1]) - performance.timeOrigin, what: `agent: ${match[2]}` } : undefined;
}
