// The agent's side of a TCP hand-over (tcp.connectFd): a real socket connected and left unread for a real program
// (python3, pidfd_getfd) to take from this process, released by the client, by a timeout, or with the client.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fstatSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, test } from 'node:test';
import { createLog } from '../../src/agent/log.ts';
import { createHandover, type Handover } from '../../src/agent/outgoing.ts';
import { createRequestHandler } from '../../src/agent/serve.ts';
import { Connection } from '../../src/protocol/connection.ts';
import { FEATURE_CONNECT_FD } from '../../src/protocol/messages.ts';
import { connectAgent } from '../../src/proxy/agent-client.ts';
import { needsRoot } from '../support/root.ts';
import { until } from '../support/until.ts';
import { socketPair } from './pair.ts';

const closers: (() => void)[] = [];
after(() => closers.forEach((close) => close()));

/** An agent serving hand-overs (when `handover`) to a client over a real Unix socket. */
async function linked(handover: boolean, onRequest = createRequestHandler(process.pid, createLog('error'), { handover })) {
  const pair = await socketPair();
  closers.push(pair.close);
  const [client, agent] = await Promise.all([
    connectAgent(pair.a, { handshakeTimeoutMs: 2000 }),
    Connection.open(pair.b, { role: 'agent', software: 'test-agent', handshakeTimeoutMs: 2000, onRequest, ...(handover ? { features: [FEATURE_CONNECT_FD], pid: process.pid } : {}) }),
  ]);
  closers.push(() => client.close());
  return { client, agent };
}

/** A loopback server that greets each caller first, then echoes; `accepted` is its first caller. */
async function greeter(): Promise<{ server: Server; port: number; accepted: Promise<Socket> }> {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.write('220 hello\r\n');
    socket.on('data', (data) => socket.write(`echo ${data}`));
    socket.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  closers.push(() => server.close());
  const accepted = once(server, 'connection').then(([socket]) => socket as Socket);
  return { server, port: (server.address() as AddressInfo).port, accepted };
}

/** python3 takes descriptor `fd` of this process, reads the greeting, then after `go` on its stdin sends a line and reads the echo. */
function taker(fd: number) {
  const script = `import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
got = libc.syscall(438, os.pidfd_open(${process.pid}), ${fd}, 0)
s = socket.socket(fileno=got)
s.setblocking(True)
print(s.recv(100).decode(), end="", flush=True)
sys.stdin.readline()
s.sendall(b"after\\n")
print(s.recv(100).decode(), end="", flush=True)`;
  const child = spawn('python3', ['-c', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  return { child, output: () => out, done: once(child, 'exit').then(() => out) };
}

test('an agent that hands over says so in its hello; one that does not refuses tcp.connectFd', async () => {
  const offering = await linked(true);
  assert.equal(offering.client.handoverPid(), process.pid);
  const plain = await linked(false);
  assert.equal(plain.client.handoverPid(), undefined);
  await assert.rejects(plain.client.connectTcpFd('127.0.0.1', 1), { code: 'ENOSYS' });
});

test('the socket handed over is unread: a program takes it, reads the greeting, and keeps the connection after the release', needsRoot('taking a descriptor with pidfd_getfd'), async () => {
  const { client } = await linked(true);
  const { port, accepted } = await greeter();
  const handed = await client.connectTcpFd('127.0.0.1', port);
  assert.equal(handed.pid, process.pid);
  const caller = await accepted;
  let ended = false;
  caller.on('end', () => (ended = true));
  const program = taker(handed.fd);
  await until('the greeting read by the program', () => (program.output() === '220 hello\r\n' ? true : undefined));
  client.releaseFd(handed.token);
  // Our copy closed (a close on a shared socket sends nothing): the program's connection goes on.
  const inode = fstatSync(handed.fd).ino;
  await until('our copy closed', () => {
    try {
      return fstatSync(handed.fd).ino !== inode ? true : undefined;
    } catch {
      return true;
    }
  });
  assert.equal(ended, false);
  program.child.stdin.end('go\n');
  assert.equal(await program.done, '220 hello\r\necho after\n');
});

/** A client whose agent serves hand-overs with `handover` (its own release time). */
async function linkedTo(handover: Handover) {
  const onRequest = createRequestHandler(process.pid, createLog('error'));
  return linked(true, (op, args, connection) => (op === 'tcp.connectFd' ? handover.connect(args as { host: string; port: number }, connection) : onRequest(op, args, connection)));
}

test('a hand-over never released is closed after its time', async () => {
  const { client } = await linkedTo(createHandover(createLog('error'), 100));
  const { port, accepted } = await greeter();
  await client.connectTcpFd('127.0.0.1', port);
  const caller = await accepted;
  caller.resume();
  // Closed with the greeting unread: a reset, as any socket closed with data it never read.
  await new Promise((resolve) => caller.once('close', resolve));
});

test('a client that goes takes its hand-overs with it', async () => {
  const { client } = await linkedTo(createHandover(createLog('error'), 60_000));
  const { port, accepted } = await greeter();
  await client.connectTcpFd('127.0.0.1', port);
  const caller = await accepted;
  caller.resume();
  client.close();
  await new Promise((resolve) => caller.once('close', resolve));
});

test('a refused connection is ECONNREFUSED, as tcp.connect says it', async () => {
  const { client } = await linked(true);
  const { server, port } = await greeter();
  server.close();
  await once(server, 'close');
  await assert.rejects(client.connectTcpFd('127.0.0.1', port), { code: 'ECONNREFUSED' });
});
