// Benchmark workload: resolve one name N times with dns.resolve4 (c-ares, DNS over UDP to the resolver); prints per-query nanoseconds as JSON.
import { Resolver } from 'node:dns/promises';

const [name, count] = process.argv.slice(2);
const resolver = new Resolver();
const times = [];
for (let i = 0; i < Number(count); i++) {
  const start = process.hrtime.bigint();
  await resolver.resolve4(name);
  times.push(Number(process.hrtime.bigint() - start));
}
process.stdout.write(JSON.stringify(times));
