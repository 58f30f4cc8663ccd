// The TypeScript side of the layer wire agrees with layer/include/doppel-wire.h: the C compiler reports the struct sizes.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import {
  ADDR_SIZE, BIND_REQ_SIZE, FAST_PATH_FILE, HELLO_REMOTE_WRITES, BIND_RESP_SIZE, CONNECT_REQ_SIZE, CONNECT_RESP_SIZE, decodeAddr, decodeRequest, encodeAddr, encodeAnswer, encodeFastPath, GAI_REQ_SIZE,
  HELLO_LOOPBACK_TCP_LOCAL, HELLO_REQ_SIZE, HELLO_RESP_SIZE, LISTEN_REQ_SIZE, MAX_REPLY, Op, PEER_OF_REQ_SIZE, PEER_OF_RESP_SIZE, REQ_HEADER, RESP_HEADER,
  RULE_SIZE, RULES_MAX, RULES_MAX_BYTES, STANDIN_DIR, STAT_SIZE, UDP_ROUTE_REQ_SIZE, UDP_ROUTE_RESP_SIZE, UNLISTEN_REQ_SIZE,
} from '../../src/proxy/layer-wire.ts';
import { FCHMOD_REQ_SIZE, OPEN_WRITE_SIZE, WRITEBACK_CHUNK, WRITEBACK_DATA_SIZE, WRITEBACK_REQ_SIZE, WRITEBACK_RESP_SIZE } from '../../src/proxy/layer-wire.ts';
import { CONNECT_INET6_SOCKET, CONNECT_MAKES_SOCKET, CONNECT_TAKES_FD, encodeStat, HANDED_OVER_REQ_SIZE, HANDOVER_SIZE, isOneWay, MAKE_SOCKET_SIZE, OPEN_NO_HOST_FILE, OPEN_REQ_SIZE } from '../../src/proxy/layer-wire.ts';
import { AGENT_DNS_SOCKET, HELLO_AGENT_DNS, HELLO_TRACE, HELLO_UDP_IN_NETWORK, LAYER_CALL_SIZE } from '../../src/proxy/layer-wire.ts';

/** Compiles and runs a C program against the wire header; returns its stdout. */
function runC(body: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'doppel-wire-'));
  try {
    const include = fileURLToPath(new URL('../../layer/include/', import.meta.url));
    writeFileSync(join(dir, 'wire.c'), `#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "doppel-wire.h"
int main(void) { ${body} return 0; }`);
    execFileSync('cc', ['-Wall', '-Werror', '-I', include, '-o', join(dir, 'wire'), join(dir, 'wire.c')]);
    return execFileSync(join(dir, 'wire'), { encoding: 'utf8' }).trim();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('struct sizes and op numbers match the C header', () => {
  const structs = ['dp_req_hdr', 'dp_resp_hdr', 'dp_stat', 'dp_addr', 'dp_gai_req', 'dp_connect_req', 'dp_connect_resp',
    'dp_bind_req', 'dp_bind_resp', 'dp_listen_req', 'dp_peer_of_req', 'dp_peer_of_resp', 'dp_unlisten_req', 'dp_udp_route_req', 'dp_udp_route_resp',
    'dp_hello_req', 'dp_hello_resp', 'dp_rule'];
  const sizes = runC(structs.map((name) => `printf("%zu ", sizeof(struct ${name}));`).join(' ')).split(' ').map(Number);
  assert.deepEqual(sizes, [REQ_HEADER, RESP_HEADER, STAT_SIZE, ADDR_SIZE, GAI_REQ_SIZE, CONNECT_REQ_SIZE, CONNECT_RESP_SIZE,
    BIND_REQ_SIZE, BIND_RESP_SIZE, LISTEN_REQ_SIZE, PEER_OF_REQ_SIZE, PEER_OF_RESP_SIZE, UNLISTEN_REQ_SIZE, UDP_ROUTE_REQ_SIZE, UDP_ROUTE_RESP_SIZE,
    HELLO_REQ_SIZE, HELLO_RESP_SIZE, RULE_SIZE]);
  assert.deepEqual(runC('printf("%u %s %s %u", DP_MAX_REPLY, DP_STANDIN_DIR, DP_FAST_PATH_FILE, DP_HELLO_REMOTE_WRITES);').split(' '), [String(MAX_REPLY), STANDIN_DIR, FAST_PATH_FILE, String(HELLO_REMOTE_WRITES)]);
  const ops = ['OPEN', 'STAT', 'ACCESS', 'READLINK', 'REALPATH', 'GETADDRINFO', 'CONNECT', 'BIND', 'LISTEN', 'PEER_OF', 'UNLISTEN', 'UDP_ROUTE', 'UNIX_CONNECT', 'HELLO'];
  const numbers = runC(ops.map((name) => `printf("%d ", DP_OP_${name});`).join(' ')).split(' ').map(Number);
  assert.deepEqual(numbers, [Op.open, Op.stat, Op.access, Op.readlink, Op.realpath, Op.getaddrinfo, Op.connect, Op.bind, Op.listen, Op.peerOf, Op.unlisten, Op.udpRoute, Op.unixConnect, Op.hello]);
  const limits = runC('printf("%d %d %u %d %d %d %d %d %d %d", DP_RULES_MAX, DP_RULES_MAX_BYTES, DP_HELLO_LOOPBACK_TCP_LOCAL, DP_MATCH_EXACT, DP_MATCH_PREFIX, DP_MATCH_SUFFIX, DP_MATCH_CONTAINS, DP_RULE_LOCAL, DP_RULE_ASK, DP_RULE_REMOTE);');
  assert.equal(limits, `${RULES_MAX} ${RULES_MAX_BYTES} ${HELLO_LOOPBACK_TCP_LOCAL} 1 2 3 4 1 2 3`);
});

test('hello: the layer says who it is; the answer is the fast path\'s flags and rules as the layer reads them', () => {
  const who = cBytes('struct dp_hello_req r = {.pid = 4242, .ppid = 1};');
  const hello = decodeRequest(Op.hello, Buffer.concat([who, Buffer.from('/usr/bin/python3\0')]));
  assert.deepEqual(hello, { op: 'hello', pid: 4242, ppid: 1, executable: '/usr/bin/python3' });
  const answer = encodeAnswer(hello, { kind: 'remote', value: { loopbackTcpLocal: true, remoteWrites: true, rules: [{ match: 'prefix', verdict: 'local', text: '/usr/' }, { match: 'exact', verdict: 'ask', text: '/etc/hosts' }] } }, 7);
  assert.deepEqual([answer.readInt32LE(4), answer.readUInt32LE(8)], [0, 7]);
  const body = answer.subarray(RESP_HEADER);
  assert.equal(body.readUInt32LE(0), HELLO_LOOPBACK_TCP_LOCAL | HELLO_REMOTE_WRITES);
  // The proxy's file next to its socket holds the same payload.
  assert.deepEqual(encodeFastPath({ loopbackTcpLocal: true, remoteWrites: true, rules: [{ match: 'prefix', verdict: 'local', text: '/usr/' }, { match: 'exact', verdict: 'ask', text: '/etc/hosts' }] }), body);
  // The pids, where the layer reads them; a remote rule's verdict.
  const pids = encodeFastPath({ loopbackTcpLocal: false, remoteWrites: false, handoverPid: 77, rootPid: 4242, networkPid: 4243, targetStart: 0x1_0000_2345n, rules: [{ match: 'contains', verdict: 'remote', text: '' }] });
  assert.deepEqual(pids.subarray(0, HELLO_RESP_SIZE), cBytes('struct dp_hello_resp r = {.flags = 0, .handover_pid = 77, .root_pid = 4242, .network_pid = 4243, .target_start = 0x100002345ull};'));
  assert.equal(pids.readUInt16LE(HELLO_RESP_SIZE + 2), 3);
  const rules = body.subarray(HELLO_RESP_SIZE);
  assert.deepEqual([rules.readUInt16LE(0), rules.readUInt16LE(2), rules.readUInt32LE(4), rules.toString('ascii', 8, 13)], [2, 1, 5, '/usr/']);
  assert.deepEqual([rules.readUInt16LE(13), rules.readUInt16LE(15), rules.readUInt32LE(17), rules.toString('ascii', 21)], [1, 2, 10, '/etc/hosts']);
  // A table past the layer's limits is sent empty: the layer then asks about every path.
  const many = Array.from({ length: RULES_MAX + 1 }, () => ({ match: 'exact' as const, verdict: 'local' as const, text: '/x' }));
  assert.equal(encodeAnswer(hello, { kind: 'remote', value: { loopbackTcpLocal: false, remoteWrites: false, rules: many } }, 7).length, RESP_HEADER + HELLO_RESP_SIZE);
});

/** The bytes of a struct the C side fills, as the layer would send them. */
function cBytes(declaration: string): Buffer {
  return Buffer.from(runC(`${declaration} const unsigned char *p = (const void *)&r; for (size_t i = 0; i < sizeof r; i++) printf("%02x", p[i]);`), 'hex');
}

test('the agent\'s lookups, UDP in the target\'s network and the trace: flags, socket name and the layer\'s call as the C header has them', () => {
  assert.deepEqual(runC('printf("%u %u %u %zu %d %s", DP_HELLO_AGENT_DNS, DP_HELLO_UDP_IN_NETWORK, DP_HELLO_TRACE, sizeof(struct dp_layer_call), DP_OP_LAYER_CALL, DP_AGENT_DNS_SOCKET);').split(' '),
    [HELLO_AGENT_DNS, HELLO_UDP_IN_NETWORK, HELLO_TRACE, LAYER_CALL_SIZE, Op.layerCall, AGENT_DNS_SOCKET].map(String));
  const flags = encodeFastPath({ rules: [], loopbackTcpLocal: false, remoteWrites: false, networkPid: 7, udpInNetwork: true, agentDns: true, traced: true }).readUInt32LE(0);
  assert.equal(flags, HELLO_AGENT_DNS | HELLO_UDP_IN_NETWORK | HELLO_TRACE);
  const call = decodeRequest(Op.layerCall, Buffer.concat([cBytes('struct dp_layer_call r = {.ns = 1500000};'), Buffer.from('open\0/srv/app/x\0')]));
  assert.deepEqual(call, { op: 'layerCall', ms: 1.5, call: 'open', subject: '/srv/app/x' });
  assert.equal(isOneWay(call), true);
});

const cAddr = (family: 'AF_INET' | 'AF_INET6', port: number, bytes: number[]) => `{.family = ${family}, .port = ${port}, .addr = {${bytes.join(', ')}}}`;

test('the incoming requests the layer fills decode field by field', () => {
  assert.deepEqual(decodeRequest(Op.bind, cBytes(`struct dp_bind_req r = {.socktype = SOCK_STREAM, .requested = ${cAddr('AF_INET', 8080, [0, 0, 0, 0])}};`)), {
    op: 'bind', socktype: 1, requested: { family: 4, address: '0.0.0.0', port: 8080 },
  });
  const listen = cBytes(`struct dp_listen_req r = {.requested = ${cAddr('AF_INET6', 80, [])}, .local = ${cAddr('AF_INET6', 41000, [])},
    .inode = 123456789012ull, .flags = DP_LISTEN_V6ONLY};`);
  assert.deepEqual(decodeRequest(Op.listen, listen), {
    op: 'listen',
    requested: { family: 6, address: '::', port: 80 },
    local: { family: 6, address: '::', port: 41000 },
    socket: { inode: 123456789012n, v6only: true },
  });
  assert.deepEqual(decodeRequest(Op.peerOf, cBytes(`struct dp_peer_of_req r = {.peer = ${cAddr('AF_INET', 52000, [127, 0, 0, 1])}, .listener_port = 41000};`)), {
    op: 'peerOf', peer: { family: 4, address: '127.0.0.1', port: 52000 }, listenerPort: 41000,
  });
  assert.deepEqual(decodeRequest(Op.unlisten, cBytes('struct dp_unlisten_req r = {.port = 8080, .inode = 77};')), { op: 'unlisten', port: 8080, inode: 77n });
  assert.throws(() => decodeRequest(Op.listen, Buffer.alloc(LISTEN_REQ_SIZE - 1)), /payload/);
});

test('the incoming answers encode as the layer reads them', () => {
  const caller = { family: 4 as const, address: '198.18.3.1', port: 40404 };
  const called = { family: 4 as const, address: '198.18.3.2', port: 80 };
  const bind = decodeRequest(Op.bind, Buffer.concat([Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]), encodeAddr(called)]));
  const bound = encodeAnswer(bind, { kind: 'remote', value: { port: 0x1234, fallback: true } }, 7);
  assert.deepEqual([bound.readUInt32LE(0), bound.readInt32LE(4), bound.readUInt32LE(8), bound.readUInt32LE(16), bound.readUInt32LE(20)], [BIND_RESP_SIZE, 0, 7, 0x1234, 1]);
  const peerOf = decodeRequest(Op.peerOf, Buffer.concat([encodeAddr({ family: 4, address: '127.0.0.1', port: 1 }), Buffer.alloc(8)]));
  const answer = encodeAnswer(peerOf, { kind: 'remote', value: { peer: caller, local: called } }, 7);
  assert.equal(answer.readUInt32LE(0), PEER_OF_RESP_SIZE);
  assert.deepEqual([decodeAddr(answer, RESP_HEADER), decodeAddr(answer, RESP_HEADER + ADDR_SIZE)], [caller, called]);
  assert.equal(encodeAnswer(peerOf, { kind: 'local' }, 7).readInt32LE(4), 1);
  const listen = decodeRequest(Op.listen, Buffer.concat([encodeAddr(called), encodeAddr(called), Buffer.alloc(16)]));
  assert.equal(encodeAnswer(listen, { kind: 'error', code: 'EADDRINUSE' }, 7).readInt32LE(4), -98);
});

test('a connect kept local may name the address to connect to instead', () => {
  const connect = decodeRequest(Op.connect, Buffer.concat([Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]), encodeAddr({ family: 4, address: '198.18.64.13', port: 5432 })]));
  const instead = { family: 4 as const, address: '127.1.2.3', port: 5432 };
  const answer = encodeAnswer(connect, { kind: 'local', address: instead }, 7);
  assert.deepEqual([answer.readUInt32LE(0), answer.readInt32LE(4)], [ADDR_SIZE, 1]);
  assert.deepEqual(decodeAddr(answer, RESP_HEADER), instead);
  assert.equal(encodeAnswer(connect, { kind: 'local' }, 7).readUInt32LE(0), 0);
});

test('a connect says what the program\'s socket can take; a hand-over answer and the one-way reply match the C header', () => {
  const sizes = runC('printf("%zu %zu %u %u %d %d", sizeof(struct dp_handover), sizeof(struct dp_handed_over), DP_CONNECT_TAKES_FD, DP_CONNECT_INET6_SOCKET, DP_OP_HANDED_OVER, DP_HANDOVER);').split(' ').map(Number);
  assert.deepEqual(sizes.slice(0, 5), [HANDOVER_SIZE, HANDED_OVER_REQ_SIZE, CONNECT_TAKES_FD, CONNECT_INET6_SOCKET, Op.handedOver]);
  const connect = decodeRequest(Op.connect, cBytes(`struct dp_connect_req r = {.socktype = SOCK_STREAM, .flags = DP_CONNECT_TAKES_FD | DP_CONNECT_INET6_SOCKET, .remote = ${cAddr('AF_INET6', 6379, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 198, 18, 64, 12])}};`));
  assert.deepEqual(connect, { op: 'connect', socktype: 1, remote: { family: 4, address: '198.18.64.12', port: 6379 }, socket: { takesFd: true, makesSocket: false, family: 6 } });
  assert.deepEqual((decodeRequest(Op.connect, cBytes(`struct dp_connect_req r = {.socktype = SOCK_STREAM, .remote = ${cAddr('AF_INET', 80, [198, 18, 64, 11])}};`)) as { socket: unknown }).socket, { takesFd: false, makesSocket: false, family: 4 });
  const answer = encodeAnswer(connect, { kind: 'remote', value: { handover: { pid: 4242, fd: 23, token: 2 ** 40 + 5 } } }, 7);
  assert.deepEqual([answer.readUInt32LE(0), answer.readInt32LE(4), answer.readUInt32LE(8)], [HANDOVER_SIZE, sizes[5], 7]);
  assert.deepEqual(answer.subarray(RESP_HEADER), cBytes('struct dp_handover r = {.pid = 4242, .fd = 23, .token = (1ull << 40) + 5};'));
  const taken = decodeRequest(Op.handedOver, cBytes('struct dp_handed_over r = {.token = (1ull << 40) + 5, .status = 0};'));
  assert.deepEqual(taken, { op: 'handedOver', token: 2 ** 40 + 5, taken: true });
  assert.deepEqual(decodeRequest(Op.handedOver, cBytes('struct dp_handed_over r = {.token = 3, .status = -1};')), { op: 'handedOver', token: 3, taken: false });
  assert.equal(isOneWay(taken), true);
  assert.equal(isOneWay(connect), false);
  // The hello's answer names the agent whose sockets the layer may take.
  assert.deepEqual(encodeFastPath({ loopbackTcpLocal: false, remoteWrites: false, rules: [], handoverPid: 4242 }), cBytes('struct dp_hello_resp r = {.flags = 0, .handover_pid = 4242};'));
});

test('a connect says the layer can make its socket in another network; the answer naming where matches the C header', () => {
  const sizes = runC('printf("%zu %u %d", sizeof(struct dp_make_socket), DP_CONNECT_MAKES_SOCKET, DP_MAKE_SOCKET);').split(' ').map(Number);
  assert.deepEqual(sizes.slice(0, 2), [MAKE_SOCKET_SIZE, CONNECT_MAKES_SOCKET]);
  const connect = decodeRequest(Op.connect, cBytes(`struct dp_connect_req r = {.socktype = SOCK_STREAM, .flags = DP_CONNECT_MAKES_SOCKET | DP_CONNECT_TAKES_FD, .remote = ${cAddr('AF_INET', 6379, [198, 18, 64, 12])}};`));
  assert.deepEqual((connect as { socket: unknown }).socket, { takesFd: true, makesSocket: true, family: 4 });
  const answer = encodeAnswer(connect, { kind: 'remote', value: { makeSocketIn: 4242 } }, 9);
  assert.deepEqual([answer.readUInt32LE(0), answer.readInt32LE(4), answer.readUInt32LE(8)], [MAKE_SOCKET_SIZE, sizes[2], 9]);
  assert.deepEqual(answer.subarray(RESP_HEADER), cBytes('struct dp_make_socket r = {.pid = 4242};'));
});

test('an open says whether the process may open the target\'s file itself; the answer naming its path matches the C header', () => {
  const sizes = runC('printf("%zu %u %d", sizeof(struct dp_open_req), DP_OPEN_NO_HOST_FILE, DP_HOST_FILE);').split(' ').map(Number);
  assert.deepEqual(sizes.slice(0, 2), [OPEN_REQ_SIZE, OPEN_NO_HOST_FILE]);
  const open = decodeRequest(Op.open, Buffer.concat([cBytes('struct dp_open_req r = {.flags = O_RDONLY | O_CLOEXEC, .mode = 0};'), Buffer.from('/srv/a.txt\0')]));
  assert.deepEqual(open, { op: 'open', flags: Number(runC('printf("%d", O_RDONLY | O_CLOEXEC);')), mode: 0, hostFile: true, path: '/srv/a.txt' });
  const asked = decodeRequest(Op.open, Buffer.concat([cBytes('struct dp_open_req r = {.flags = O_RDONLY, .options = DP_OPEN_NO_HOST_FILE};'), Buffer.from('/srv/a.txt\0')]));
  assert.equal((asked as { hostFile: boolean }).hostFile, false);
  const stat = { dev: 1, ino: 2, mode: 0o100644, nlink: 1, uid: 0, gid: 0, rdev: 0, size: 5, blksize: 4096, blocks: 8, atimeSec: 0, atimeNsec: 0, mtimeSec: 0, mtimeNsec: 0, ctimeSec: 0, ctimeNsec: 0 };
  const answer = encodeAnswer(open, { kind: 'remote', value: { stat, hostPath: '/proc/42/root/srv/a.txt' } }, 3);
  assert.deepEqual([answer.readUInt32LE(0), answer.readInt32LE(4), answer.readUInt32LE(8)], [STAT_SIZE + '/proc/42/root/srv/a.txt\0'.length, sizes[2], 3]);
  assert.deepEqual(answer.subarray(RESP_HEADER, RESP_HEADER + STAT_SIZE), encodeStat(stat));
  assert.equal(answer.subarray(RESP_HEADER + STAT_SIZE).toString(), '/proc/42/root/srv/a.txt\0');
});

test('a UDP route request decodes as the layer fills it, and its relay encodes as the layer reads it', () => {
  const request = decodeRequest(Op.udpRoute, cBytes(`struct dp_udp_route_req r = {.remote = ${cAddr('AF_INET', 53, [198, 18, 64, 10])}};`));
  assert.deepEqual(request, { op: 'udpRoute', remote: { family: 4, address: '198.18.64.10', port: 53 } });
  const relay = { family: 4 as const, address: '127.0.0.1', port: 40999 };
  const answer = encodeAnswer(request, { kind: 'remote', value: { via: relay } }, 7);
  assert.deepEqual([answer.readUInt32LE(0), answer.readInt32LE(4), decodeAddr(answer, RESP_HEADER)], [UDP_ROUTE_RESP_SIZE, 0, relay]);
  assert.equal(encodeAnswer(request, { kind: 'error', code: 'ENETUNREACH' }, 7).readInt32LE(4), -101);
});

test('a Unix connect names a path or an abstract name, and is answered with the proxy\'s socket path', () => {
  assert.deepEqual(decodeRequest(Op.unixConnect, Buffer.from('/srv/run/redis.sock')), { op: 'unixConnect', path: '/srv/run/redis.sock', abstract: false });
  assert.deepEqual(decodeRequest(Op.unixConnect, Buffer.from('/run/a.sock\0junk')), { op: 'unixConnect', path: '/run/a.sock', abstract: false });
  assert.deepEqual(decodeRequest(Op.unixConnect, Buffer.from('\0doppel-x')), { op: 'unixConnect', path: 'doppel-x', abstract: true });
  assert.throws(() => decodeRequest(Op.unixConnect, Buffer.alloc(0)), /payload/);
  const answer = encodeAnswer({ op: 'unixConnect', path: 'p', abstract: false }, { kind: 'remote', value: '/tmp/d/unix-1.sock' }, 7);
  assert.deepEqual([answer.readInt32LE(4), answer.toString('utf8', RESP_HEADER)], [0, '/tmp/d/unix-1.sock\0']);
});

test('addresses round-trip, and IPv4-mapped IPv6 means IPv4', () => {
  assert.deepEqual(decodeAddr(encodeAddr({ family: 4, address: '198.18.64.12', port: 6379 }), 0), { family: 4, address: '198.18.64.12', port: 6379 });
  assert.deepEqual(decodeAddr(encodeAddr({ family: 6, address: '::ffff:198.18.0.1', port: 80 }), 0), { family: 4, address: '198.18.0.1', port: 80 });
  assert.equal(decodeAddr(encodeAddr({ family: 6, address: 'fd00::1', port: 1 }), 0).address, 'fd00::1');
});

test('answers carry errno and EAI codes as glibc numbers', () => {
  const stat = decodeRequest(Op.stat, Buffer.concat([Buffer.from([1, 0, 0, 0]), Buffer.from('/srv/x\0')]));
  assert.deepEqual(stat, { op: 'stat', follow: false, path: '/srv/x' });
  assert.equal(encodeAnswer(stat, { kind: 'error', code: 'ENOENT' }, 7).readInt32LE(4), -2);
  const gai = decodeRequest(Op.getaddrinfo, Buffer.concat([Buffer.alloc(16), Buffer.from('redis\0')]));
  assert.equal(encodeAnswer(gai, { kind: 'error', code: 'EAI_NONAME' }, 7).readInt32LE(4), -2);
  assert.equal(encodeAnswer(gai, { kind: 'error', code: 'EAI_AGAIN' }, 7).readInt32LE(4), -3);
  const local = encodeAnswer(stat, { kind: 'local', path: '/other' }, 7);
  assert.equal(local.readInt32LE(4), 1);
  assert.equal(local.subarray(RESP_HEADER).toString(), '/other\0');
  assert.throws(() => decodeRequest(Op.open, Buffer.from('no nul')), /payload|NUL/);
});

test('write mode: struct sizes, op numbers and a write-back piece match the C header', () => {
  const structs = ['dp_open_write', 'dp_writeback_req', 'dp_writeback_resp', 'dp_writeback_data', 'dp_fchmod_req'];
  const sizes = runC(`${structs.map((name) => `printf("%zu ", sizeof(struct ${name}));`).join(' ')} printf("%u", DP_WRITEBACK_CHUNK);`).split(' ').map(Number);
  assert.deepEqual(sizes, [OPEN_WRITE_SIZE, WRITEBACK_REQ_SIZE, WRITEBACK_RESP_SIZE, WRITEBACK_DATA_SIZE, FCHMOD_REQ_SIZE, WRITEBACK_CHUNK]);
  const ops = ['WRITEBACK', 'WRITEBACK_DATA', 'MKDIR', 'RMDIR', 'UNLINK', 'RENAME', 'CHMOD', 'FCHMOD'];
  const numbers = runC(ops.map((name) => `printf("%d ", DP_OP_${name});`).join(' ')).split(' ').map(Number);
  assert.deepEqual(numbers, [Op.writeback, Op.writebackData, Op.mkdir, Op.rmdir, Op.unlink, Op.rename, Op.chmod, Op.fchmod]);
  const piece = Buffer.concat([cBytes('struct dp_writeback_data r = {.token = 7, .offset = 65536, .flags = DP_WRITEBACK_LAST};'), Buffer.from('tail')]);
  assert.deepEqual(decodeRequest(Op.writebackData, piece), { op: 'writebackData', token: 7, offset: 65536, last: true, data: Buffer.from('tail') });
  assert.deepEqual(decodeRequest(Op.rename, Buffer.from('\x01\0\0\0/a\0/b\0', 'latin1')), { op: 'rename', noReplace: true, from: '/a', to: '/b' });
  const writable = encodeAnswer({ op: 'open', flags: 0, mode: 0, hostFile: false, path: '/x' }, { kind: 'remote', value: { stat: { dev: 0, ino: 0, mode: 0, nlink: 0, uid: 0, gid: 0, rdev: 0, size: 2, blksize: 0, blocks: 0, atimeSec: 0, atimeNsec: 0, mtimeSec: 0, mtimeNsec: 0, ctimeSec: 0, ctimeNsec: 0 }, data: Buffer.from('hi'), handle: 9 } }, 7);
  assert.equal(writable.readInt32LE(4), Number(runC('printf("%d", DP_WRITABLE);')));
  assert.equal(writable.readBigUInt64LE(RESP_HEADER), 9n);
  assert.equal(writable.subarray(RESP_HEADER + OPEN_WRITE_SIZE + STAT_SIZE).toString(), 'hi');
});

test('an answer echoes the sequence number of its request; a directory names its stand-in; a file too large for one answer is EFBIG', () => {
  const open = decodeRequest(Op.open, Buffer.concat([Buffer.alloc(OPEN_REQ_SIZE), Buffer.from('/srv/app\0')]));
  const stat = { dev: 1, ino: 2, mode: 0o40755, nlink: 3, uid: 0, gid: 0, rdev: 0, size: 60, blksize: 4096, blocks: 0, atimeSec: 0, atimeNsec: 0, mtimeSec: 0, mtimeNsec: 0, ctimeSec: 0, ctimeNsec: 0 };
  const directory = encodeAnswer(open, { kind: 'remote', value: { stat, directory: '/tmp/d/dirs/srv/app' } }, 0xfffffffe);
  assert.deepEqual([directory.readInt32LE(4), directory.readUInt32LE(8)], [Number(runC('printf("%d", DP_DIRECTORY);')), 0xfffffffe]);
  assert.equal(directory.subarray(RESP_HEADER + STAT_SIZE).toString(), '/tmp/d/dirs/srv/app\0');
  // A view of MAX_REPLY bytes: no copy is made before the size is checked.
  const huge = { stat: { ...stat, mode: 0o100644 }, data: new Uint8Array(new ArrayBuffer(MAX_REPLY)) };
  const tooLarge = encodeAnswer(open, { kind: 'remote', value: huge }, 9);
  assert.deepEqual([tooLarge.readUInt32LE(0), tooLarge.readInt32LE(4), tooLarge.readUInt32LE(8)], [0, -27, 9]);
});
