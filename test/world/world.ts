// Builds a realistic "pod" from namespaces for end-to-end tests: a target process with its own network and mount
// namespaces, and cluster services (DNS, HTTP, redis, UDP echo) in another namespace that only the pod can reach.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';
import { alive } from '../support/process-alive.ts';
import { startPostgres, type Postgres } from './postgres.ts';
import { cleanupWorld, ip, netnsNames, run, runQuiet, servicesRange6, sh } from './world-system.ts';

export interface World {
  readonly name: string;
  readonly target: {
    pid: number;
    /** Variables the target was started with. */
    env: Record<string, string>;
    /** Files only the target can see, by path, with their content. */
    files: Record<string, string>;
    /** A directory only the target can see, and its entries. */
    dir: { path: string; entries: string[] };
    /** A symlink inside the target and the file it points to. */
    link: { path: string; target: string };
    /** Its hostname: its own UTS namespace's, and its /etc/hostname (as a pod's). */
    hostname: string;
    /** A 4 KiB file for benchmarks. */
    benchFile: string;
    /** A file of several MiB, for streams. */
    bigFile: { path: string; size: number; sha256: string };
    /** A directory tree three levels deep (its files are in `files`), a link `link` to `a/one.txt`, and a file whose name is 254 bytes long. */
    tree: string;
    /** The pod's address on the link to the host. */
    address: string;
    /** The host's address on that link: where the host's connections to the pod come from. */
    hostAddress: string;
    /** With the `unixSockets` option: a redis listening only on a socket file in the target's mount namespace
     * (holding key = value), and a server on an abstract name in its network namespace that answers `greeting`. */
    unix?: { redisPath: string; key: string; value: string; abstractName: string; greeting: string };
    /** The target's own server, in its network namespace on every address: what incoming traffic is about. */
    http: {
      port: number;
      body: string;
      /** Method and path of every request it has answered, oldest first. */
      requests(): string[];
    };
  };
  readonly services: {
    dnsServer: string;
    /** The search domain the pod's resolv.conf lists first (the pod's namespace). */
    namespace: string;
    http: { name: string; shortName: string; address: string; port: number; body: string };
    redis: { name: string; shortName: string; address: string; port: number; key: string; value: string };
    /** With the `postgres` option: a PostgreSQL server, queried here over its Unix socket. */
    postgres?: { name: string; shortName: string; address: string; port: number; query(sql: string): string };
    /** Answers each datagram with its bytes, then `@` and the address it came from (`seenFrom` when it came through the pod). */
    udpEcho: { name: string; shortName: string; address: string; port: number; seenFrom: string };
    /** A name only the pod's /etc/hosts knows. */
    hostsAlias: { name: string; address: string };
    /** The range only the pod reaches; the host has an unreachable route for it. */
    range: string;
    /** With the `ipv6` option: the services' IPv6 addresses (AAAA records too), in a range only the pod reaches. */
    ipv6?: { http: string; redis: string; range: string };
  };
  destroy(): Promise<void>;
}

const MAX_WORLDS = 64;

export interface WorldOptions {
  /**
   * A firewall in the pod made with this iptables backend (a filter rule, and conntrack state tracking, as real
   * pods' firewalls have), so that tools which follow the namespace's backend have one to follow.
   */
  firewall?: 'legacy' | 'nft';
  /** A real PostgreSQL among the services (db.<namespace>.svc.cluster.local:5432), trusting the pod's connections. */
  postgres?: boolean;
  /** Unix sockets only the target has: a redis on a socket file in its mount namespace, and a server on an abstract name in its network namespace. */
  unixSockets?: boolean;
  /** IPv6 on the pod's link to the services: the HTTP service and redis also listen on an IPv6 address with an AAAA record. */
  ipv6?: boolean;
}

/** The programs the world runs, and the Debian package of each: a missing one is named up front. */
const servicePrograms = { dnsmasq: 'dnsmasq-base', 'redis-server': 'redis-server', 'redis-cli': 'redis-tools' };

export async function createWorld(options: WorldOptions = {}): Promise<World> {
  for (const [program, pkg] of Object.entries(servicePrograms)) {
    if (!sh(`command -v ${program}`).trim()) throw new Error(`test world: ${program} not found: install the Debian package ${pkg}`);
  }
  await sweepStaleWorlds();
  const index = freeIndex();
  const name = `dpw-${index}-${process.pid}`;
  const pod = `${name}-pod`;
  const svc = `${name}-svc`;
  const hostIf = `dpw${index}h`;
  const podIf = `dpw${index}p`;
  const podSvcIf = `dpw${index}s`;
  const svcIf = `dpw${index}v`;
  const link = `198.18.${index}`;
  const svcNet = `198.18.${64 + index}`;
  const range = `${svcNet}.0/24`;
  const svcNet6 = servicesRange6(index);
  const children: ChildProcess[] = [];
  let postgres: Postgres | undefined;
  const stage = mkdtempSync(join(tmpdir(), `${name}-`));

  let destroyed: Promise<void> | undefined;
  const destroy = () => {
    destroyed ??= (async () => {
      process.off('exit', onExit);
      await postgres?.stop();
      for (const child of children) child.kill('SIGKILL');
      await Promise.all(children.map((child) => (child.exitCode === null && child.signalCode === null ? new Promise((r) => child.once('exit', r)) : undefined)));
      await cleanupWorld(index, name);
      rmSync(stage, { recursive: true, force: true });
    })();
    return destroyed;
  };
  const onExit = () => {
    postgres?.killNow();
    for (const child of children) child.kill('SIGKILL');
    runQuiet('ip', ['netns', 'del', pod]);
    runQuiet('ip', ['netns', 'del', svc]);
    runQuiet('ip', ['route', 'del', 'unreachable', range]);
    runQuiet('ip', ['-6', 'route', 'del', 'unreachable', svcNet6.range]);
    rmSync(stage, { recursive: true, force: true });
  };
  process.on('exit', onExit);

  try {
    // Links: host <-> pod, pod <-> services. The host has no route to the services, only an unreachable one.
    ip('netns', 'add', pod);
    ip('netns', 'add', svc);
    ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', podIf, 'netns', pod);
    ip('addr', 'add', `${link}.1/30`, 'dev', hostIf);
    ip('link', 'set', hostIf, 'up');
    ip('-n', pod, 'addr', 'add', `${link}.2/30`, 'dev', podIf);
    ip('-n', pod, 'link', 'set', podIf, 'up');
    ip('-n', pod, 'link', 'set', 'lo', 'up');
    ip('-n', pod, 'link', 'add', podSvcIf, 'type', 'veth', 'peer', 'name', svcIf, 'netns', svc);
    ip('-n', pod, 'addr', 'add', `${svcNet}.1/24`, 'dev', podSvcIf);
    ip('-n', pod, 'link', 'set', podSvcIf, 'up');
    for (const host of [2, 10, 11, 12, 13, 14]) ip('-n', svc, 'addr', 'add', `${svcNet}.${host}/24`, 'dev', svcIf);
    ip('-n', svc, 'link', 'set', svcIf, 'up');
    ip('-n', svc, 'link', 'set', 'lo', 'up');
    ip('route', 'add', 'unreachable', range);
    if (options.ipv6) {
      ip('-n', pod, 'addr', 'add', `${svcNet6.prefix}1/64`, 'dev', podSvcIf, 'nodad');
      for (const host of [11, 12]) ip('-n', svc, 'addr', 'add', `${svcNet6.prefix}${host}/64`, 'dev', svcIf, 'nodad');
      ip('-6', 'route', 'add', 'unreachable', svcNet6.range);
    }
    if (options.firewall) {
      const iptables = `iptables-${options.firewall}`;
      run('ip', ['netns', 'exec', pod, iptables, '-w', '-A', 'INPUT', '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'DROP']);
      run('ip', ['netns', 'exec', pod, iptables, '-w', '-A', 'INPUT', '-p', 'tcp', '--dport', '9', '-j', 'REJECT']);
    }

    const namespace = 'shop';
    const services: World['services'] = {
      dnsServer: `${svcNet}.10`,
      namespace,
      http: { name: `api.${namespace}.svc.cluster.local`, shortName: 'api', address: `${svcNet}.11`, port: 8080, body: `hello from api ${randomBytes(4).toString('hex')}` },
      redis: { name: 'redis.data.svc.cluster.local', shortName: 'redis.data', address: `${svcNet}.12`, port: 6379, key: 'doppel:greeting', value: `redis says ${randomBytes(4).toString('hex')}` },
      udpEcho: { name: `echo.${namespace}.svc.cluster.local`, shortName: 'echo', address: `${svcNet}.14`, port: 7007, seenFrom: `${svcNet}.1` },
      hostsAlias: { name: 'pod-only-alias', address: `${svcNet}.11` },
      range,
      ...(options.ipv6 ? { ipv6: { http: `${svcNet6.prefix}11`, redis: `${svcNet6.prefix}12`, range: svcNet6.range } } : {}),
    };
    const v6 = services.ipv6;
    const db = { name: `db.${namespace}.svc.cluster.local`, shortName: 'db', address: `${svcNet}.13`, port: 5432 };

    children.push(
      spawnIn(svc, [
        'dnsmasq', '--no-daemon', '--no-resolv', '--no-hosts', '--conf-file=/dev/null', '--user=root',
        `--listen-address=${services.dnsServer}`, '--bind-interfaces', `--pid-file=${join(stage, 'dnsmasq.pid')}`,
        '--local=/cluster.local/', `--address=/${services.http.name}/${services.http.address}`, `--address=/${services.redis.name}/${services.redis.address}`,
        ...(options.postgres ? [`--address=/${db.name}/${db.address}`] : []),
        `--address=/${services.udpEcho.name}/${services.udpEcho.address}`,
        ...(v6 ? [`--address=/${services.http.name}/${v6.http}`, `--address=/${services.redis.name}/${v6.redis}`] : []),
      ]),
      spawnIn(svc, ['redis-server', '--port', String(services.redis.port), '--bind', services.redis.address, ...(v6 ? [v6.redis] : []), '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--daemonize', 'no', '--dir', stage]),
      spawnIn(svc, [
        process.execPath, '-e',
        `const serve = (address) => require('http').createServer((q, s) => s.end(process.env.BODY)).listen(${services.http.port}, address); ${[services.http.address, ...(v6 ? [v6.http] : [])].map((a) => `serve('${a}');`).join(' ')}`,
      ], { BODY: services.http.body }),
      spawnIn(svc, [
        process.execPath, '-e',
        `const s = require('dgram').createSocket('udp4'); s.on('message', (m, r) => s.send(Buffer.concat([m, Buffer.from('@' + r.address)]), r.port, r.address)); s.bind(${services.udpEcho.port}, '${services.udpEcho.address}')`,
      ]),
    );

    // The target's own server, answering on every address of the pod, and writing down what it was asked.
    const targetHttp = { port: 8000, body: `hello from the target ${randomBytes(4).toString('hex')}`, log: join(stage, 'target-http.log') };
    children.push(
      spawnIn(pod, [
        process.execPath, '-e',
        `const fs = require('fs'); require('http').createServer((q, s) => { q.resume(); q.on('end', () => { fs.appendFileSync(process.env.LOG, q.method + ' ' + q.url + '\\n'); s.end(process.env.BODY); }); }).listen(${targetHttp.port}, '0.0.0.0')`,
      ], { BODY: targetHttp.body, LOG: targetHttp.log }),
    );

    // The target: its own mount and UTS namespaces with tmpfs over /srv and /opt and its own resolv.conf, hosts and hostname.
    const secret = randomBytes(8).toString('hex');
    const env = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/root', DOPPEL_TEST_SECRET: secret, POD_NAME: `api-${index}`, SERVICE_URL: `http://${services.http.name}:${services.http.port}/` };
    const files: Record<string, string> = {
      '/srv/app/config/settings.json': `${JSON.stringify({ pod: `api-${index}`, secret })}\n`,
      '/srv/app/config/feature-flags': 'checkout=on\n',
      '/srv/app/data/a.txt': 'alpha\n',
      '/srv/app/data/b.txt': 'bravo\n',
      '/srv/app/data/c.txt': 'charlie\n',
      '/srv/tree/top.txt': 'top\n',
      '/srv/tree/a/one.txt': 'one\n',
      '/srv/tree/a/b/two.txt': 'two\n',
      '/srv/tree/a/b/c/three.txt': 'three\n',
      [`/srv/tree/long/${'n'.repeat(250)}.txt`]: 'a long name\n',
      // Under /opt, a root that stays local by default: only the mount makes it the target's.
      '/opt/app/mounted.conf': `mounted in the target ${secret}\n`,
    };
    for (const [path, content] of Object.entries(files)) {
      const staged = join(stage, 'root', path);
      run('mkdir', ['-p', join(staged, '..')]);
      writeFileSync(staged, content);
    }
    writeFileSync(join(stage, 'root', 'srv', 'bench-4k.bin'), randomBytes(4096));
    const big = randomBytes(6 * 1024 * 1024 + 123);
    writeFileSync(join(stage, 'root', 'srv', 'big.bin'), big);
    writeFileSync(join(stage, 'resolv.conf'), `nameserver ${services.dnsServer}\nsearch ${namespace}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:2\n`);
    const hostname = `api-${index}-${randomBytes(3).toString('hex')}`;
    writeFileSync(join(stage, 'hostname'), `${hostname}\n`);
    writeFileSync(join(stage, 'hosts'), `127.0.0.1 localhost\n::1 localhost\n${services.hostsAlias.address} ${services.hostsAlias.name}\n`);
    const setup = [
      'set -e',
      'mount -t tmpfs -o mode=0755 doppel-world /srv',
      `cp -a ${stage}/root/srv/. /srv/`,
      'mount -t tmpfs -o mode=0755 doppel-world-opt /opt',
      `cp -a ${stage}/root/opt/. /opt/`,
      'ln -s /srv/app/config /srv/app/current',
      'ln -s a/one.txt /srv/tree/link',
      'mkdir /srv/.etc',
      `cp ${stage}/resolv.conf ${stage}/hosts ${stage}/hostname /srv/.etc/`,
      'mount --bind /srv/.etc/resolv.conf /etc/resolv.conf',
      'mount --bind /srv/.etc/hosts /etc/hosts',
      'mount --bind /srv/.etc/hostname /etc/hostname',
      `hostname ${hostname}`,
      `exec env -i ${Object.entries(env).map(([k, v]) => `${k}='${v}'`).join(' ')} sleep infinity`,
    ].join('\n');
    const target = spawn('ip', ['netns', 'exec', pod, 'unshare', '--mount', '--uts', '--propagation', 'private', 'sh', '-c', setup], { stdio: ['ignore', 'ignore', 'inherit'] });
    children.push(target);
    const pid = target.pid!;
    await waitFor(`the target ${pid}`, () => runQuiet('grep', ['-qz', `DOPPEL_TEST_SECRET=${secret}`, `/proc/${pid}/environ`]));
    await waitFor('the cluster services', () => {
      const listening = sh(`ip netns exec ${svc} ss -Hltun`);
      const v6Listening = v6 ? [`[${v6.http}]:${services.http.port}`, `[${v6.redis}]:${services.redis.port}`] : [];
      return [`${services.dnsServer}:53`, `${services.http.address}:${services.http.port}`, `${services.redis.address}:${services.redis.port}`, `${services.udpEcho.address}:${services.udpEcho.port}`, ...v6Listening].every((needle) => listening.includes(needle));
    });
    await waitFor('the target\'s server', () => sh(`ip netns exec ${pod} ss -Hltn`).includes(`0.0.0.0:${targetHttp.port}`));
    let unix: World['target']['unix'];
    if (options.unixSockets) {
      unix = { redisPath: '/srv/run/redis.sock', key: 'doppel:unix', value: `unix redis says ${randomBytes(4).toString('hex')}`, abstractName: `doppel-${name}`, greeting: `abstract says ${randomBytes(4).toString('hex')}` };
      const inTarget = ['-t', String(pid), '-m', '-n', '--'];
      children.push(
        spawn('nsenter', [...inTarget, 'sh', '-c', `mkdir -p /srv/run && exec redis-server --port 0 --unixsocket ${unix.redisPath} --save '' --appendonly no --daemonize no --dir /srv/run`], { stdio: 'ignore' }),
        spawnIn(pod, [process.execPath, '-e', `require('net').createServer((s) => s.end(process.env.GREETING)).listen('\\0' + process.env.NAME)`], { GREETING: unix.greeting, NAME: unix.abstractName }),
      );
      await waitFor('the target\'s Unix sockets', () => {
        const listening = sh(`nsenter -t ${pid} -n ss -Hlx`);
        return listening.includes(unix!.redisPath) && listening.includes(`@${unix!.abstractName}`);
      });
      run('nsenter', [...inTarget, 'redis-cli', '-s', unix.redisPath, 'SET', unix.key, unix.value]);
    }
    run('ip', ['netns', 'exec', svc, 'redis-cli', '-h', services.redis.address, 'SET', services.redis.key, services.redis.value]);
    if (options.postgres) {
      // The pod reaches the services from its address on their link.
      postgres = await startPostgres({ address: db.address, port: db.port, netns: svc, trust: `${svcNet}.1/32`, prefix: `${name}-` });
      services.postgres = { ...db, query: postgres.query };
    }
    // The staged copies were only the way in; from here the files exist in the target alone.
    rmSync(join(stage, 'root'), { recursive: true, force: true });

    return {
      name,
      target: {
        pid,
        env,
        files,
        dir: { path: '/srv/app/data', entries: ['a.txt', 'b.txt', 'c.txt'] },
        link: { path: '/srv/app/current/feature-flags', target: '/srv/app/config/feature-flags' },
        hostname,
        ...(unix ? { unix } : {}),
        benchFile: '/srv/bench-4k.bin',
        bigFile: { path: '/srv/big.bin', size: big.length, sha256: createHash('sha256').update(big).digest('hex') },
        tree: '/srv/tree',
        address: `${link}.2`,
        hostAddress: `${link}.1`,
        http: {
          port: targetHttp.port,
          body: targetHttp.body,
          requests: () => (existsSync(targetHttp.log) ? readFileSync(targetHttp.log, 'utf8').split('\n').filter((line) => line !== '') : []),
        },
      },
      services,
      destroy,
    };
  } catch (error) {
    await destroy();
    throw error;
  }
}

/** Removes what earlier runs left when their process died before destroy(). */
export async function sweepStaleWorlds(): Promise<void> {
  for (const { index, name, owner } of netnsNames()) {
    if (!alive(owner)) await cleanupWorld(index, name);
  }
  for (const entry of readdirSync(tmpdir())) {
    const owner = /^dpw-\d+-(\d+)-/.exec(entry)?.[1];
    if (owner !== undefined && !alive(Number(owner))) rmSync(join(tmpdir(), entry), { recursive: true, force: true });
  }
}

function freeIndex(): number {
  const used = new Set(netnsNames().map((world) => world.index));
  for (let i = 0; i < MAX_WORLDS; i++) if (!used.has(i)) return i;
  throw new Error(`more than ${MAX_WORLDS} test worlds exist at once`);
}

function spawnIn(netns: string, command: string[], env: Record<string, string> = {}): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', netns, ...command], { stdio: 'ignore', env: { ...process.env, ...env } });
  child.on('error', () => {});
  return child;
}

async function waitFor(what: string, ready: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`test world: ${what} did not come up within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
