// Benchmark workload: one UDP socket sends a datagram to an echo and waits for its answer, N times; prints per-exchange nanoseconds as JSON.
import { createSocket } from 'node:dgram';

const [host, port, count] = process.argv.slice(2);
const socket = createSocket('udp4');
const once = () =>
  new Promise((resolve) => {
    socket.once('message', resolve);
    socket.send('ping', Number(port), host);
  });
const times = [];
for (let i = 0; i < Number(count); i++) {
  const start = process.hrtime.bigint();
  await once();
  times.push(Number(process.hrtime.bigint() - start));
}
socket.close();
process.stdout.write(JSON.stringify(times));
