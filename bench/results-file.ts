// Where every benchmark writes its figures: bench/results/NAME.json, or BENCH_RESULTS's directory (the benchmarks'
// own test runs them there, so that a short run never replaces a real one's figures).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function writeResults(name: string, results: unknown): void {
  const dir = process.env.BENCH_RESULTS || fileURLToPath(new URL('./results/', import.meta.url));
  const text = `${JSON.stringify(results, null, 2)}\n`;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.json`), text);
  process.stdout.write(text);
}
