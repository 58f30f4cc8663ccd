// The agent's writes (protocol 5) over a real connection, and the same module run in the proxy for a target this machine
// reaches (local-files.ts): confined to the target's root as reads are, checked as the target's user; and the proxy's
// write-backs on top (replace, append, unchanged files not sent).
import assert from 'node:assert/strict';
import { appendFileSync, chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { createFileWrites, type Credentials } from '../../src/agent/file-writes.ts';
import { Connection } from '../../src/protocol/connection.ts';
import type { Operation } from '../../src/protocol/messages.ts';
import { connectAgent, type AgentClient } from '../../src/proxy/agent-client.ts';
import { createFileWriteRequests } from '../../src/proxy/file-writes.ts';
import { filesUnder } from '../../src/proxy/local-files.ts';
import { socketPair } from '../protocol/pair.ts';

const { O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_TRUNC, O_APPEND } = constants;
const made: string[] = [];
const closers: (() => void)[] = [];
after(() => {
  closers.forEach((close) => close());
  made.forEach((dir) => rmSync(dir, { recursive: true, force: true }));
});

const root: Credentials = { uid: 0, gid: 0, groups: [], umask: 0o022 };
const nobody: Credentials = { uid: 65534, gid: 65534, groups: [], umask: 0o027 };

/** A target root inside a directory that stands for the host: what lies beside `root` must never change. */
function makeTarget(): { outside: string; root: string } {
  const outside = mkdtempSync(join(tmpdir(), 'doppel-writes-'));
  made.push(outside);
  writeFileSync(join(outside, 'host-secret'), 'host\n');
  const dir = join(outside, 'root');
  mkdirSync(join(dir, 'etc'), { recursive: true });
  mkdirSync(join(dir, 'app', 'data'), { recursive: true });
  writeFileSync(join(dir, 'etc', 'passwd'), 'target passwd\n');
  writeFileSync(join(dir, 'app', 'data', 'a.txt'), 'alpha\n');
  symlinkSync('/etc/passwd', join(dir, 'app', 'abs-link'));
  symlinkSync('../../../host-secret', join(dir, 'app', 'rel-escape'));
  symlinkSync('../../..', join(dir, 'app', 'up'));
  return { outside, root: dir };
}

/** The agent's write operations served on one end of a socket, our client on the other. */
async function connect(target: string, credentials: Credentials): Promise<AgentClient> {
  const writes = createFileWrites(target, async () => credentials);
  const served: Partial<Record<Operation, (args: never, connection: Connection) => Promise<unknown>>> = {
    'fs.open': writes.open, 'fs.write': writes.write, 'fs.mkdir': writes.mkdir, 'fs.rmdir': writes.rmdir,
    'fs.unlink': writes.unlink, 'fs.rename': writes.rename, 'fs.chmod': writes.chmod,
  };
  const sockets = await socketPair();
  closers.push(sockets.close);
  const [client] = await Promise.all([
    connectAgent(sockets.a, { handshakeTimeoutMs: 2000 }),
    Connection.open(sockets.b, { role: 'agent', software: 'test-agent', handshakeTimeoutMs: 2000, onRequest: (op, args, connection) => served[op as Operation]!(args as never, connection) }),
  ]);
  closers.push(() => client.close());
  return client;
}

type WriteCalls = Pick<AgentClient, 'openForWrite' | 'writeBack' | 'mkdir' | 'rmdir' | 'unlink' | 'rename' | 'chmod'>;

/** The proxy's own calls under `target`, as for a target this machine reaches. */
const inProxy = async (target: string, credentials: Credentials): Promise<WriteCalls> =>
  filesUnder(target, async () => credentials, () => Promise.reject(new Error('no agent in this test')));

for (const [way, connectWith] of [
  ['through the agent', connect],
  ['in the proxy', inProxy],
] as const) describe(way, () => {
  test('open creates, truncates or fetches; write-back replaces or appends', async () => {
    const { root: dir } = makeTarget();
    const client = await connectWith(dir, root);
    const created = await client.openForWrite('/app/data/new.txt', O_WRONLY | O_CREAT | O_TRUNC, 0o666);
    assert.equal(created.data.length, 0);
    assert.equal(statSync(join(dir, 'app/data/new.txt')).mode & 0o777, 0o644, 'the target\'s umask, not the agent\'s');
    await client.writeBack('/app/data/new.txt', Buffer.from('one\ntwo\n'), 0, false);
    assert.equal(readFileSync(join(dir, 'app/data/new.txt'), 'utf8'), 'one\ntwo\n');
    const existing = await client.openForWrite('/app/data/a.txt', O_RDWR, 0);
    assert.equal(Buffer.from(existing.data).toString(), 'alpha\n');
    await client.writeBack('/app/data/a.txt', Buffer.from('ALPHA'), 0, false);
    assert.equal(readFileSync(join(dir, 'app/data/a.txt'), 'utf8'), 'ALPHA', 'replaced, and cut where the content ends');
    await client.writeBack('/app/data/a.txt', Buffer.from('+tail'), 0, true);
    assert.equal(readFileSync(join(dir, 'app/data/a.txt'), 'utf8'), 'ALPHA+tail');
    const truncated = await client.openForWrite('/app/data/a.txt', O_WRONLY | O_TRUNC, 0);
    assert.equal(truncated.data.length, 0);
    assert.equal(readFileSync(join(dir, 'app/data/a.txt'), 'utf8'), '', 'O_TRUNC cuts the file at open, as open(2) does');
    const big = Buffer.alloc(3 * 1024 * 1024 + 17, 'x');
    await client.writeBack('/app/data/a.txt', big, 0, false);
    assert.equal(statSync(join(dir, 'app/data/a.txt')).size, big.length, 'content past the channel\'s window arrives whole');
  });

  test('errors come from the target: EEXIST, ENOENT, EISDIR, ENOTEMPTY', async () => {
    const { root: dir } = makeTarget();
    const client = await connectWith(dir, root);
    await assert.rejects(client.openForWrite('/app/data/a.txt', O_WRONLY | O_CREAT | O_EXCL, 0o644), { code: 'EEXIST' });
    await assert.rejects(client.openForWrite('/app/missing/x', O_WRONLY | O_CREAT, 0o644), { code: 'ENOENT' });
    await assert.rejects(client.openForWrite('/app/data/gone', O_WRONLY, 0), { code: 'ENOENT' });
    await assert.rejects(client.openForWrite('/app/data', O_WRONLY, 0), { code: 'EISDIR' });
    await assert.rejects(client.rmdir('/app'), { code: 'ENOTEMPTY' });
    await assert.rejects(client.mkdir('/app/data', 0o755), { code: 'EEXIST' });
    await assert.rejects(client.rename('/app/data/a.txt', '/etc/passwd', true), { code: 'EEXIST' });
    assert.equal(readFileSync(join(dir, 'etc/passwd'), 'utf8'), 'target passwd\n');
  });

  test('entries right under / are made, written, renamed and removed when the root is a link, as /proc/PID/root is', async () => {
    const { outside, root: dir } = makeTarget();
    symlinkSync(dir, join(outside, 'root-link'));
    const client = await connectWith(join(outside, 'root-link'), root);
    await client.mkdir('/data', 0o755);
    await assert.rejects(client.mkdir('/data', 0o755), { code: 'EEXIST' }, 'mkdir -p goes on past an existing directory only on EEXIST');
    await client.openForWrite('/top.txt', O_WRONLY | O_CREAT | O_TRUNC, 0o644);
    await client.writeBack('/top.txt', Buffer.from('top\n'), 0, false);
    await client.rename('/top.txt', '/data/top.txt', false);
    await client.rename('/data/top.txt', '/moved.txt', false);
    assert.equal(readFileSync(join(dir, 'moved.txt'), 'utf8'), 'top\n');
    await client.unlink('/moved.txt');
    await client.rmdir('/data');
    assert.deepEqual([existsSync(join(dir, 'data')), existsSync(join(dir, 'moved.txt'))], [false, false]);
  });

  test('writes, renames, mkdir and chmod through .. and escaping symlinks stay inside the root', async () => {
    const { outside, root: dir } = makeTarget();
    const client = await connectWith(dir, root);
    const before = readFileSync(join(outside, 'host-secret'), 'utf8');
    await client.openForWrite('/app/rel-escape', O_WRONLY | O_CREAT | O_TRUNC, 0o644);
    await client.writeBack('/app/rel-escape', Buffer.from('written\n'), 0, false);
    assert.equal(readFileSync(join(dir, 'host-secret'), 'utf8'), 'written\n', 'the link resolves to the root\'s /host-secret');
    await client.openForWrite('/../../../escaped', O_WRONLY | O_CREAT, 0o644);
    assert.ok(existsSync(join(dir, 'escaped')));
    await client.mkdir('/app/up/made', 0o755);
    assert.ok(statSync(join(dir, 'made')).isDirectory());
    await client.rename('/app/data/a.txt', '/app/up/../../moved', false);
    assert.equal(readFileSync(join(dir, 'moved'), 'utf8'), 'alpha\n');
    await client.chmod('/app/abs-link', 0o600, true);
    assert.equal(statSync(join(dir, 'etc/passwd')).mode & 0o777, 0o600);
    await client.unlink('/app/abs-link');
    assert.ok(existsSync(join(dir, 'etc/passwd')), 'unlink removes the link, not what it points to');
    assert.equal(readFileSync(join(outside, 'host-secret'), 'utf8'), before);
    assert.deepEqual(['escaped', 'made', 'moved'].filter((name) => existsSync(join(outside, name))), []);
  });

  test('as a non-root target: EACCES on a read-only file or directory, EPERM on another\'s chmod, new files are its own', async () => {
    const { root: dir } = makeTarget();
    mkdirSync(join(dir, 'home'));
    chownSync(join(dir, 'home'), nobody.uid, nobody.gid);
    writeFileSync(join(dir, 'home/readonly'), 'keep\n');
    chownSync(join(dir, 'home/readonly'), nobody.uid, nobody.gid);
    chmodSync(join(dir, 'home/readonly'), 0o444);
    const client = await connectWith(dir, nobody);
    await assert.rejects(client.openForWrite('/home/readonly', O_WRONLY | O_TRUNC, 0), { code: 'EACCES' });
    assert.equal(Buffer.from((await client.openForWrite('/home/readonly', constants.O_RDONLY | O_CREAT, 0o644)).data).toString(), 'keep\n', 'O_CREAT of an existing file only reads it');
    assert.equal(readFileSync(join(dir, 'home/readonly'), 'utf8'), 'keep\n', 'nothing truncated');
    await assert.rejects(client.openForWrite('/app/data/a.txt', O_RDWR, 0), { code: 'EACCES' });
    await assert.rejects(client.openForWrite('/app/data/new', O_WRONLY | O_CREAT, 0o644), { code: 'EACCES' });
    await assert.rejects(client.mkdir('/app/data/d', 0o755), { code: 'EACCES' });
    await assert.rejects(client.unlink('/app/data/a.txt'), { code: 'EACCES' });
    await assert.rejects(client.rename('/app/data/a.txt', '/home/a.txt', false), { code: 'EACCES' });
    await assert.rejects(client.chmod('/app/data/a.txt', 0o777, true), { code: 'EPERM' });
    await client.openForWrite('/home/mine', O_WRONLY | O_CREAT | O_EXCL, 0o666);
    const mine = lstatSync(join(dir, 'home/mine'));
    assert.deepEqual([mine.uid, mine.gid, mine.mode & 0o777], [nobody.uid, nobody.gid, 0o640]);
    await client.chmod('/home/mine', 0o600, true);
    assert.equal(statSync(join(dir, 'home/mine')).mode & 0o777, 0o600);
  });
});

test('the proxy\'s write-backs: an append sends only what was added, an unchanged file is not sent again', async () => {
  const { root: dir } = makeTarget();
  const client = await connect(dir, root);
  const writes = createFileWriteRequests(client, { decide: (path) => ({ action: 'remote', path }) });
  const writeBack = async (handle: number, content: string) => {
    const begun = await writes.writeback(handle, content.length);
    assert.equal(begun.kind, 'remote');
    const { from, token } = (begun as { value: { from: number; token: number } }).value;
    return writes.writebackData(token, from, Buffer.from(content.slice(from)), true);
  };
  const log = await writes.openForWrite('/app/data/a.txt', O_WRONLY | O_APPEND, 0);
  assert.equal(log.kind, 'remote');
  const { handle } = (log as { value: { handle: number } }).value;
  // The target appends on its own while the program holds the file.
  appendFileSync(join(dir, 'app/data/a.txt'), 'target\n');
  assert.deepEqual(await writeBack(handle, 'alpha\nprogram\n'), { kind: 'remote', value: undefined });
  assert.equal(readFileSync(join(dir, 'app/data/a.txt'), 'utf8'), 'alpha\ntarget\nprogram\n');

  const config = await writes.openForWrite('/etc/passwd', O_RDWR, 0);
  const configHandle = (config as { value: { handle: number } }).value.handle;
  writeFileSync(join(dir, 'etc/passwd'), 'changed on the target\n');
  await writeBack(configHandle, 'target passwd\n');
  assert.equal(readFileSync(join(dir, 'etc/passwd'), 'utf8'), 'changed on the target\n', 'unchanged since it was read: not sent');
  await writeBack(configHandle, 'edited\n');
  assert.equal(readFileSync(join(dir, 'etc/passwd'), 'utf8'), 'edited\n');
  assert.deepEqual(await writes.writeback(999, 0), { kind: 'error', code: 'EBADF' });
  assert.deepEqual(await writes.rename('/app/x', '/etc/y', false), { kind: 'error', code: 'ENOENT' });
});
