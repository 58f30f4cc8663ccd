// Outgoing filters by host name, end to end: the seed's "keep database writes local". A real PostgreSQL reachable only
// through the target (db.shop.svc.cluster.local) and another on the developer machine's loopback; psql under
// bin/doppel writes to the local one through a `local` filter naming the database's host, while the HTTP service and
// redis are still reached through the target.
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { startPostgres, type Postgres } from '../world/postgres.ts';
import { createWorld, type World } from '../world/world.ts';
import { leftoversAfter } from './leftovers.ts';
import { execIn, ok } from './run-doppel.ts';

const gate = needsRoot('outgoing filters by host name against a process target');

describe('outgoing filters by host name', gate, () => {
  let world: World;
  let local: Postgres;
  let dir: string;
  /** /etc/hosts and resolv.conf of the developer machine for these runs (see `machine`). */
  let withName: string[];
  let withoutName: string[];
  const db = () => world.services.postgres!;
  const pid = () => world.target.pid;
  const writeConfig = (name: string, config: object) => {
    const path = join(dir, name);
    writeFileSync(path, JSON.stringify(config));
    return path;
  };
  /**
   * bin/doppel in a mount namespace of its own with these /etc/hosts lines, the host's files untouched; its resolv.conf
   * names a loopback port where nothing answers, so local lookups of cluster names fail at once and leave no machine.
   */
  const machine = (name: string, hostsLines: string) => {
    writeFileSync(join(dir, `${name}.hosts`), `127.0.0.1 localhost\n${hostsLines}`);
    writeFileSync(join(dir, `${name}.resolv.conf`), 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
    return ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0.hosts" /etc/hosts && mount --bind "$0.resolv.conf" /etc/resolv.conf && exec "$@"', join(dir, name)];
  };
  const psql = (host: string, sql: string) => ['psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', host, '-U', 'postgres', '-d', 'postgres', '-c', sql];
  const insert = (item: string) => `INSERT INTO orders (item) VALUES ('${item}') RETURNING host(inet_server_addr())`;

  before(async () => {
    world = await createWorld({ postgres: true });
    dir = mkdtempSync(join(tmpdir(), `${world.name}-filter-`));
    // Any of 127.0.0.0/8 is loopback: a random one keeps concurrent runs apart on port 5432.
    const address = `127.${randomInt(1, 255)}.${randomInt(0, 256)}.${randomInt(1, 255)}`;
    local = await startPostgres({ address, port: db().port, trust: '127.0.0.0/8', prefix: `${world.name}-local-` });
    for (const server of [db(), local]) server.query('CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)');
    // The developer's way to say where the database is on their machine.
    withName = machine('with-name', `${local.address} ${db().name}\n`);
    withoutName = machine('without-name', '');
  });
  after(async () => {
    await local?.stop();
    await world?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  afterEach(async () => {
    if (!world) return;
    const left = await leftoversAfter(pid());
    assert.deepEqual(left, { agents: [], dirs: [] }, 'a session left an agent process or a socket directory behind');
  });

  test('without a filter, psql by the cluster name writes to the database behind the target', async () => {
    const out = ok(await execIn(pid(), psql(db().name, insert('unfiltered')), { wrap: withName }));
    assert.equal(out.trim(), db().address);
    assert.equal(db().query("SELECT count(*) FROM orders WHERE item = 'unfiltered'"), '1');
    assert.equal(local.query("SELECT count(*) FROM orders WHERE item = 'unfiltered'"), '0');
  });

  test('a local filter naming the database host sends its writes to the local PostgreSQL; HTTP and redis still go through the target', async () => {
    const config = writeConfig('local-db.json', { feature: { network: { outgoing: { filter: { local: [db().name] } } } } });
    const { http, redis } = world.services;
    const script = [
      `${psql(db().name, insert('kept local')).map((word) => `'${word.replace(/'/g, `'\\''`)}'`).join(' ')}`,
      `curl -sS --max-time 10 http://${http.name}:${http.port}/`,
      'echo',
      `redis-cli -h ${redis.name} GET ${redis.key}`,
    ].join(' && ');
    const out = ok(await execIn(pid(), ['sh', '-c', script], { flags: ['-f', config], wrap: withName }));
    assert.deepEqual(out.trim().split('\n'), [local.address, http.body, redis.value]);
    assert.equal(local.query("SELECT count(*) FROM orders WHERE item = 'kept local'"), '1');
    assert.equal(db().query("SELECT count(*) FROM orders WHERE item = 'kept local'"), '0');
  });

  test('name:port keeps only that port of the name local', async () => {
    const config = writeConfig('port.json', { feature: { network: { outgoing: { filter: { local: [`${db().name}:5433`] } } } } });
    const out = ok(await execIn(pid(), psql(db().name, insert('other port')), { flags: ['-f', config], wrap: withName }));
    assert.equal(out.trim(), db().address);
    assert.equal(local.query("SELECT count(*) FROM orders WHERE item = 'other port'"), '0');
  });

  test('a name kept local that does not resolve on this machine fails the connection and says why', async () => {
    const config = writeConfig('no-local-name.json', { feature: { network: { outgoing: { filter: { local: [db().name] } } } } });
    const result = await execIn(pid(), psql(db().name, insert('nowhere')), { flags: ['-f', config], wrap: withoutName });
    assert.notEqual(result.status, 0, result.stdout);
    assert.match(result.stderr, new RegExp(`${db().name.replace(/\./g, '\\.')} is kept local by feature\\.network\\.outgoing\\.filter, but it does not resolve on this machine`));
    assert.equal(db().query("SELECT count(*) FROM orders WHERE item = 'nowhere'"), '0');
  });

  test('a remote filter resolves its names on the target (mirrord): a connection by address matches them', async () => {
    const { http, redis } = world.services;
    const config = writeConfig('remote-names.json', { feature: { network: { outgoing: { filter: { remote: [`${http.name}:${http.port}`] } } } } });
    // By address, not by name: only the target's resolution of the filter's name can match it.
    assert.equal(ok(await execIn(pid(), ['curl', '-sS', '--max-time', '10', `http://${http.address}:${http.port}/`], { flags: ['-f', config], wrap: withoutName })), http.body);
    // Everything else is local, and the host has no route to the services.
    const refused = await execIn(pid(), ['redis-cli', '-h', redis.address, 'GET', redis.key], { flags: ['-f', config], wrap: withoutName });
    assert.doesNotMatch(refused.stdout, new RegExp(redis.value));
  });
});
