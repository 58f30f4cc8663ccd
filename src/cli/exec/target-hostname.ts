// feature.hostname: the name the program's gethostname and uname report, read as mirrord does from the target's
// /etc/hostname (the kubelet writes the pod's name there; a container runtime its container's).
import type { AgentClient } from '../../proxy/agent-client.ts';

/** The most a hostname can be (HOST_NAME_MAX); a longer one is not a hostname, so the local one stays. */
const HOST_NAME_MAX = 64;

/** The target's hostname, or undefined when it has none to read (the program then keeps the local one). */
export async function targetHostname(agent: Pick<AgentClient, 'fetch'>): Promise<string | undefined> {
  try {
    const { data } = await agent.fetch('/etc/hostname');
    const name = Buffer.from(data).toString('utf8').split('\n')[0]!.trim();
    return name !== '' && name.length <= HOST_NAME_MAX && !name.includes('\0') ? name : undefined;
  } catch {
    return undefined;
  }
}
