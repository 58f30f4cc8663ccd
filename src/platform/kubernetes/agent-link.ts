// Opens an admitted stream to an agent pod: port-forward, send the session token, wait for the launcher's answer;
// retried while the launcher is still starting (the forward is refused until it listens).
import type { Duplex } from 'node:stream';
import { DoppelError } from '../../errors.ts';
import { AUTH_DENIED, AUTH_OK, authLine } from '../../protocol/auth-preface.ts';
import { trace } from '../../trace.ts';
import { AGENT_PORT } from './agent-job.ts';
import type { KubeContext } from './kube-context.ts';
import { openPortForward, type ForwardedStream } from './port-forward.ts';

const RETRY_MS = 50;

export async function linkToAgent(kube: KubeContext, namespace: string, pod: string, token: string, timeoutMs: number, port = AGENT_PORT, signal?: AbortSignal): Promise<ForwardedStream> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 1; ; attempt++) {
    signal?.throwIfAborted();
    let forward: ForwardedStream | undefined;
    try {
      const opening = performance.now();
      forward = await kube.call({ verb: 'create', resource: 'pods/portforward', namespace, name: pod }, () => openPortForward(kube.config, namespace, pod, port));
      const open = performance.now();
      await admitted(forward.stream, token);
      trace(`kubernetes: port-forward to ${pod}:${port} opened in ${(open - opening).toFixed(1)} ms, try ${attempt}`, open);
      trace(`kubernetes: the agent's launcher in ${pod} admitted the session`);
      return forward;
    } catch (error) {
      forward?.stream.destroy();
      // A refused forward or an early close means the launcher is not listening yet; anything the API said plainly is final.
      if (error instanceof DoppelError && error.code !== 'E_KUBE_API') throw error;
      if (Date.now() + RETRY_MS > deadline) {
        throw new DoppelError('E_AGENT_TIMEOUT', `could not reach the agent in pod ${pod} through a port-forward within ${timeoutMs / 1000}s (${attempt} tries): ${(error as Error).message}`, {
          category: 'agent',
          hint: 'check that you may create pods/portforward and that the agent pod runs (kubectl get pods -l app.kubernetes.io/managed-by=doppel -A)',
        });
      }
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  }
}

/** Sends the token and reads the launcher's one-line answer; whatever follows it stays in the stream for the protocol. */
export function admitted(stream: Duplex, token: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let answer = '';
    const done = (error?: Error) => {
      stream.off('data', onData);
      stream.off('error', onError);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      if (error) reject(error);
      else resolve();
    };
    const onData = (chunk: Buffer) => {
      answer += chunk.toString('latin1');
      const end = answer.indexOf('\n');
      if (end < 0) return;
      stream.pause();
      // The agent greets as soon as it starts, so its first protocol bytes may share this chunk: give them back.
      const rest = Buffer.from(answer.slice(end + 1), 'latin1');
      if (rest.length > 0) stream.unshift(rest);
      const line = answer.slice(0, end + 1);
      if (line === AUTH_OK) done();
      else if (line === AUTH_DENIED) done(new DoppelError('E_AGENT_AUTH', 'the agent refused this session\'s token', { category: 'agent', hint: 'another session\'s agent answered; run doppel exec again' }));
      else done(new Error(`unexpected answer from the agent: ${JSON.stringify(line.slice(0, 40))}`));
    };
    const onError = (error: Error) => done(error);
    const onEnd = () => done(new Error('the agent closed the stream before answering'));
    stream.on('data', onData);
    stream.once('error', onError);
    stream.once('end', onEnd);
    // A forward refused at once may already be gone; 'close' still comes, or has come.
    stream.once('close', onEnd);
    if (stream.destroyed) return onEnd();
    stream.write(authLine(token));
  });
}
