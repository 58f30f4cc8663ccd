// Outgoing Unix streams (mirrord's unix_streams): a program's connect() to a socket path the patterns name goes to a
// one-shot socket of the proxy's, spliced to the agent's connection to the target's socket of that path.
import fs from 'node:fs';
import { join } from 'node:path';
import type { AgentClient } from './agent-client.ts';
import { errorAnswer } from './answer.ts';
import type { LayerHandler } from './layer-handler.ts';
import { listenOnce } from './outgoing.ts';

export interface UnixStreamDecider {
  /** `name` is the path, or `@name` for an abstract socket (as ss shows it). */
  decide(name: string): 'remote' | 'local';
}

export interface UnixStreamRequests extends Pick<LayerHandler, 'unixConnect'> {
  close(): void;
}

/** `dir`: the proxy's private directory, where the one-shot sockets the layer connects to are made. */
export function createUnixStreamRequests(agent: Pick<AgentClient, 'connectUnix'>, policy: UnixStreamDecider, dir: string): UnixStreamRequests {
  const open = new Set<{ destroy(): void }>();
  let next = 0;
  return {
    async unixConnect(path, abstract) {
      if (policy.decide(abstract ? `@${path}` : path) === 'local') return { kind: 'local' };
      let stream: Awaited<ReturnType<AgentClient['connectUnix']>>;
      try {
        stream = await agent.connectUnix(path, abstract);
      } catch (error) {
        return errorAnswer(error, 'ECONNREFUSED');
      }
      const socketPath = join(dir, `unix-${++next}.sock`);
      const server = await listenOnce(stream, open, (listening) => listening.listen(socketPath));
      // The name is needed only until the layer has connected.
      server.once('close', () => void fs.promises.rm(socketPath, { force: true }));
      return { kind: 'remote', value: socketPath };
    },
    close() {
      for (const item of open) item.destroy();
      open.clear();
    },
  };
}
