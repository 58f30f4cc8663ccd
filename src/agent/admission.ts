// A launcher's client is admitted by the agent it is handed to: one line with the session's token, answered `ok`
// (after which the agent speaks the protocol) or `denied`.
import type { Socket } from 'node:net';
import { AUTH_DENIED, AUTH_MAX_LINE, AUTH_OK, tokenMatches } from '../protocol/auth-preface.ts';

/** How an agent that refused its client exits, so that its launcher does not count that as a session. */
export const REFUSED_EXIT = 3;

const PREFACE_TIMEOUT_MS = 10_000;

/** Reads the client's one-line preface and answers it; resolves when the token matched, rejects (after `denied`) when not. */
export function admit(socket: Socket, token: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let line = '';
    const timer = setTimeout(() => fail(new Error(`no preface within ${PREFACE_TIMEOUT_MS / 1000}s`)), PREFACE_TIMEOUT_MS);
    const fail = (error: Error) => {
      clearTimeout(timer);
      socket.off('data', onData);
      reject(error);
    };
    const onData = (chunk: Buffer) => {
      line += chunk.toString('latin1');
      const end = line.indexOf('\n');
      if (end < 0) {
        if (line.length > AUTH_MAX_LINE) fail(new Error('preface too long'));
        return;
      }
      // The client waits for our answer before it speaks the protocol, so nothing may follow the line.
      socket.pause();
      socket.off('data', onData);
      clearTimeout(timer);
      if (end !== line.length - 1 || !tokenMatches(line.slice(0, end), token)) {
        socket.end(AUTH_DENIED);
        reject(new Error('wrong session token'));
        return;
      }
      socket.write(AUTH_OK);
      resolve();
    };
    socket.on('data', onData);
    socket.once('error', fail);
    socket.resume();
  });
}
