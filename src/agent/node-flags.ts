// How the agent's Node.js runs, wherever it is started (the process platform, the Kubernetes launcher); bin/doppel, a
// shell script, says the same for the agent it starts (test/unit/agent-node-flags.test.ts holds them together).

/**
 * V8 grows its young generation with the allocation rate, up to 3 x 32 MiB of semi-spaces on Node 24, and keeps it:
 * measured, the agent went from 66 to 226 MiB resident under 16 callers and stayed there, close to its pod's 256 Mi
 * limit. Capped at 4 MiB it stays near 115 MiB under the same load, for more frequent (cheap) scavenges.
 */
export const AGENT_NODE_FLAGS = ['--max-semi-space-size=4'];
