// Serves layer connections on a Unix socket: decode each request, ask the handler, write the answer; a bad peer loses only its own connection.
import { createServer, type Socket } from 'node:net';
import { removeFile } from '../remove-file.ts';
import type { Answer, LayerHandler, LayerPeer } from './layer-handler.ts';
import { decodeRequest, encodeAnswer, isOneWay, MAX_REQUEST, REQ_HEADER, type LayerRequest } from './layer-wire.ts';

export interface LayerServer {
  /** The layer connections open now. */
  connections(): number;
  close(): Promise<void>;
}

export interface LayerServerOptions {
  socketPath: string;
  /** The socket at socketPath, already listening: served as it is. */
  listenFd?: number | undefined;
  /** A request the handler has no method for is answered ENOSYS (the agent serves lookups alone, src/agent/layer-dns.ts). */
  handler: Partial<LayerHandler>;
  onError?: (error: Error) => void;
  /** A layer connection ended: a thread or a whole process of the program is gone. */
  onDisconnect?: () => void;
}

export async function startLayerServer({ socketPath, listenFd, handler, onError, onDisconnect }: LayerServerOptions): Promise<LayerServer> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => {
      sockets.delete(socket);
      onDisconnect?.();
    });
    serve(socket, handler, onError ?? (() => {}));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenFd === undefined ? socketPath : { fd: listenFd }, () => resolve());
  });
  return {
    connections: () => sockets.size,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      // Synchronous: a CLI that used no thread pool yet would start its threads for this alone (2-4 ms of a short
      // session's end).
      removeFile(socketPath);
    },
  };
}

function serve(socket: Socket, handler: Partial<LayerHandler>, onError: (error: Error) => void): void {
  let buffered: Buffer = Buffer.alloc(0);
  // Requests on one connection are answered in order; the layer waits for each answer anyway.
  let queue = Promise.resolve();
  // Who is on the other end, once its hello came: named in what goes wrong.
  let peer: LayerPeer | undefined;
  const fail = (error: Error) => onError(peer ? new Error(`pid ${peer.pid} (${peer.executable}): ${error.message}`, { cause: error }) : error);
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    while (buffered.length >= REQ_HEADER) {
      const length = buffered.readUInt32LE(0);
      const op = buffered.readUInt32LE(4);
      const seq = buffered.readUInt32LE(8);
      if (length > MAX_REQUEST) {
        fail(new Error(`layer request of ${length} bytes`));
        socket.destroy();
        return;
      }
      if (buffered.length < REQ_HEADER + length) break;
      const payload = buffered.subarray(REQ_HEADER, REQ_HEADER + length);
      buffered = buffered.subarray(REQ_HEADER + length);
      let request: LayerRequest;
      try {
        request = decodeRequest(op, Buffer.from(payload));
      } catch (error) {
        fail(error as Error);
        socket.destroy();
        return;
      }
      if (request.op === 'hello') peer = { pid: request.pid, ppid: request.ppid, executable: request.executable };
      queue = queue.then(async () => {
        const answer = await call(handler, request).catch((error: Error): Answer<never> => {
          fail(error);
          return { kind: 'error', code: 'EIO' };
        });
        if (!socket.destroyed && !isOneWay(request)) socket.write(encodeAnswer(request, answer, seq));
      });
    }
  });
}

function call(partial: Partial<LayerHandler>, request: LayerRequest): Promise<Answer<unknown>> {
  if (partial[request.op] === undefined) return Promise.resolve({ kind: 'error', code: 'ENOSYS' });
  const handler = partial as LayerHandler;
  switch (request.op) {
    case 'open':
      return handler.open(request.path, request.flags, request.mode, request.hostFile);
    case 'stat':
      return handler.stat(request.path, request.follow);
    case 'access':
      return handler.access(request.path, request.mode);
    case 'readlink':
      return handler.readlink(request.path);
    case 'realpath':
      return handler.realpath(request.path);
    case 'getaddrinfo':
      return handler.getaddrinfo(request.name, request.hints);
    case 'connect':
      return handler.connect(request.socktype, request.remote, request.socket);
    case 'handedOver':
      return handler.handedOver(request.token, request.taken);
    case 'layerCall':
      return handler.layerCall(request.call, request.subject, request.ms);
    case 'bind':
      return handler.bind(request.socktype, request.requested);
    case 'listen':
      return handler.listen(request.requested, request.local, request.socket);
    case 'peerOf':
      return handler.peerOf(request.peer, request.listenerPort);
    case 'unlisten':
      return handler.unlisten(request.port, request.inode);
    case 'writeback':
      return handler.writeback(request.handle, request.size);
    case 'writebackData':
      return handler.writebackData(request.token, request.offset, request.data, request.last);
    case 'mkdir':
      return handler.mkdir(request.path, request.mode);
    case 'rmdir':
      return handler.rmdir(request.path);
    case 'unlink':
      return handler.unlink(request.path);
    case 'rename':
      return handler.rename(request.from, request.to, request.noReplace);
    case 'chmod':
      return handler.chmod(request.path, request.mode, request.follow);
    case 'fchmod':
      return handler.fchmod(request.handle, request.mode);
    case 'udpRoute':
      return handler.udpRoute(request.remote);
    case 'unixConnect':
      return handler.unixConnect(request.path, request.abstract);
    case 'hello':
      return handler.hello({ pid: request.pid, ppid: request.ppid, executable: request.executable });
  }
}
