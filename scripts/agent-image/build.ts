// `npm run build:agent-image`: builds (or reuses) the agent's OCI image archive and says where it is and how to load it.
import { statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { buildAgentImage } from './build-image.ts';

const started = performance.now();
try {
  const image = await buildAgentImage();
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const megabytes = (statSync(image.archive).size / 1e6).toFixed(1);
  process.stderr.write(`${image.built ? 'built' : 'unchanged, reused'} ${image.name} in ${seconds}s: ${image.archive} (${megabytes} MB)\n`);
  process.stderr.write(`load it with: ctr -n k8s.io images import ${image.archive}   (or podman load -i, docker load -i)\n`);
} catch (error) {
  process.stderr.write(`build:agent-image: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
