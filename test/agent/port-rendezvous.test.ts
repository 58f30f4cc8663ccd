// The rendezvous of the agents on one port, with real processes: a holder killed while other agents connect to it
// leaves them "no holder now" (to try again), never an error, and its name to the next holder.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { holdRendezvous, reachRendezvous } from '../../src/agent/port-rendezvous.ts';

/** A port number no agent of another test uses: abstract names are per network namespace, and this is the host's. */
const PORT = 40000 + (process.pid % 20000);
const module = new URL('../../src/agent/port-rendezvous.ts', import.meta.url).href;

/** A process holding the port's name, as a routing agent does; it accepts its members and never answers them. */
async function holder(): Promise<ReturnType<typeof spawn>> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', `import { holdRendezvous } from '${module}'; if (await holdRendezvous(${PORT}, () => {})) console.log('held');`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  assert.equal(line.toString().trim(), 'held');
  return child;
}

describe('the rendezvous of the agents on one port', () => {
  test('a holder killed while others connect: each connect is a socket or "no holder now", and the name is free after', async () => {
    for (let round = 0; round < 30; round++) {
      const child = await holder();
      let stop = false;
      // Twenty agents joining at once, over and over, the way members of a dying holder's port try to.
      const joiners = Array.from({ length: 20 }, async () => {
        const seen = new Set<string>();
        while (!stop) {
          const socket = await reachRendezvous(PORT);
          seen.add(socket ? 'joined' : 'no holder');
          socket?.destroy();
        }
        return seen;
      });
      setTimeout(() => child.kill('SIGKILL'), 10);
      await once(child, 'exit');
      await new Promise((resolve) => setTimeout(resolve, 10));
      stop = true;
      const seen = new Set((await Promise.all(joiners)).flatMap((one) => [...one]));
      assert.ok(seen.has('no holder'), `round ${round}: the joiners saw the holder gone`);
      assert.equal(await reachRendezvous(PORT), undefined, 'nobody holds the name of a killed holder');
      const next = await holdRendezvous(PORT, () => {});
      assert.ok(next, 'the next agent takes the name');
      next.close();
    }
  });
});
