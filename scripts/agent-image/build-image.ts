// Builds the agent's image archive from dist/ and this machine's packages, or reuses the last one when no input changed.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultAgentImage } from '../../src/platform/kubernetes/agent-image.ts';
import { agentEntries, agentMain, appDir } from './agent-files.ts';
import { entriesHash, unique } from './entries.ts';
import { nodePackage } from './node-binary.ts';
import { writeOciArchive } from './oci-archive.ts';
import { nodePath, systemEntries } from './system-files.ts';

export const repoDir = path.resolve(fileURLToPath(new URL('../../', import.meta.url)));
/** Build output and caches; ignored by git. */
export const outputDir = path.join(repoDir, 'build', 'agent-image');
export const archivePath = path.join(outputDir, 'doppel-agent.oci.tar');
const keyPath = `${archivePath}.key`;

export interface AgentImage {
  name: string;
  archive: string;
  /** False when the archive of an earlier build was reused. */
  built: boolean;
}

/** The builder's own code decides the bytes too. */
function builderHash(): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const hash = createHash('sha256');
  for (const file of readdirSync(here).sort()) hash.update(file).update(readFileSync(path.join(here, file)));
  return hash.digest('hex');
}

/** Needs dist/ built (npm run build:ts); the npm script build:agent-image does both. */
export async function buildAgentImage(): Promise<AgentImage> {
  mkdirSync(outputDir, { recursive: true });
  const name = defaultAgentImage();
  const node = nodePackage(repoDir, outputDir);
  const layers = [unique(systemEntries(node)), unique(agentEntries(repoDir))];
  const key = createHash('sha256')
    .update(JSON.stringify([name, builderHash(), ...layers.map(entriesHash)]))
    .digest('hex');
  if (existsSync(archivePath) && existsSync(keyPath) && readFileSync(keyPath, 'utf8') === key) return { name, archive: archivePath, built: false };

  const work = mkdtempSync(path.join(outputDir, 'work-'));
  try {
    await writeOciArchive(
      {
        name,
        layers,
        entrypoint: [nodePath, path.join(appDir, agentMain)],
        env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
        workingDir: appDir,
        labels: { 'org.opencontainers.image.title': 'doppel-agent', 'org.opencontainers.image.version': name.slice(name.lastIndexOf(':') + 1) },
      },
      archivePath,
      work,
    );
    writeFileSync(keyPath, key);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return { name, archive: archivePath, built: true };
}
