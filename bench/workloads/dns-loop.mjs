// Benchmark workload: resolve one name N times with dns.lookup (getaddrinfo); prints per-lookup nanoseconds as JSON.
import { lookup } from 'node:dns/promises';

const [name, count] = process.argv.slice(2);
const times = [];
for (let i = 0; i < Number(count); i++) {
  const start = process.hrtime.bigint();
  await lookup(name, { family: 4 });
  times.push(Number(process.hrtime.bigint() - start));
}
process.stdout.write(JSON.stringify(times));
