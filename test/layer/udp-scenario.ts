// The UDP hooks driven by udp-client.c against the world's UDP echo, reachable only from the pod: every answer must
// have come through the target (the echo names the pod's address) and be reported as the echo's (not the relay's).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execIn } from '../e2e/run-doppel.ts';
import type { World } from '../world/world.ts';

const source = fileURLToPath(new URL('udp-client.c', import.meta.url));

/** Compiles and runs the client under doppel; returns doppel's stderr. */
export async function udpClient(world: World, env?: NodeJS.ProcessEnv): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'doppel-udp-'));
  try {
    const binary = join(dir, 'udp-client');
    execFileSync('cc', ['-Wall', '-Wextra', '-Werror', '-O2', '-D_FORTIFY_SOURCE=2', '-o', binary, source]);
    const { address, port, seenFrom } = world.services.udpEcho;
    const result = await execIn(world.target.pid, [binary, address, String(port)], { env });
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
      '',
    ].join('\n'));
    return result.stderr;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
