// Incoming traffic through the real agent in the test world, in both iptables backends: steal, mirror, unsubscribe,
// flushing kept-alive connections, and no chain of ours left on any way out (the agent's own, or the platform's after SIGKILL).
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, test } from 'node:test';
import { chainNoted, forgetChain, netnsOf, noteChain, NOTES_DIR } from '../../src/agent/chain-notes.ts';
import { connectAgent, type AgentClient } from '../../src/proxy/agent-client.ts';
import type { IncomingRequests } from '../../src/proxy/incoming.ts';
import { agentProcesses } from '../e2e/leftovers.ts';
import { needsRoot } from '../support/root.ts';
import { until } from '../support/until.ts';
import { createWorld, type World } from '../world/world.ts';
import { agentSession, incomingRequests } from './agent-session.ts';

const gate = needsRoot('incoming traffic through the agent');
const agentMain = fileURLToPath(new URL('../../src/agent/main.ts', import.meta.url));
const backends = ['legacy', 'nft'] as const;
/** Undone after each test, last first. */
const closers: (() => unknown)[] = [];


for (const backend of backends) {
  describe(`incoming traffic, ${backend} iptables in the target's namespace`, gate, () => {
    let world: World;
    const target = () => `http://${world.target.address}:${world.target.http.port}`;
    const enter = () => ['nsenter', `--net=/proc/${world.target.pid}/ns/net`, '--'];

    /** Our chains in the target's namespace, per backend, from each one's save output. */
    const chains = () =>
      Object.fromEntries(backends.map((b) => [b, [...execFileSync(enter()[0]!, [...enter().slice(1), `iptables-${b}-save`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).matchAll(/^:(DOPPEL-\S+)/gm)].map((m) => m[1]!)])) as Record<(typeof backends)[number], string[]>;
    const noChains = { legacy: [], nft: [] };
    /** The notes of chains in the target's namespace (src/agent/chain-notes.ts). */
    const notesHere = () => {
      const netns = netnsOf(world.target.pid)!;
      try {
        return readdirSync(NOTES_DIR).filter((note) => note.startsWith(`${netns}-`));
      } catch {
        return [];
      }
    };
    /** No chain of ours in the target's namespace, and no note of one. */
    const assertNoneLeft = () => {
      assert.deepEqual(chains(), noChains);
      assert.deepEqual(notesHere(), []);
    };

    before(async () => {
      world = await createWorld({ firewall: backend });
    });
    afterEach(async () => {
      while (closers.length > 0) await closers.pop()!();
      assert.deepEqual(agentProcesses(world.target.pid), [], 'an agent was left running');
      assert.deepEqual(chains(), noChains, 'a chain of ours was left in the target\'s namespace');
    });
    after(async () => {
      await world?.destroy();
    });

    const platformSession = () => agentSession(world.target.pid, closers);

    /** The proxy's incoming side over `client`, with the program's listener played by `local`. */
    async function subscribed(client: AgentClient, mode: 'steal' | 'mirror', local: Server, flush = true): Promise<IncomingRequests> {
      const incoming = incomingRequests(client, { feature: { network: { incoming: mode } }, agent: { flush_connections: flush } }, closers);
      await incoming.listen(world.target.http.port, { family: 4, address: '127.0.0.1', port: (local.address() as AddressInfo).port });
      return incoming;
    }

    test('steal: the caller gets the local answer, the target\'s server gets nothing, and the real caller is known', async () => {
      const { client } = await platformSession();
      let incoming: IncomingRequests | undefined;
      const seen: unknown[] = [];
      const local = await listening(createHttpServer((req, res) => {
        seen.push(incoming!.peerOf(req.socket.remotePort!));
        res.end('answered by the developer');
      }));
      incoming = await subscribed(client, 'steal', local);
      const made = chains();
      assert.match(made[backend].join(' '), new RegExp(`^DOPPEL-${process.pid}-\\d+$`), `one chain, named for this process, in the namespace's backend (${backend})`);
      assert.deepEqual(made[backend === 'legacy' ? 'nft' : 'legacy'], []);

      const before = world.target.http.requests().length;
      const path = `/stolen-${randomBytes(4).toString('hex')}`;
      assert.equal(await curl(`${target()}${path}`), 'answered by the developer');
      assert.equal(await curl(`${target()}${path}?again`), 'answered by the developer');
      assert.deepEqual(world.target.http.requests().slice(before), []);
      assert.equal(seen.length, 2);
      for (const caller of seen as { peer: { address: string; port: number }; local: { address: string; port: number } }[]) {
        assert.equal(caller.peer.address, world.target.hostAddress);
        assert.deepEqual(caller.local, { address: world.target.address, port: world.target.http.port });
      }
    });

    test('mirror: the target\'s server answers, and the client gets a byte-exact copy of what the caller sent', async () => {
      const { client } = await platformSession();
      const copies = await copyCollector();
      await subscribed(client, 'mirror', copies.server);

      const path = `/mirrored-${randomBytes(4).toString('hex')}`;
      assert.equal(await curl(`${target()}${path}`), world.target.http.body);
      assert.ok(world.target.http.requests().includes(`GET ${path}`));
      const curlCopy = (await copies.next()).toString('latin1');
      assert.ok(curlCopy.startsWith(`GET ${path} HTTP/1.1\r\nHost: ${world.target.address}:${world.target.http.port}\r\nUser-Agent: curl/`), curlCopy);
      assert.ok(curlCopy.endsWith('\r\n\r\n'), curlCopy);

      // A request with 1 MiB of random body, in the caller's own pieces: the copy is every byte, in order.
      const body = randomBytes(1024 * 1024);
      const sent = Buffer.concat([Buffer.from(`POST /upload HTTP/1.1\r\nHost: pod\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`), body]);
      const answer = await rawExchange(world.target.address, world.target.http.port, sent);
      assert.match(answer.toString('latin1'), new RegExp(`^HTTP/1\\.1 200 OK[\\s\\S]*${world.target.http.body}$`));
      assert.ok((await copies.next()).equals(sent), 'the copy differs from what the caller sent');
      assert.ok(world.target.http.requests().includes('POST /upload'));
    });

    test('steal while the program\'s listener is gone: the caller is reset at once, not left waiting', async () => {
      const { client } = await platformSession();
      const local = await listening(createServer());
      await subscribed(client, 'steal', local);
      local.close();
      const before = world.target.http.requests().length;
      // Reset right after the handshake: curl says so, or, if the reset beat its check, that it could not connect.
      await assert.rejects(curl(target()), /reset|couldn't connect/i);
      assert.equal(world.target.http.requests().length, before);
    });

    test('unsubscribe: the target answers again, and the chain is gone', async () => {
      const { client } = await platformSession();
      const local = await listening(createHttpServer((_, res) => res.end('answered by the developer')));
      const incoming = await subscribed(client, 'steal', local);
      assert.equal(await curl(target()), 'answered by the developer');
      await incoming.unlisten(world.target.http.port);
      assertNoneLeft();
      assert.equal(await curl(target()), world.target.http.body);
      // And a port can be taken again afterwards.
      await incoming.listen(world.target.http.port, { family: 4, address: '127.0.0.1', port: (local.address() as AddressInfo).port });
      assert.equal(await curl(target()), 'answered by the developer');
    });

    test('a steal flushes the target\'s kept-alive connections (agent.flush_connections), and only when asked', async () => {
      for (const flush of [false, true]) {
        const { client } = await platformSession();
        const local = await listening(createHttpServer((_, res) => res.end('answered by the developer')));
        const kept = await keptAlive(world.target.address, world.target.http.port);
        assert.equal(await kept.get('/first'), world.target.http.body);
        const incoming = await subscribed(client, 'steal', local, flush);
        if (flush) await assert.rejects(kept.get('/second'), { code: 'ECONNRESET' });
        else assert.equal(await kept.get('/second'), world.target.http.body, 'without a flush, an open connection stays with the target');
        kept.close();
        assert.equal(await curl(target()), 'answered by the developer');
        incoming.close();
        while (closers.length > 0) await closers.pop()!();
      }
    });

    test('kill -9 of the agent: its platform removes the chain before reporting it gone, and the target answers', async (t) => {
      const { client, transport } = await platformSession();
      const local = await listening(createHttpServer((_, res) => res.end('answered by the developer')));
      await subscribed(client, 'steal', local);
      assert.equal(await curl(target()), 'answered by the developer');
      const [agent] = agentProcesses(world.target.pid);
      const killedAt = Date.now();
      process.kill(Number(agent!.split(' ')[0]), 'SIGKILL');
      assert.equal(await transport.exited, 'was killed by SIGKILL');
      assertNoneLeft();
      assert.equal(await curl(target()), world.target.http.body);
      t.diagnostic(`the target answered again ${Date.now() - killedAt} ms after the kill`);
    });

    test('a fresh agent removes the chains of dead sessions once its session is quiet, and keeps a live one\'s', async () => {
      const dead = await deadPid();
      const iptables = (args: string[]) => execFileSync(enter()[0]!, [...enter().slice(1), `iptables-${backend}`, '-w', '-t', 'nat', ...args]);
      const netns = netnsOf(world.target.pid)!;
      for (const chain of [`DOPPEL-${dead}-0`, `DOPPEL-${process.pid}-999`]) {
        // As a session's agent does before it makes its chain (src/agent/chain-notes.ts).
        noteChain(netns, chain);
        iptables(['-N', chain]);
        iptables(['-A', chain, '-p', 'tcp', '-m', 'tcp', '--dport', '8000', '-j', 'REDIRECT', '--to-ports', '1']);
        iptables(['-I', 'PREROUTING', '1', '-p', 'tcp', '-j', chain]);
      }
      closers.push(() => {
        iptables(['-D', 'PREROUTING', '-p', 'tcp', '-j', `DOPPEL-${process.pid}-999`]);
        iptables(['-F', `DOPPEL-${process.pid}-999`]);
        iptables(['-X', `DOPPEL-${process.pid}-999`]);
        forgetChain(netns, `DOPPEL-${process.pid}-999`);
      });
      // The dead session's rule breaks the target's port until it is swept.
      await assert.rejects(curl(target()));
      await platformSession();
      await until('the dead session\'s chain to go', () => (chains()[backend].includes(`DOPPEL-${dead}-0`) ? undefined : true));
      assert.deepEqual(chains(), { ...noChains, [backend]: [`DOPPEL-${process.pid}-999`] });
      assert.doesNotMatch(execFileSync(enter()[0]!, [...enter().slice(1), `iptables-${backend}-save`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }), new RegExp(`DOPPEL-${dead}-`));
      assert.equal(chainNoted(netns, `DOPPEL-${dead}-0`), false, 'the swept chain\'s note goes with it');
      assert.equal(chainNoted(netns, `DOPPEL-${process.pid}-999`), true);
    });

    describe('the agent removes its own chain on its way out', () => {
      /** The agent started as the platform starts it, but with no platform behind it to clean up after it. */
      async function bareAgent(pid = world.target.pid, nodeFlags: string[] = []): Promise<{ child: ChildProcess; client: AgentClient; exited: Promise<string> }> {
        const child = spawn('nsenter', [`--net=/proc/${world.target.pid}/ns/net`, '--', process.execPath, ...nodeFlags, agentMain, '--pid', String(pid), '--fd', '3', '--log-level', 'debug', '--session', `t${process.pid}`], { stdio: ['ignore', 'ignore', 'ignore', 'pipe'] });
        const exited = new Promise<string>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? `code ${code}`)));
        closers.push(async () => {
          child.kill('SIGKILL');
          await exited;
        });
        const client = await connectAgent(child.stdio[3] as Duplex, { handshakeTimeoutMs: 10_000 });
        const local = await listening(createHttpServer((_, res) => res.end('answered by the developer')));
        await subscribed(client, 'steal', local);
        assert.deepEqual(chains()[backend], [`DOPPEL-t${process.pid}`]);
        assert.deepEqual(notesHere(), [`${netnsOf(world.target.pid)}-DOPPEL-t${process.pid}`], 'noted as it was made');
        assert.equal(await curl(target()), 'answered by the developer');
        return { child, client, exited };
      }

      test('when its client goes away', async () => {
        const { client, exited } = await bareAgent();
        client.close();
        assert.equal(await exited, 'code 0');
        assertNoneLeft();
        assert.equal(await curl(target()), world.target.http.body);
      });

      test('on SIGTERM', async () => {
        const { child, exited } = await bareAgent();
        child.kill('SIGTERM');
        assert.equal(await exited, 'code 0');
        assertNoneLeft();
      });

      test('on an uncaught error', async () => {
        // Fault injection: no request makes the agent throw, so a preloaded module throws on SIGUSR2.
        const { child, exited } = await bareAgent(world.target.pid, ['--import', 'data:text/javascript,process.on("SIGUSR2", () => { throw new Error("injected fault") })']);
        child.kill('SIGUSR2');
        assert.equal(await exited, 'code 1');
        assertNoneLeft();
      });

      test('when its target process exits', async () => {
        const sleeper = spawn('ip', ['netns', 'exec', `${world.name}-pod`, 'sleep', '600'], { stdio: 'ignore' });
        closers.push(() => sleeper.kill('SIGKILL'));
        const { exited } = await bareAgent(sleeper.pid!);
        sleeper.kill('SIGKILL');
        assert.equal(await exited, 'code 0');
        assertNoneLeft();
      });
    });
  });
}

async function listening<T extends Server | ReturnType<typeof createHttpServer>>(server: T): Promise<T> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => server.close());
  return server;
}

function curl(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('curl', ['-sS', '--max-time', '5', url], { encoding: 'utf8' }, (error, stdout, stderr) => (error ? reject(new Error(`curl ${url}: ${stderr.trim() || error.message}`)) : resolve(stdout)));
  });
}

/** A TCP listener that keeps every byte of each connection it accepts, answers nothing, and hands out whole copies. */
async function copyCollector(): Promise<{ server: Server; next(): Promise<Buffer> }> {
  const done: Buffer[] = [];
  let wake: (() => void) | undefined;
  const server = createServer({ allowHalfOpen: true }, (socket: Socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => {});
    socket.on('end', () => {
      // What the program answers is dropped by the agent: say something anyway.
      socket.end('HTTP/1.1 500 from the developer\r\nContent-Length: 0\r\n\r\n');
      done.push(Buffer.concat(chunks));
      wake?.();
    });
  });
  await listening(server);
  return {
    server,
    async next() {
      while (done.length === 0) await new Promise<void>((resolve) => (wake = resolve));
      return done.shift()!;
    },
  };
}

/** Sends `bytes` in pieces of varied sizes, half-closes, and returns everything the other side sent until it closed. */
async function rawExchange(host: string, port: number, bytes: Buffer): Promise<Buffer> {
  const socket = connect({ host, port });
  await once(socket, 'connect');
  const received: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => received.push(chunk));
  for (let offset = 0, size = 1; offset < bytes.length; offset += size, size = (size * 7) % 65521 || 1) {
    if (!socket.write(bytes.subarray(offset, offset + size))) await once(socket, 'drain');
  }
  socket.end();
  await once(socket, 'close');
  return Buffer.concat(received);
}

/** One kept-alive HTTP/1.1 connection: each get() is a request on it. */
async function keptAlive(host: string, port: number): Promise<{ get(path: string): Promise<string>; close(): void }> {
  const socket = connect({ host, port });
  await once(socket, 'connect');
  return {
    get: (path) =>
      new Promise((resolve, reject) => {
        let text = '';
        const onData = (chunk: Buffer) => {
          text += chunk.toString('latin1');
          const head = text.indexOf('\r\n\r\n');
          const length = Number(/content-length: (\d+)/i.exec(text)?.[1] ?? NaN);
          if (head >= 0 && text.length >= head + 4 + length) {
            cleanup();
            resolve(text.slice(head + 4));
          }
        };
        const onError = (error: Error) => {
          cleanup();
          reject(error);
        };
        const onClose = () => {
          cleanup();
          reject(Object.assign(new Error('closed'), { code: 'ECLOSED' }));
        };
        const cleanup = () => {
          socket.off('data', onData);
          socket.off('error', onError);
          socket.off('close', onClose);
        };
        socket.on('data', onData);
        socket.once('error', onError);
        socket.once('close', onClose);
        socket.write(`GET ${path} HTTP/1.1\r\nHost: pod\r\n\r\n`);
      }),
    close: () => socket.destroy(),
  };
}

/** A PID that belonged to a process and no longer does. */
async function deadPid(): Promise<number> {
  const child = spawn('true');
  await once(child, 'exit');
  return child.pid!;
}
