// Node programs as they are written, under doppel: worker threads resolving names, a child process started with a
// replaced environment, and a stream of a file of several MiB that only the target has.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { needsRoot } from '../support/root.ts';
import { execIn, ok } from './run-doppel.ts';
import { suiteWorld } from './suite-world.ts';

describe('node programs under doppel', needsRoot('doppel exec against a process target'), () => {
  const world = suiteWorld();
  const pid = () => world().target.pid;

  test('worker_threads resolve cluster names at once: dns.lookup (getaddrinfo) and dns.resolve4 (c-ares)', async () => {
    const { http, redis, udpEcho } = world().services;
    const script = `
      const { Worker } = require('worker_threads');
      const names = ${JSON.stringify([http.shortName, redis.shortName, udpEcho.name, http.name])};
      const worker = (name) => new Promise((resolve, reject) => {
        const code = "const dns = require('dns').promises; const { parentPort, workerData } = require('worker_threads');" +
          "Promise.all([dns.lookup(workerData), dns.resolve4(workerData.includes('.svc.') ? workerData : workerData + '.shop.svc.cluster.local').catch((e) => [e.code])])" +
          ".then(([looked, resolved]) => parentPort.postMessage([looked.address, resolved]));";
        new Worker(code, { eval: true, workerData: name }).once('message', resolve).once('error', reject);
      });
      Promise.all(names.map(worker)).then((found) => process.stdout.write(JSON.stringify(found)));
    `;
    assert.deepEqual(JSON.parse(ok(await execIn(pid(), ['node', '-e', script]))), [
      [http.address, [http.address]],
      // redis.data is in another namespace: its short name is relative to svc.cluster.local, which resolve4 is not given.
      [redis.address, ['ENOTFOUND']],
      [udpEcho.address, [udpEcho.address]],
      [http.address, [http.address]],
    ]);
  });

  test('the layer grows the descriptor table for its connection at load, not at the first remote call of a program with threads', async () => {
    // Grown later, with Node.js's threads running, the kernel waits for an RCU grace period: 10-20 ms measured.
    const script = "const size = () => Number(/FDSize:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1]);" +
      "const before = size(); require('fs').readFileSync(process.argv[1]); console.log(JSON.stringify([before, size()]));";
    const [before, after] = JSON.parse(ok(await execIn(pid(), ['node', '-e', script, Object.keys(world().target.files)[0]!]))) as [number, number];
    // The layer's connection is numbered from 900 up: the table holds it before the first remote call.
    assert.ok(before > 900, `FDSize ${before} before the first remote call`);
    assert.equal(after, before);
  });

  test('child_process with a replaced environment ({PATH} only) still reads, resolves and connects through the target', async () => {
    const settings = '/srv/app/config/settings.json';
    const { http, udpEcho } = world().services;
    const child = `
      const dns = require('dns').promises;
      (async () => {
        const file = require('fs').readFileSync(${JSON.stringify(settings)}, 'utf8');
        const looked = (await dns.lookup(${JSON.stringify(http.shortName)})).address;
        const resolved = await dns.resolve4(${JSON.stringify(udpEcho.name)});
        const body = await (await fetch('http://${http.shortName}:${http.port}/')).text();
        process.stdout.write(JSON.stringify({ file, looked, resolved, body, replaced: process.env.HOME === undefined && process.env.POD_NAME === undefined }));
      })();
    `;
    const parent = `
      const { execFile } = require('child_process');
      execFile(process.execPath, ['-e', ${JSON.stringify(child)}], { env: { PATH: process.env.PATH } }, (error, stdout, stderr) => {
        if (error) { process.stderr.write(stderr); process.exit(1); }
        process.stdout.write(stdout);
      });
    `;
    assert.deepEqual(JSON.parse(ok(await execIn(pid(), ['node', '-e', parent]))), {
      file: world().target.files[settings],
      looked: http.address,
      resolved: [udpEcho.address],
      body: http.body,
      replaced: true,
    });
  });

  test('fs.createReadStream of a multi-MiB file only the target has streams every byte', async () => {
    const { path, size, sha256 } = world().target.bigFile;
    const script = `
      const hash = require('crypto').createHash('sha256');
      let bytes = 0;
      let chunks = 0;
      require('fs').createReadStream(${JSON.stringify(path)}, { highWaterMark: 64 * 1024 })
        .on('data', (chunk) => { hash.update(chunk); bytes += chunk.length; chunks++; })
        .on('end', () => process.stdout.write(JSON.stringify({ bytes, sha256: hash.digest('hex'), manyChunks: chunks > 50 })));
    `;
    assert.deepEqual(JSON.parse(ok(await execIn(pid(), ['node', '-e', script]))), { bytes: size, sha256, manyChunks: true });
  });
});
