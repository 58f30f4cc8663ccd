// The demo's cluster-only service: a tiny HTTP server in a network namespace that only the pod is linked to.
// Usage: orders-service PORT ANSWER. Prints "listening" when it is, and exits when stdin ends (the demo is gone).
import { createServer } from 'node:http';
import process from 'node:process';

const [port, answer] = process.argv.slice(2);
// Any address: the namespace's only addresses are the ones the demo gives its link.
const server = createServer((_request, response) => response.end(`${answer}\n`));
server.listen(Number(port), '0.0.0.0', () => process.stdout.write('listening\n'));
process.stdin.on('data', () => {}).on('end', () => process.exit(0));
