// On a process target the layer asks the agent itself for the program's lookups (one Node.js hop fewer than through the
// proxy), with the answers the proxy gave: from every thread and forked child, on a stream of each one's own. Where a
// DNS filter or an outgoing filter by host name needs the proxy to see each lookup, the proxy is asked, as before.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { execIn, ok } from './run-doppel.ts';
import { suiteWorld } from './suite-world.ts';

const gate = needsRoot('lookups asked of a process target\'s agent');

// Waits (argv[2] == "wait") for the agent's socket next to the proxy's, then resolves each name of argv[1] in the main
// thread, in a second thread and in a forked child: {name: [addresses] or the error's name} for each.
const script = `
import json, os, socket, sys, threading, time
names = sys.argv[1].split(',')
if sys.argv[2] == 'wait':
    agent = os.path.join(os.path.dirname(os.environ['DOPPEL_LAYER_SOCKET']), 'dns.sock')
    deadline = time.time() + 20
    while not os.path.exists(agent) and time.time() < deadline:
        time.sleep(0.02)
def resolve():
    out = {}
    for name in names:
        try:
            out[name] = sorted({info[4][0] for info in socket.getaddrinfo(name, 80, socket.AF_INET)})
        except socket.gaierror as e:
            out[name] = 'gaierror %d' % e.errno
    return out
results = {'main': resolve()}
thread = threading.Thread(target=lambda: results.update(thread=resolve()))
thread.start()
thread.join()
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.write(w, json.dumps(resolve()).encode())
    os._exit(0)
os.close(w)
results['child'] = json.loads(os.read(r, 65536))
os.waitpid(child, 0)
print(json.dumps(results))
`;

describe('lookups asked of the agent', gate, () => {
  const world = suiteWorld();
  const scratch = mkdtempSync(join(tmpdir(), 'doppel-agent-dns-'));
  const scriptFile = join(scratch, 'resolve.py');
  writeFileSync(scriptFile, script);
  after(() => rmSync(scratch, { recursive: true, force: true }));

  const run = (names: string[], wait: boolean, flags: string[] = []) =>
    execIn(world().target.pid, ['python3', scriptFile, names.join(','), wait ? 'wait' : 'no'], { flags, env: { ...process.env, DOPPEL_LAYER_LOG: 'debug' } });
  const askedAgent = (stderr: string) => stderr.split('\n').filter((line) => line.endsWith(': op 7: asked the agent'));

  test('names, short names and the target\'s hosts resolve through the agent alone, in threads and forked children alike', async () => {
    const { redis, http, hostsAlias } = world().services;
    const result = await run([redis.name, http.shortName, hostsAlias.name, 'localhost'], true);
    const answers = JSON.parse(ok(result)) as Record<string, Record<string, string[] | string>>;
    const expected = { [redis.name]: [redis.address], [http.shortName]: [http.address], [hostsAlias.name]: [hostsAlias.address], localhost: ['127.0.0.1'] };
    assert.deepEqual(answers, { main: expected, thread: expected, child: expected });
    // Each of the three asked the agent for every name (localhost too: the agent says it is the layer's own to resolve).
    const asked = askedAgent(result.stderr);
    assert.equal(asked.length, 12, `the agent was asked ${asked.length} times:\n${result.stderr.slice(-3000)}`);
    assert.equal(new Set(asked.map((line) => /doppel-layer\[(\d+)\]/.exec(line)?.[1])).size, 2, 'the forked child asked on a stream of its own');
  });

  for (const [what, config] of [
    ['a DNS filter', { feature: { network: { dns: { filter: { local: ['*.example.internal'] } } } } }],
    ['an outgoing filter by host name', { feature: { network: { outgoing: { filter: { local: ['*.example.internal'] } } } } }],
  ] as const) {
    test(`with ${what} the proxy is asked, with the same answers`, async () => {
      const file = join(scratch, `${what.replace(/\W+/g, '-')}.json`);
      writeFileSync(file, JSON.stringify(config));
      const { redis, http } = world().services;
      const result = await run([redis.name, http.shortName], false, ['-f', file]);
      const expected = { [redis.name]: [redis.address], [http.shortName]: [http.address] };
      assert.deepEqual(JSON.parse(ok(result)), { main: expected, thread: expected, child: expected });
      assert.deepEqual(askedAgent(result.stderr), []);
      assert.doesNotMatch(result.stderr, /agent's socket cannot be reached/);
    });
  }
});
