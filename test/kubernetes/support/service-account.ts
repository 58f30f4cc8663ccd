// Kubeconfig files for ServiceAccounts of the test cluster, for tests that need a user with exactly some rights.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadKubeContext } from '../../../src/platform/kubernetes/kube-context.ts';
import { adminKubeconfig, kubectl } from './cluster.ts';

export interface ServiceAccountKubeconfigs {
  /** A kubeconfig acting as ServiceAccount `account` of `namespace` (a 10-minute token), in that namespace. */
  forAccount(account: string, namespace: string): Promise<string>;
  remove(): void;
}

/** The admin kubeconfig's server and CA, with a token from the TokenRequest API; files go to one temp dir. */
export async function serviceAccountKubeconfigs(): Promise<ServiceAccountKubeconfigs> {
  const admin = await loadKubeContext({ kubeconfig: adminKubeconfig });
  const caFile = admin.config.getCurrentCluster()?.caFile;
  if (caFile === undefined) throw new Error('the admin kubeconfig names no CA file');
  const dir = mkdtempSync(path.join(tmpdir(), 'doppel-sa-kubeconfig-'));
  return {
    async forAccount(account, namespace) {
      const token = (await kubectl(['create', 'token', account, '-n', namespace, '--duration=10m'])).trim();
      const file = path.join(dir, `${namespace}-${account}`);
      const document = {
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'cluster', cluster: { server: admin.server, 'certificate-authority': caFile } }],
        users: [{ name: account, user: { token } }],
        contexts: [{ name: account, context: { cluster: 'cluster', user: account, namespace } }],
        'current-context': account,
      };
      writeFileSync(file, JSON.stringify(document), { mode: 0o600 });
      return file;
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
