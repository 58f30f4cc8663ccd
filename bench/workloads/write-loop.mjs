// Benchmark workload: N times, open a file in DIR for writing, write PIECES x SIZE bytes, close; prints the per-iteration
// times in nanoseconds as JSON. FLAGS is the open flag string ('w' creates and truncates, 'r+' rewrites in place).
import { closeSync, openSync, writeSync } from 'node:fs';

const [dir, count, flags, pieces, size] = process.argv.slice(2);
const piece = Buffer.alloc(Number(size), 'x');
const times = [];
for (let i = 0; i < Number(count); i++) {
  const path = `${dir}/bench-${i % 16}`;
  const start = process.hrtime.bigint();
  const fd = openSync(path, flags);
  for (let p = 0; p < Number(pieces); p++) writeSync(fd, piece);
  closeSync(fd);
  times.push(Number(process.hrtime.bigint() - start));
}
process.stdout.write(JSON.stringify(times));
