// The program incoming benchmarks serve: `node http-server.mjs PORT [RECORD_FILE]` answers every request "ok", prints
// "ready" once it listens, and with RECORD_FILE keeps every byte each connection brought and, on SIGTERM, writes the
// sha256 of each connection's bytes and the number of requests seen there.
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import http from 'node:http';

const [port, record] = [Number(process.argv[2]), process.argv[3]];
const connections = [];
let requests = 0;
const server = http.createServer((req, res) => {
  requests++;
  req.resume();
  req.on('end', () => res.end('ok'));
});
server.keepAliveTimeout = 60_000;
if (record) {
  server.on('connection', (socket) => {
    const chunks = [];
    connections.push(chunks);
    socket.on('data', (chunk) => chunks.push(chunk));
  });
}
server.listen(port, '0.0.0.0', () => console.log('ready'));
process.on('SIGTERM', () => {
  if (record) {
    const hashes = connections.map((chunks) => createHash('sha256').update(Buffer.concat(chunks)).digest('hex'));
    writeFileSync(record, JSON.stringify({ requests, hashes }));
  }
  process.exit(0);
});
