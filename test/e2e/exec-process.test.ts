// doppel exec --target process/PID, end to end: real programs under the real layer, a real agent in the test world's namespaces.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { createWorld, type World } from '../world/world.ts';
import { leftoversAfter } from './leftovers.ts';
import { execIn, ok, runDoppel } from './run-doppel.ts';

const gate = needsRoot('doppel exec against a process target');

describe('doppel exec --target process/PID', gate, () => {
  let world: World;
  let local: Server;
  let localPort = 0;
  const pid = () => world.target.pid;

  before(async () => {
    world = await createWorld();
    local = createServer((_, res) => res.end('from the developer machine'));
    await new Promise<void>((resolve) => local.listen(0, '127.0.0.1', resolve));
    localPort = (local.address() as AddressInfo).port;
  });
  after(async () => {
    local?.close();
    await world?.destroy();
  });
  afterEach(async () => {
    if (!world) return;
    const left = await leftoversAfter(pid());
    assert.deepEqual(left, { agents: [], dirs: [] }, 'a session left an agent process or a socket directory behind');
  });

  describe('environment', () => {
    test('sh, node and python3 see the target\'s variables', async () => {
      const secret = world.target.env.DOPPEL_TEST_SECRET!;
      assert.equal(ok(await execIn(pid(), ['sh', '-c', 'printf %s "$DOPPEL_TEST_SECRET"'])), secret);
      assert.equal(ok(await execIn(pid(), ['node', '-e', 'process.stdout.write(process.env.DOPPEL_TEST_SECRET)'])), secret);
      assert.equal(ok(await execIn(pid(), ['python3', '-c', 'import os,sys; sys.stdout.write(os.environ["POD_NAME"])'])), world.target.env.POD_NAME);
    });

    test('PATH and HOME stay the developer\'s (mirrord\'s default exclusions)', async () => {
      const out = ok(await execIn(pid(), ['node', '-e', 'process.stdout.write(JSON.stringify([process.env.PATH, process.env.HOME]))']));
      assert.deepEqual(JSON.parse(out), [process.env.PATH, process.env.HOME]);
    });

    test('--env-exclude leaves a variable out', async () => {
      const out = ok(await execIn(pid(), ['sh', '-c', 'printf "%s|%s" "${DOPPEL_TEST_SECRET:-unset}" "$POD_NAME"'], { flags: ['-x', 'DOPPEL_TEST_*'] }));
      assert.equal(out, `unset|${world.target.env.POD_NAME}`);
    });
  });

  describe('files', () => {
    /** Python's `code(call)`: "ok", or the errno name of the OSError the call raised. */
    const pythonErrnoOf = `import errno, json, os, sys
def code(call):
    try:
        call()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
`;
    const settings = '/srv/app/config/settings.json';

    test('cat, sh and a symlink read files only the target has', async () => {
      assert.equal(ok(await execIn(pid(), ['cat', settings])), world.target.files[settings]);
      assert.equal(ok(await execIn(pid(), ['sh', '-c', `cat ${world.target.link.path}`])), world.target.files[world.target.link.target]);
      assert.deepEqual(ok(await execIn(pid(), ['ls', world.target.dir.path])).trim().split('\n'), world.target.dir.entries);
    });

    test('node: readFileSync, promises.readFile, statSync, readdirSync, existsSync', async () => {
      const script = `
        const fs = require('fs');
        (async () => {
          const out = {
            sync: fs.readFileSync(${JSON.stringify(settings)}, 'utf8'),
            promise: await fs.promises.readFile(${JSON.stringify(settings)}, 'utf8'),
            size: fs.statSync(${JSON.stringify(settings)}).size,
            isDir: fs.statSync(${JSON.stringify(world.target.dir.path)}).isDirectory(),
            list: fs.readdirSync(${JSON.stringify(world.target.dir.path)}),
            exists: fs.existsSync(${JSON.stringify(settings)}),
            missing: fs.existsSync('/srv/app/nope'),
            many: (await Promise.all(Array.from({ length: 50 }, () => fs.promises.readFile(${JSON.stringify(settings)}, 'utf8')))).every((t) => t === fs.readFileSync(${JSON.stringify(settings)}, 'utf8')),
          };
          process.stdout.write(JSON.stringify(out));
        })();`;
      const out = JSON.parse(ok(await execIn(pid(), ['node', '-e', script])));
      const content = world.target.files[settings]!;
      assert.deepEqual(out, { sync: content, promise: content, size: Buffer.byteLength(content), isDir: true, list: world.target.dir.entries, exists: true, missing: false, many: true });
    });

    test('python3: open, os.stat, os.listdir', async () => {
      const script = `import json, os, sys
p = ${JSON.stringify(settings)}
sys.stdout.write(json.dumps([open(p).read(), os.stat(p).st_size, sorted(os.listdir(${JSON.stringify(world.target.dir.path)})), os.path.exists('/srv/app/nope')]))`;
      const content = world.target.files[settings]!;
      assert.deepEqual(JSON.parse(ok(await execIn(pid(), ['python3', '-c', script]))), [content, Buffer.byteLength(content), world.target.dir.entries, false]);
    });

    test('ls -la lists remote files quietly: their extended attributes are ENOTSUP (a missing one ENOENT), local ones stay local', async () => {
      const listed = await execIn(pid(), ['ls', '-la', world.target.dir.path]);
      assert.equal(listed.stderr, '');
      assert.equal(listed.status, 0);
      for (const entry of world.target.dir.entries) assert.match(listed.stdout, new RegExp(` ${entry}\n`));
      const script = `${pythonErrnoOf}p = ${JSON.stringify(settings)}
sys.stdout.write(json.dumps([code(lambda: os.getxattr(p, "user.x")), code(lambda: os.getxattr(p, "user.x", follow_symlinks=False)), code(lambda: os.listxattr(p)),
  code(lambda: os.setxattr(p, "user.x", b"1")), code(lambda: os.removexattr(p, "user.x")), code(lambda: os.listxattr("/srv/app/nope")), code(lambda: os.listxattr("package.json"))]))`;
      assert.deepEqual(JSON.parse(ok(await execIn(pid(), ['python3', '-c', script]))), ['ENOTSUP', 'ENOTSUP', 'ENOTSUP', 'ENOTSUP', 'ENOTSUP', 'ENOENT', 'ok']);
    });

    test('cd into a remote directory (sh, python3 os.chdir): relative paths then name its files; a remote file or a missing one is refused', async () => {
      const { path: dir, entries } = world.target.dir;
      const [first] = entries;
      assert.equal(ok(await execIn(pid(), ['sh', '-c', `cd ${dir} && cat ${first} && ls`])), `${world.target.files[`${dir}/${first}`]}${entries.join('\n')}\n`);
      const script = `${pythonErrnoOf}os.chdir(${JSON.stringify(dir)})
seen = [sorted(os.listdir(".")), open(${JSON.stringify(first)}).read(), code(lambda: os.chdir(${JSON.stringify(settings)})), code(lambda: os.chdir("/srv/app/nope"))]
os.chdir("..")
seen.append(os.path.isdir("data"))
sys.stdout.write(json.dumps(seen))`;
      assert.deepEqual(JSON.parse(ok(await execIn(pid(), ['python3', '-c', script]))), [entries, world.target.files[`${dir}/${first}`], 'ENOTDIR', 'ENOENT', true]);
    });

    test('a remote file opened to read is the target\'s file itself, however big; a program that may not reach the target\'s root reads a copy', async () => {
      // Three MiB the agent would have streamed: written into the target's root, and removed after.
      const big = '/srv/app/big.bin';
      const content = randomBytes(3 * 1024 * 1024);
      writeFileSync(`/proc/${pid()}/root${big}`, content);
      try {
        const reader = `import hashlib, json, os, sys
out = {}
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        out[path] = [os.readlink("/proc/self/fd/%d" % f.fileno()), hashlib.sha256(f.read()).hexdigest()]
print(json.dumps(out))`;
        const digest = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');
        const expected = { [settings]: digest(world.target.files[settings]!), [big]: digest(content) };
        const direct = JSON.parse(ok(await execIn(pid(), ['python3', '-c', reader, settings, big]))) as Record<string, [string, string]>;
        assert.deepEqual(Object.fromEntries(Object.entries(direct).map(([path, [, hash]]) => [path, hash])), expected);
        // Its descriptor names the file, not an in-memory copy.
        for (const [path, [link]] of Object.entries(direct)) assert.equal(link, path);
        // Root with a capability fewer than the target (CAP_SYS_PTRACE): the kernel refuses it /proc/PID/root, a real refusal.
        const refused = JSON.parse(ok(await execIn(pid(), ['setpriv', '--bounding-set=-sys_ptrace', '--', 'python3', '-c', reader, settings, big]))) as Record<string, [string, string]>;
        assert.deepEqual(Object.fromEntries(Object.entries(refused).map(([path, [, hash]]) => [path, hash])), expected);
        for (const [link] of Object.values(refused)) assert.match(link, /^\/memfd:/);
      } finally {
        rmSync(`/proc/${pid()}/root${big}`, { force: true });
      }
    });

    test('a missing remote file is ENOENT, and local paths stay local', async () => {
      const result = await execIn(pid(), ['cat', '/srv/app/missing']);
      assert.notEqual(result.status, 0);
      assert.match(result.stderr, /No such file or directory/);
      assert.equal(ok(await execIn(pid(), ['cat', 'package.json'])).includes('"name": "doppel"'), true);
    });

    test('a file under a local root (/opt) is read from the target when the target mounts it there', async () => {
      const mounted = '/opt/app/mounted.conf';
      assert.equal(ok(await execIn(pid(), ['cat', mounted])), world.target.files[mounted]);
      // The user's own list still wins over the mount.
      const dir = mkdtempSync(join(tmpdir(), 'doppel-fs-local-'));
      try {
        writeFileSync(join(dir, 'local.json'), JSON.stringify({ feature: { fs: { local: ['^/opt/app'] } } }));
        const local = await execIn(pid(), ['cat', mounted], { flags: ['-f', join(dir, 'local.json')] });
        assert.match(local.stderr, /No such file or directory/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe('DNS', () => {
    const { escape } = { escape: (s: string) => s.replaceAll('.', '\\.') };

    test('getent resolves cluster names, their short forms, and the target\'s /etc/hosts', async () => {
      const { redis, http, hostsAlias } = world.services;
      assert.match(ok(await execIn(pid(), ['getent', 'ahosts', redis.name])), new RegExp(`^${escape(redis.address)}\\s+STREAM`, 'm'));
      assert.match(ok(await execIn(pid(), ['getent', 'ahosts', redis.shortName])), new RegExp(`^${escape(redis.address)}\\s`, 'm'));
      assert.match(ok(await execIn(pid(), ['getent', 'hosts', http.shortName])), new RegExp(`^${escape(http.address)}\\s+${escape(http.name)}`, 'm'));
      assert.match(ok(await execIn(pid(), ['getent', 'hosts', hostsAlias.name])), new RegExp(`^${escape(hostsAlias.address)}\\s`, 'm'));
      const unknown = await execIn(pid(), ['getent', 'ahosts', 'nothing-here.svc.cluster.local']);
      assert.equal(unknown.status, 2, unknown.stderr);
    });

    test('node dns.lookup and python socket.getaddrinfo', async () => {
      const { redis } = world.services;
      assert.equal(ok(await execIn(pid(), ['node', '-e', `require('dns').lookup(${JSON.stringify(redis.shortName)}, (e, a) => process.stdout.write(e ? e.code : a))`])), redis.address);
      assert.equal(ok(await execIn(pid(), ['python3', '-c', `import socket,sys; sys.stdout.write(socket.getaddrinfo(${JSON.stringify(redis.name)}, 6379)[0][4][0])`])), redis.address);
    });
  });

  describe('outgoing connections', () => {
    test('redis-cli and curl reach cluster-only services by name', async () => {
      const { redis, http } = world.services;
      assert.equal(ok(await execIn(pid(), ['redis-cli', '-h', redis.shortName, 'GET', redis.key])).trim(), redis.value);
      assert.equal(ok(await execIn(pid(), ['curl', '-sS', `http://${http.name}:${http.port}/`])), http.body);
    });

    test('node net.connect and fetch, with getpeername reporting the remote address', async () => {
      const { redis, http } = world.services;
      const script = `
        const net = require('net');
        const socket = net.connect(${redis.port}, ${JSON.stringify(redis.name)}, () => socket.write('GET ${redis.key}\\r\\n'));
        socket.once('data', async (data) => {
          const peer = socket.remoteAddress;
          socket.end();
          const body = await (await fetch(${JSON.stringify(`http://${http.shortName}:${http.port}/`)})).text();
          process.stdout.write(JSON.stringify({ reply: data.toString(), peer, body }));
        });`;
      const out = JSON.parse(ok(await execIn(pid(), ['node', '-e', script])));
      assert.deepEqual(out, { reply: `$${redis.value.length}\r\n${redis.value}\r\n`, peer: redis.address, body: http.body });
    });

    test('python urllib reaches a service through the search domains', async () => {
      const { http } = world.services;
      const script = `import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("http://${http.shortName}:${http.port}/").read().decode())`;
      assert.equal(ok(await execIn(pid(), ['python3', '-c', script])), http.body);
    });

    test('loopback stays on the developer machine', async () => {
      assert.equal(ok(await execIn(pid(), ['curl', '-sS', `http://127.0.0.1:${localPort}/`])), 'from the developer machine');
    });

    test('a refused remote connection is ECONNREFUSED', async () => {
      const result = await execIn(pid(), ['node', '-e', `require('net').connect(9, ${JSON.stringify(world.services.redis.address)}).on('error', (e) => process.stdout.write(e.code))`]);
      assert.equal(ok(result), 'ECONNREFUSED');
    });

    test('a program that shuts down its sending side still reads the answer (python3 shutdown(SHUT_WR))', async () => {
      const { http } = world.services;
      const script = `import socket, sys; s = socket.create_connection(("${http.name}", ${http.port})); s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); s.shutdown(socket.SHUT_WR)
d = b""
while True:
    c = s.recv(4096)
    if not c: break
    d += c
sys.stdout.write(d.split(b"\\r\\n\\r\\n", 1)[1].decode())`;
      assert.equal(ok(await execIn(pid(), ['python3', '-c', script])), http.body);
    });
  });

  describe('child processes', () => {
    test('sh -c children, node child_process and python subprocess get the same context', async () => {
      const settings = '/srv/app/config/settings.json';
      const content = world.target.files[settings]!;
      assert.equal(ok(await execIn(pid(), ['sh', '-c', `sh -c 'cat ${settings}'`])), content);
      assert.equal(ok(await execIn(pid(), ['node', '-e', `process.stdout.write(require('child_process').execSync('cat ${settings}'))`])), content);
      assert.equal(ok(await execIn(pid(), ['python3', '-c', `import subprocess,sys; sys.stdout.write(subprocess.run(["redis-cli","-h","${world.services.redis.name}","GET","${world.services.redis.key}"],capture_output=True,text=True).stdout)`])).trim(), world.services.redis.value);
    });

    test('a child started with an emptied environment (env -i) keeps the layer', async () => {
      assert.equal(ok(await execIn(pid(), ['env', '-i', '/bin/cat', '/srv/app/config/feature-flags'])), world.target.files['/srv/app/config/feature-flags']);
    });
  });

  describe('the terminal and the exit status', () => {
    test('the program\'s exit code is doppel\'s', async () => {
      assert.equal((await execIn(pid(), ['sh', '-c', 'exit 7'])).status, 7);
      // The CLI reports a program's death by a signal the shell way; in a warm session the program is the process
      // itself, so it is seen killed (warm-launch.test.ts): agent.ttl 0 keeps this run off one.
      assert.equal((await execIn(pid(), ['sh', '-c', 'kill -TERM $$'], { flags: ['--agent-ttl', '0'] })).status, 143);
    });

    test('stdin and stdout pass through', async () => {
      assert.equal(ok(await execIn(pid(), ['cat'], { input: 'typed by the user\n' })), 'typed by the user\n');
    });

    test('without --, the program\'s own options (even ones named as doppel\'s) stay its own, as with mirrord exec', async () => {
      const run = (command: string[], flags: string[] = []) => runDoppel(['exec', '-q', ...flags, '--target', `process/${pid()}`, ...command]);
      assert.equal(ok(await run(['python3', '-c', 'import os; print(os.environ["POD_NAME"])'])), `${world.target.env.POD_NAME}\n`);
      assert.equal(ok(await run(['sh', '-c', 'echo "$POD_NAME" "$@"', 'sh', '-t', 'process/1', '--agent-ttl', '0', '-q', '--', 'x'], ['-x', 'DOPPEL_TEST_*'])), `${world.target.env.POD_NAME} -t process/1 --agent-ttl 0 -q -- x\n`);
      // An option of doppel's that is not one: one line and where to look, not the whole help.
      const bogus = await run(['true'], ['--bogus']);
      assert.equal(bogus.status, 2);
      assert.equal(bogus.stderr, "error: unknown option '--bogus'\n(add --help for the options)\n");
    });
  });
});
