// Benchmark workload: connect, send a redis PING, read +PONG, close — N times; prints per-iteration nanoseconds as JSON.
import { connect } from 'node:net';

const [host, port, count] = process.argv.slice(2);
const once = () =>
  new Promise((resolve, reject) => {
    const socket = connect({ host, port: Number(port), noDelay: true });
    let reply = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk;
      if (reply.includes('\r\n')) {
        socket.end();
        reply.startsWith('+PONG') ? resolve() : reject(new Error(`unexpected reply ${reply}`));
      }
    });
    socket.on('error', reject);
  });
const times = [];
for (let i = 0; i < Number(count); i++) {
  const start = process.hrtime.bigint();
  await once();
  times.push(Number(process.hrtime.bigint() - start));
}
process.stdout.write(JSON.stringify(times));
