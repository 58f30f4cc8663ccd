// A real PostgreSQL (Debian's postgresql package) for tests: a throwaway cluster in a temporary data directory, run as
// the postgres user on one address, optionally inside a network namespace, with trust authentication for one subnet.
import { execFileSync, spawn } from 'node:child_process';
import process from 'node:process';
import { appendFileSync, chownSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Postgres {
  address: string;
  port: number;
  /** Runs SQL as the postgres user over the server's Unix socket; returns psql's unaligned rows. */
  query(sql: string): string;
  stop(): Promise<void>;
  /** For a test process that is exiting: no waiting. */
  killNow(): void;
}

export interface PostgresOptions {
  address: string;
  port: number;
  /** The network namespace (ip netns) to run in; the host's when absent. */
  netns?: string;
  /** Clients trusted without a password, as a CIDR. */
  trust: string;
  /** Prefix of the temporary directory's name (worlds name theirs so a dead run's are swept). */
  prefix: string;
}

/** The newest server installed by Debian's postgresql package, or a line saying what to install. */
export function postgresBin(): string {
  const versions = (() => {
    try {
      return readdirSync('/usr/lib/postgresql').filter((entry) => /^\d+$/.test(entry)).sort((a, b) => Number(b) - Number(a));
    } catch {
      return [];
    }
  })();
  if (versions.length === 0) throw new Error('PostgreSQL not found under /usr/lib/postgresql: install the Debian package postgresql');
  return `/usr/lib/postgresql/${versions[0]}/bin`;
}

export async function startPostgres(options: PostgresOptions): Promise<Postgres> {
  const bin = postgresBin();
  if (process.getuid?.() !== 0) throw new Error('starting PostgreSQL needs root (it runs as the postgres user)');
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
  const dir = mkdtempSync(join(tmpdir(), `${options.prefix}pg-`));
  chownSync(dir, uid, gid);
  const data = join(dir, 'data');
  execFileSync('runuser', ['-u', 'postgres', '--', join(bin, 'initdb'), '-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions'], { stdio: ['ignore', 'ignore', 'pipe'] });
  appendFileSync(join(data, 'pg_hba.conf'), `host all all ${options.trust} trust\n`);
  // setpriv execs the server itself (runuser would fork and wait), so our child is the postmaster and a SIGINT to it
  // is a fast shutdown that removes its shared memory.
  const serve = ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', join(bin, 'postgres'), '-D', data,
    '-c', `listen_addresses=${options.address}`, '-p', String(options.port), '-c', `unix_socket_directories=${dir}`, '-c', 'fsync=off', '-c', 'logging_collector=off'];
  const [command, ...args] = options.netns ? ['ip', 'netns', 'exec', options.netns, ...serve] : serve;
  const server = spawn(command!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  server.stderr!.setEncoding('utf8').on('data', (chunk: string) => (log += chunk));
  const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
  const stop = async () => {
    if (server.exitCode === null && server.signalCode === null) {
      server.kill('SIGINT');
      const killer = setTimeout(() => server.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const query = (sql: string) =>
    execFileSync('psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', dir, '-p', String(options.port), '-U', 'postgres', '-d', 'postgres', '-c', sql], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      query('SELECT 1');
      break;
    } catch (error) {
      if (server.exitCode !== null || Date.now() > deadline) {
        await stop();
        throw new Error(`PostgreSQL on ${options.address}:${options.port} did not start: ${log.trim() || (error as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  return { address: options.address, port: options.port, query, stop, killNow: () => server.kill('SIGKILL') };
}
