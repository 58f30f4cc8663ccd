// `doppel ls`: every Kubernetes target `--target` accepts, one per line or as JSON.
import type { Command } from 'commander';
import process from 'node:process';
import { resolveConfig } from '../../config/load.ts';
import type { Scope } from '../../platform/kubernetes/target-kinds.ts';
import { createProgress } from '../progress.ts';

interface LsOptions {
  namespace?: string;
  allNamespaces?: boolean;
  json?: boolean;
  context?: string;
  configFile?: string;
  quiet?: boolean;
}

export function register(program: Command): void {
  program
    .command('ls')
    .description('list the Kubernetes targets --target accepts: pod/NAME/container/C, deployment/NAME, ... (running pods only)')
    .option('-n, --namespace <namespace>', 'namespace to list (default: target.namespace from the config, else the context\'s)')
    .option('-A, --all-namespaces', 'list every namespace')
    .option('--json', 'print a JSON array: of strings, or with -A of {namespace, target} objects')
    .option('--context <name>', 'kubeconfig context')
    .option('-f, --config-file <path>', 'config file, for kubeconfig, kube_context and target.namespace')
    .option('-q, --quiet', 'no progress lines')
    .action(async (options: LsOptions) => {
      const { config } = await resolveConfig({
        cwd: process.cwd(),
        configFile: options.configFile,
        env: process.env,
        flags: { targetNamespace: options.namespace, kubeContext: options.context },
      });
      const progress = createProgress({ quiet: options.quiet === true });
      // The Kubernetes client takes most of a second to load: only commands that talk to a cluster pay for it.
      const [{ loadKubeContext }, { listTargets }] = await Promise.all([import('../../platform/kubernetes/kube-context.ts'), import('../../platform/kubernetes/list-targets.ts')]);
      const kube = await loadKubeContext({ kubeconfig: config.kubeconfig, context: config.kube_context, namespace: config.target.namespace });
      const all = options.allNamespaces === true;
      const scope: Scope = all ? { allNamespaces: true } : { namespace: kube.namespace };
      const where = all ? 'all namespaces' : `namespace ${kube.namespace}`;
      const { targets, denied } = await progress.step(`listing targets in ${where} (context ${kube.contextName})`, () => listTargets(kube, scope));
      if (denied.length > 0) {
        const canI = `kubectl --context ${kube.contextName} auth can-i list ${denied[0]}${all ? ' --all-namespaces' : ` -n ${kube.namespace}`}`;
        progress.warn(`not allowed to list ${denied.join(', ')} in ${where}; those targets are left out (check with \`${canI}\`)`);
      }
      if (options.json === true) {
        process.stdout.write(`${JSON.stringify(all ? targets : targets.map((entry) => entry.target))}\n`);
        return;
      }
      const width = Math.max(0, ...targets.map((entry) => entry.namespace.length));
      const lines = targets.map((entry) => (all ? `${entry.namespace.padEnd(width)}  ${entry.target}` : entry.target));
      process.stdout.write(lines.map((line) => `${line}\n`).join(''));
    });
}
