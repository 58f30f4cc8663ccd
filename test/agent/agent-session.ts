// What the agent tests start as `doppel exec` would: an agent of the process platform with a client connected to it,
// and the proxy's incoming side over that client. Whatever they start is undone by the test's `closers`, last first.
import { createIncomingPolicy } from '../../src/config/network-policy.ts';
import { resolveConfig } from '../../src/config/resolve.ts';
import type { ConfigFile } from '../../src/config/schema.ts';
import type { AgentTransport } from '../../src/platform/agent-transport.ts';
import type { Platform, StepReporter } from '../../src/platform/platform.ts';
import { createProcessPlatform } from '../../src/platform/process/process-platform.ts';
import { connectAgent, type AgentClient } from '../../src/proxy/agent-client.ts';
import { createIncomingRequests, type IncomingRequests, type IncomingSession } from '../../src/proxy/incoming.ts';

/** feature.network.incoming in its object form. */
export type Incoming = NonNullable<Exclude<NonNullable<NonNullable<ConfigFile['feature']>['network']>['incoming'], string | boolean>>;

const progress: StepReporter = { step: (_text, work) => work(() => {}), warn: () => {} };
const quiet: IncomingSession = { owner: 'a test session', notice: () => {}, abort: () => {} };

export async function agentSession(pid: number, closers: (() => unknown)[]): Promise<{ client: AgentClient; transport: AgentTransport; platform: Platform }> {
  const platform = createProcessPlatform({ pid, logLevel: 'debug' });
  const [transport] = await platform.start(progress);
  closers.push(() => platform.stop());
  const client = await connectAgent(transport!.stream, { handshakeTimeoutMs: 10_000 });
  closers.push(() => client.close());
  return { client, transport: transport!, platform };
}

/** The proxy's incoming side over `client`, with the policy `config` resolves to. */
export function incomingRequests(client: AgentClient, config: ConfigFile, closers: (() => unknown)[], session: IncomingSession = quiet): IncomingRequests {
  const resolved = resolveConfig(config);
  const requests = createIncomingRequests(client, createIncomingPolicy(resolved.feature.network.incoming, resolved.agent), session);
  closers.push(() => requests.close());
  return requests;
}
