// The UDP hooks driven by udp-client.c against the world's UDP echo, reachable only from the pod: every answer must
// have come through the target (the echo names the pod's address) and be reported as the echo's (not the relay's); and
// against an echo on this machine's loopback.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execIn } from '../e2e/run-doppel.ts';
import type { World } from '../world/world.ts';

const source = fileURLToPath(new URL('udp-client.c', import.meta.url));

/**
 * doppel's flags for a session whose UDP sockets stay on this machine, their datagrams relayed through the proxy and the
 * agent: an outgoing filter (for a destination nobody uses) turns off making them in the target's network. The
 * configuration is written into dir.
 */
export function relayedFlags(dir: string): string[] {
  const config = join(dir, 'relayed.json');
  writeFileSync(config, JSON.stringify({ feature: { network: { outgoing: { filter: { local: ['udp://127.0.0.2:9'] } } } } }));
  return ['-f', config];
}

/**
 * Compiles and runs the client under doppel, its sockets made in the target's network (`moved`, the default session) or
 * relayed through the proxy and the agent (`relayed`: an outgoing filter for another destination turns the former off);
 * returns doppel's stderr without the layer's debug log, which tells which way each socket went.
 */
export async function udpClient(world: World, env: NodeJS.ProcessEnv = process.env, way: 'moved' | 'relayed' = 'moved'): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'doppel-udp-'));
  try {
    const binary = join(dir, 'udp-client');
    execFileSync('cc', ['-Wall', '-Wextra', '-Werror', '-O2', '-D_FORTIFY_SOURCE=2', '-o', binary, source]);
    const { address, port, seenFrom } = world.services.udpEcho;
    const flags = way === 'relayed' ? relayedFlags(dir) : [];
    // An echo on this machine's loopback, which the pod cannot reach.
    const local = createSocket('udp4');
    local.on('message', (message, from) => local.send(`${message}@here`, from.port, from.address));
    await new Promise<void>((resolve) => local.bind(0, '127.0.0.1', resolve));
    const result = await execIn(world.target.pid, [binary, address, String(port), String(local.address().port)], { env: { ...env, DOPPEL_LAYER_LOG: 'debug' }, flags }).finally(() => local.close());
    assert.equal(result.status, 0, `udp-client exited ${result.status}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
    const echo = `${address}:${port}`;
    assert.equal(result.stdout, [
      `recv connected@${seenFrom} peer ${echo}`,
      `recvfrom written@${seenFrom} from ${echo}`,
      'after AF_UNSPEC getpeername ENOTCONN',
      `recvfrom unconnected@${seenFrom} from ${echo} len 16`,
      `short address len 16, port ${port}, bytes after it untouched: yes`,
      `recvmsg message@${seenFrom} from ${echo}`,
      'sendmmsg lengths 3 3 5',
      `recvmmsg one@${seenFrom} from ${echo}`,
      `recvmmsg two@${seenFrom} from ${echo}`,
      `recvmmsg three@${seenFrom} from ${echo}`,
      `recvfrom six@${seenFrom} from [::ffff:${address}]:${port}`,
      `bound first@${seenFrom} second@here third@${seenFrom} same port yes`,
      '',
    ].join('\n'));
    // Four sockets: the connected one, the unconnected one, the IPv6 one and the bound one, which came back for loopback.
    assert.equal(result.stderr.match(/udp: made the socket in process \d+'s network/g)?.length ?? 0, way === 'moved' ? 4 : 0, result.stderr);
    assert.equal(result.stderr.match(/udp: the socket came back here for a datagram to loopback/g)?.length ?? 0, way === 'moved' ? 1 : 0, result.stderr);
    return result.stderr.split('\n').filter((line) => !line.startsWith('doppel-layer[')).join('\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
