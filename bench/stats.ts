// Summaries for benchmark samples: percentiles in milliseconds and the doppel/direct ratios.

export interface Summary {
  n: number;
  medianMs: number;
  p90Ms: number;
  p99Ms: number;
  minMs: number;
}

export function summarize(nanoseconds: number[]): Summary {
  const sorted = [...nanoseconds].sort((a, b) => a - b);
  const at = (q: number) => (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN) / 1e6;
  return { n: sorted.length, medianMs: round(at(0.5)), p90Ms: round(at(0.9)), p99Ms: round(at(0.99)), minMs: round((sorted[0] ?? NaN) / 1e6) };
}

export interface Comparison {
  direct: Summary;
  doppel: Summary;
  ratio: { median: number; p90: number; p99: number };
  overheadMedianMs: number;
}

export function compare(direct: number[], doppel: number[]): Comparison {
  const a = summarize(direct);
  const b = summarize(doppel);
  return { direct: a, doppel: b, ratio: { median: round(b.medianMs / a.medianMs), p90: round(b.p90Ms / a.p90Ms), p99: round(b.p99Ms / a.p99Ms) }, overheadMedianMs: round(b.medianMs - a.medianMs) };
}

// Microsecond-scale calls (the layer bench) need nanoseconds kept.
const round = (value: number) => Math.round(value * 1e6) / 1e6;
