// What every platform hands the CLI once an agent runs next to the target: one byte stream to it, and a way to stop it.
import type { Duplex } from 'node:stream';
import type { Connection } from '../protocol/connection.ts';

export interface AgentTransport {
  /** The duplex byte stream that carries the agent protocol, once `connected` has settled. */
  readonly stream: Duplex;
  /**
   * Settles once `stream` can carry the protocol, where the platform returns before it can (an agent bin/doppel
   * started, while it may still be starting); rejects if it never will.
   */
  readonly connected?: Promise<void>;
  /** Called once the agent has answered its handshake on `stream` (Kubernetes moves the link to the agent's pod then). */
  afterHandshake?(connection: Connection): void;
  /** Says where the agent runs, for progress lines and errors ("process 1234"). */
  readonly description: string;
  /**
   * The agent's process, where the program may take the sockets it connects (the process platform: an agent of this
   * build on this machine), known before its handshake; its hello says for sure.
   */
  readonly handoverPid?: number;
  /** Settles when the agent is gone, with what was seen of its end. */
  readonly exited: Promise<string>;
  /** The agent's last log lines, for error messages. */
  logTail(): Promise<string>;
  /** Ends the agent and removes everything the platform created; safe to call more than once. */
  stop(): Promise<void>;
  /** Last resort on a dying CLI: kill synchronously, no waiting. */
  killNow(): void;
  /**
   * After a clean session, before `stop`: leaves the agent warm for the next session (agent.ttl), `ask` being the
   * `agent.park` request with where and how long (Kubernetes keeps the agent's pod instead, and does not ask); absent
   * where agents do not stay warm. `stop` then leaves it be.
   */
  park?(ask: (args: { socket: string; ttlMs: number }) => Promise<void>): Promise<void>;
}

/** The agent's last word worth showing in an error: its last warning or error, or what its launcher printed. */
export const lastWord = (log: string): string => log.split('\n').filter((line) => line.trim() !== '' && !/^agent: (info|debug):/.test(line)).at(-1) ?? '';
