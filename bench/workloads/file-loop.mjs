// Benchmark workload: open + read + close one file N times; prints the per-iteration times in nanoseconds as JSON.
import { closeSync, openSync, readSync } from 'node:fs';

const [path, count] = process.argv.slice(2);
const buffer = Buffer.alloc(64 * 1024);
const times = [];
for (let i = 0; i < Number(count); i++) {
  const start = process.hrtime.bigint();
  const fd = openSync(path, 'r');
  let total = 0;
  for (let n; (n = readSync(fd, buffer, 0, buffer.length, null)) > 0; ) total += n;
  closeSync(fd);
  times.push(Number(process.hrtime.bigint() - start));
  if (total === 0) throw new Error(`${path} read as empty`);
}
process.stdout.write(JSON.stringify(times));
