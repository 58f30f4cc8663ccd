// `--trace` for remote calls: each layer request's time in the proxy and, within it, each agent round trip it made,
// split into the link (both ways, framing included) and the agent's own time, which the agent puts in its answer.
// The layer's own hop (its socket to the proxy) is what the program measures minus the proxy's total. A call the layer
// settles itself (in the target's root, a socket made in its network) it times itself, and tells (`layerCall`).
import asyncHooks from 'node:async_hooks';
import type { Answer, LayerHandler } from '../../proxy/layer-handler.ts';
import { trace } from '../../trace.ts';

export interface Hop {
  op: string;
  sent: number;
  answered?: number;
  servedMs?: number | undefined;
}

interface Samples {
  layer: number[];
  proxy: number[];
  link: number[];
  agent: number[];
}

export interface CallTracer {
  /** For the agent connection's `onCall`. */
  onCall(op: string): (servedMs: number | undefined) => void;
  /** The proxy's handler, timed. */
  wrap(handler: LayerHandler): LayerHandler;
  /** Medians and p99 per kind of call, as trace lines. */
  summary(): void;
}

export function createCallTracer(): CallTracer {
  // Taken here, not imported by name: an untraced start then loads none of AsyncLocalStorage's modules.
  const current = new asyncHooks.AsyncLocalStorage<Hop[]>();
  const samples = new Map<string, Samples>();
  const entryOf = (key: string) => {
    let entry = samples.get(key);
    if (!entry) samples.set(key, (entry = { layer: [], proxy: [], link: [], agent: [] }));
    return entry;
  };
  const record = (key: string, proxy: number, hops: Hop[]) => {
    const entry = entryOf(key);
    entry.proxy.push(proxy);
    for (const hop of hops) {
      if (hop.answered === undefined) continue;
      entry.link.push(hop.answered - hop.sent - (hop.servedMs ?? 0));
      if (hop.servedMs !== undefined) entry.agent.push(hop.servedMs);
    }
  };
  return {
    onCall(op) {
      const hop: Hop = { op, sent: performance.now() };
      current.getStore()?.push(hop);
      return (servedMs) => {
        hop.answered = performance.now();
        hop.servedMs = servedMs;
      };
    },
    wrap(handler) {
      const wrapped: Record<string, unknown> = {};
      for (const [name, method] of Object.entries(handler) as [string, (...args: unknown[]) => Promise<Answer<unknown>>][]) {
        wrapped[name] = async (...args: unknown[]) => {
          if (name === 'layerCall') {
            const [call, subject, ms] = args as [string, string, number];
            entryOf(`${call} remote in the layer`).layer.push(ms);
            trace(`call ${call} ${JSON.stringify(subject)} -> remote: layer ${ms.toFixed(3)} ms`, performance.now() - ms);
            return { kind: 'remote', value: undefined };
          }
          const hops: Hop[] = [];
          const start = performance.now();
          const answer = await current.run(hops, () => method(...args));
          const end = performance.now();
          // The agent operations name the way a call went: a connect handed over (tcp.connectFd) or relayed (tcp.connect).
          record(`${name} ${answer.kind}${hops.length > 0 ? ` via ${[...new Set(hops.map((hop) => hop.op))].join('+')}` : ''}`, end - start, hops);
          trace(`call ${name} ${subject(args)} -> ${answer.kind}${answer.kind === 'error' ? ` ${answer.code}` : ''}: ${hopText(start, end, hops)}`, start);
          return answer;
        };
      }
      return wrapped as unknown as LayerHandler;
    },
    summary() {
      for (const [key, { layer, proxy, link, agent }] of samples) {
        const parts: string[] = [];
        if (layer.length > 0) parts.push(`layer ${spread(layer)}`);
        if (proxy.length > 0) parts.push(`proxy ${spread(proxy)}`);
        if (link.length > 0) parts.push(`link ${spread(link)}`);
        if (agent.length > 0) parts.push(`agent ${spread(agent)}`);
        trace(`calls ${key} x${layer.length + proxy.length}: ${parts.join(', ')} (median / p99 ms)`);
      }
    },
  };
}

/**
 * `proxy 0.021 | fs.fetch link 0.180 + agent 0.095 | proxy 0.030 = 0.326 ms`: where one call's time went. Round trips
 * made at once (a port subscribed on every replica's agent) are one step: `(incoming.subscribe link ... & ...)`.
 */
export function hopText(start: number, end: number, hops: Hop[]): string {
  const parts: string[] = [];
  let at = start;
  let together: string[] = [];
  let togetherEnd = start;
  const close = () => {
    if (together.length > 0) parts.push(together.length === 1 ? together[0]! : `(${together.join(' & ')})`);
    together = [];
    at = togetherEnd;
  };
  for (const hop of hops) {
    if (hop.answered === undefined) continue;
    if (together.length === 0 || hop.sent >= togetherEnd) {
      close();
      parts.push(`proxy ${ms(hop.sent - at)}`);
    }
    together.push(`${hop.op} link ${ms(hop.answered - hop.sent - (hop.servedMs ?? 0))}${hop.servedMs === undefined ? '' : ` + agent ${ms(hop.servedMs)}`}`);
    togetherEnd = Math.max(togetherEnd, hop.answered);
  }
  close();
  parts.push(`proxy ${ms(end - at)}`);
  return `${parts.join(' | ')} = ${ms(end - start)} ms`;
}

/** What a call was about: its path or name, or the address it connects to or binds. */
function subject(args: unknown[]): string {
  for (const arg of args) {
    if (typeof arg === 'string') return JSON.stringify(arg);
    if (typeof arg === 'object' && arg !== null && 'address' in arg && 'port' in arg) return `${String(arg.address)}:${String(arg.port)}`;
  }
  return '';
}

function spread(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return `${ms(at(0.5))} / ${ms(at(0.99))}`;
}

const ms = (value: number) => value.toFixed(3);
