// Benchmark workload: fs.statSync of one path N times; prints the per-iteration times in nanoseconds as JSON.
import { statSync } from 'node:fs';

const [path, count] = process.argv.slice(2);
const times = [];
for (let i = 0; i < Number(count); i++) {
  const start = process.hrtime.bigint();
  statSync(path);
  times.push(Number(process.hrtime.bigint() - start));
}
process.stdout.write(JSON.stringify(times));
