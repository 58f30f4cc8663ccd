// Benchmark workload: what a file watcher (nodemon) does, inside one session: starts COMMAND N times, one after the
// other, and times each from spawn to its first line of output; prints the times in nanoseconds as JSON. The first
// start waits until the session has settled (a fresh one's agent and CLI still start beside the first program), as
// a watcher's restarts come long into a session; the direct runs wait the same.
import { spawn } from 'node:child_process';

const [count, command, ...args] = process.argv.slice(2);

function firstLine() {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let time;
    child.stdout.once('data', () => (time = Number(process.hrtime.bigint() - start)));
    child.once('error', reject);
    child.once('close', () => (time === undefined ? reject(new Error(`${command} printed nothing`)) : resolve(time)));
  });
}

await new Promise((resolve) => setTimeout(resolve, 300));
const times = [];
for (let i = 0; i < Number(count); i++) times.push(await firstLine());
process.stdout.write(JSON.stringify(times));
