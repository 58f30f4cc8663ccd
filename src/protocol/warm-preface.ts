// The line a client sends a warm agent (one parked with `agent.park`) before the agent protocol: the session it now
// serves (its iptables chains are named for it) and whether to time its answers for --trace. The agent answers one
// line, `ok` when it takes the client; anything else (or a closed socket) means: start a fresh agent.

export const WARM_PREFIX = 'doppel-warm ';
export const WARM_OK = 'ok\n';
/** A preface longer than this is not ours. */
export const WARM_MAX_LINE = 128;

export interface WarmClient {
  session: string;
  trace: boolean;
}

export const warmLine = ({ session, trace }: WarmClient): string => `${WARM_PREFIX}${session} ${trace ? 1 : 0}\n`;

export function parseWarmLine(line: string): WarmClient | undefined {
  const match = /^doppel-warm ([A-Za-z0-9-]{1,21}) ([01])$/.exec(line);
  return match ? { session: match[1]!, trace: match[2] === '1' } : undefined;
}
