// The agent's default container image: one name per release, shared by the CLI (which asks for it) and the image builder (which makes it).
import { readFileSync } from 'node:fs';

/**
 * A `localhost/` name, as podman and buildah give local builds: no registry outside the user's
 * control can answer for it, so a missing image fails to pull instead of fetching someone else's.
 */
export const agentImageRepository = 'localhost/doppel-agent';

/** The same relative path from src/ and from dist/. */
const packageJson = new URL('../../../package.json', import.meta.url);

/** The image built from this version's agent (`npm run build:agent-image`); `agent.image` overrides it. */
export function defaultAgentImage(): string {
  const { version } = JSON.parse(readFileSync(packageJson, 'utf8')) as { version: string };
  return `${agentImageRepository}:${version}`;
}
