// Benchmark workload: connect, send one HTTP GET, read the whole response (by its Content-Length), close — N times;
// prints per-iteration nanoseconds as JSON.
import { connect } from 'node:net';

const [host, port, path, count] = process.argv.slice(2);
const once = () =>
  new Promise((resolve, reject) => {
    const socket = connect({ host, port: Number(port), noDelay: true });
    let response = Buffer.alloc(0);
    socket.on('connect', () => socket.write(`GET ${path} HTTP/1.0\r\nHost: ${host}\r\n\r\n`));
    socket.on('data', (chunk) => {
      response = Buffer.concat([response, chunk]);
      const headerEnd = response.indexOf('\r\n\r\n');
      if (headerEnd < 0) return;
      const head = response.subarray(0, headerEnd).toString('latin1');
      const length = /^content-length:\s*(\d+)/im.exec(head);
      if (!length) return reject(new Error(`no Content-Length in ${JSON.stringify(head)}`));
      if (response.length - headerEnd - 4 < Number(length[1])) return;
      socket.end();
      head.startsWith('HTTP/1.') && / 200 /.test(head) ? resolve() : reject(new Error(`unexpected reply ${head.split('\r\n')[0]}`));
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
