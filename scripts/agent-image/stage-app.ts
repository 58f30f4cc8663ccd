// Writes the agent's /app tree (compiled code, its npm packages, package.json) under a directory: Dockerfile.agent's build stage uses it.
import { mkdirSync } from 'node:fs';
import process from 'node:process';
import { agentEntries } from './agent-files.ts';
import { repoDir } from './build-image.ts';
import { unique, writeEntries } from './entries.ts';

const [root] = process.argv.slice(2);
if (!root) {
  process.stderr.write('usage: node scripts/agent-image/stage-app.ts DIR   (writes DIR/app)\n');
  process.exit(2);
}
mkdirSync(root, { recursive: true });
writeEntries(root, unique(agentEntries(repoDir)));
