// Finds the kubeconfig the way kubectl does, picks the context and namespace, and makes the API clients doppel uses.
import { AppsV1Api, BatchV1Api, CoreV1Api, CustomObjectsApi, KubeConfig, type Cluster, type Context, type User } from '@kubernetes/client-node';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { DoppelError } from '../../errors.ts';
import { kubeCall, type KubeOperation } from './kube-error.ts';

export { kubeError, kubeCall, isNotFound, apiStatus, type KubeOperation } from './kube-error.ts';

export interface KubeContextOptions {
  /** An explicit kubeconfig path (the `kubeconfig` config key); wins over KUBECONFIG. */
  kubeconfig?: string | undefined;
  /** A context name (`--context`, `kube_context`); else the kubeconfig's current-context. */
  context?: string | undefined;
  /** A namespace (`-n`, `target.namespace`); else the context's, else `default`. */
  namespace?: string | undefined;
  /** The environment to read KUBECONFIG, HOME and the in-cluster variables from (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Only where the configuration leads, for no API call: the user's credential plugin does not run. */
  identityOnly?: boolean;
}

export interface KubeContext {
  config: KubeConfig;
  contextName: string;
  namespace: string;
  server: string;
  /** Where the configuration came from: kubeconfig paths, or "in-cluster service account". */
  source: string;
  core: CoreV1Api;
  apps: AppsV1Api;
  batch: BatchV1Api;
  custom: CustomObjectsApi;
  /** Runs one API call; a failure becomes a DoppelError naming this context's server and the operation. */
  call<T>(operation: Omit<KubeOperation, 'kube'>, call: () => Promise<T>): Promise<T>;
}

const serviceAccountDir = '/var/run/secrets/kubernetes.io/serviceaccount';

export async function loadKubeContext(options: KubeContextOptions): Promise<KubeContext> {
  const env = options.env ?? process.env;
  const { config, source } = loadConfig(options.kubeconfig, env);
  const contextName = nonEmpty(options.context) ?? config.getCurrentContext();
  const known = config.getContexts().map((context) => context.name);
  if (contextName === undefined || contextName === '') {
    throw new DoppelError('E_KUBE_CONTEXT', `${source} sets no current-context`, {
      category: 'config',
      hint: known.length > 0 ? `pass --context (known: ${known.join(', ')}) or run \`kubectl config use-context NAME\`` : 'the kubeconfig has no contexts; fetch a fresh one for your cluster',
    });
  }
  const context = config.getContextObject(contextName);
  if (context === null) {
    throw new DoppelError('E_KUBE_CONTEXT', `no context "${contextName}" in ${source}`, {
      category: 'config',
      hint: known.length > 0 ? `known contexts: ${known.join(', ')}` : 'the kubeconfig has no contexts; fetch a fresh one for your cluster',
    });
  }
  const cluster = config.getCluster(context.cluster);
  if (cluster === null) {
    throw invalid(source, `context "${contextName}" names cluster "${context.cluster}", which it does not define`);
  }
  if (config.getUser(context.user) === null && context.user !== undefined && context.user !== '') {
    throw invalid(source, `context "${contextName}" names user "${context.user}", which it does not define`);
  }
  config.setCurrentContext(contextName);
  const namespace = nonEmpty(options.namespace) ?? nonEmpty(context.namespace) ?? 'default';
  const kube: KubeContext = {
    config,
    contextName,
    namespace,
    server: cluster.server,
    source,
    core: config.makeApiClient(CoreV1Api),
    apps: config.makeApiClient(AppsV1Api),
    batch: config.makeApiClient(BatchV1Api),
    custom: config.makeApiClient(CustomObjectsApi),
    call: (operation, call) => kubeCall({ ...operation, kube }, call),
  };
  if (!options.identityOnly) await runCredentialPlugin(config, contextName);
  return kube;
}

/**
 * A user whose token comes from a credential plugin (EKS's `aws`, GKE's `gke-gcloud-auth-plugin`, AKS's `kubelogin`):
 * it runs once here, as the first API call would have run it (client-node keeps what it printed), so that its failure
 * is told as the plugin's, and the first calls, made together, do not each start it.
 */
async function runCredentialPlugin(config: KubeConfig, contextName: string): Promise<void> {
  const user = config.getCurrentUser();
  const plugin = (user?.exec ?? user?.authProvider?.config?.exec) as { command?: unknown } | undefined;
  if (typeof plugin?.command !== 'string') return;
  try {
    await config.applyToHTTPSOptions({});
  } catch (error) {
    const which = `the kubeconfig's credential plugin ${plugin.command} (context ${contextName})`;
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new DoppelError('E_KUBE_CREDENTIALS', `${which} is not installed or not on PATH`, {
        category: 'permission',
        cause: error,
        hint: "install it (EKS: aws, GKE: gke-gcloud-auth-plugin, AKS: kubelogin), or fix the user's exec command in the kubeconfig",
      });
    }
    const said = (error as Error).message.replace(/\s*\n\s*/g, ' ').trim();
    throw new DoppelError('E_KUBE_CREDENTIALS', `${which} failed${said ? `: ${said}` : ', saying nothing'}`, {
      category: 'permission',
      cause: error,
      hint: `log in again with your cloud's CLI; \`kubectl --context ${contextName} get --raw /version\` runs the same plugin`,
    });
  }
}

/** kubectl's order: the explicit path, else KUBECONFIG's files merged (first to set a value wins), else ~/.kube/config, else in-cluster. */
function loadConfig(explicit: string | undefined, env: NodeJS.ProcessEnv): { config: KubeConfig; source: string } {
  if (explicit !== undefined && explicit !== '') {
    const file = expandHome(explicit, env);
    if (!existsSync(file)) {
      throw new DoppelError('E_KUBECONFIG_MISSING', `kubeconfig ${file} does not exist`, {
        category: 'config',
        hint: 'fix the `kubeconfig` key in the config file, or remove it to use KUBECONFIG or ~/.kube/config',
      });
    }
    return { config: merge([file]), source: file };
  }
  const listed = (env.KUBECONFIG ?? '').split(path.delimiter).filter((file) => file !== '');
  if (listed.length > 0) {
    const present = listed.map((file) => expandHome(file, env)).filter((file) => existsSync(file));
    if (present.length === 0) {
      throw new DoppelError('E_KUBECONFIG_MISSING', `no kubeconfig: none of the files in KUBECONFIG exists (${listed.join(path.delimiter)})`, {
        category: 'config',
        hint: 'point KUBECONFIG at your cluster\'s kubeconfig file, or unset it to use ~/.kube/config',
      });
    }
    return { config: merge(present), source: present.join(path.delimiter) };
  }
  const home = env.HOME ?? homedir();
  const defaultFile = path.join(home, '.kube', 'config');
  if (existsSync(defaultFile)) return { config: merge([defaultFile]), source: defaultFile };
  if (env.KUBERNETES_SERVICE_HOST && env.KUBERNETES_SERVICE_PORT && existsSync(path.join(serviceAccountDir, 'token'))) {
    const config = new KubeConfig();
    config.loadFromCluster();
    return { config, source: 'the in-cluster service account' };
  }
  throw new DoppelError('E_KUBECONFIG_MISSING', `no kubeconfig: KUBECONFIG is not set and ${defaultFile} does not exist`, {
    category: 'config',
    hint: 'set KUBECONFIG or the `kubeconfig` config key to your cluster\'s kubeconfig file (check with `kubectl config view`)',
  });
}

function merge(files: string[]): KubeConfig {
  const clusters = new Map<string, Cluster>();
  const users = new Map<string, User>();
  const contexts = new Map<string, Context>();
  let currentContext: string | undefined;
  for (const file of files) {
    const one = new KubeConfig();
    try {
      // kubectl reads an empty file as an empty config; client-node cannot.
      if (readFileSync(file, 'utf8').trim() === '') continue;
      one.loadFromFile(file);
      if (one.getClusters().length + one.getContexts().length + one.getUsers().length === 0 && one.getCurrentContext() === undefined) {
        throw new Error('it holds no clusters, users or contexts');
      }
    } catch (error) {
      if (error instanceof DoppelError) throw error;
      throw invalid(file, (error as Error).message.split('\n')[0] ?? String(error));
    }
    for (const cluster of one.getClusters()) if (!clusters.has(cluster.name)) clusters.set(cluster.name, cluster);
    for (const user of one.getUsers()) if (!users.has(user.name)) users.set(user.name, user);
    for (const context of one.getContexts()) if (!contexts.has(context.name)) contexts.set(context.name, context);
    currentContext ??= nonEmpty(one.getCurrentContext());
  }
  const config = new KubeConfig();
  config.loadFromOptions({ clusters: [...clusters.values()], users: [...users.values()], contexts: [...contexts.values()], currentContext });
  return config;
}

function invalid(source: string, problem: string): DoppelError {
  return new DoppelError('E_KUBECONFIG_INVALID', `cannot use kubeconfig ${source}: ${problem}`, {
    category: 'config',
    hint: 'fix the file (`kubectl config view` shows what kubectl makes of it) or fetch a fresh one for your cluster',
  });
}

function expandHome(file: string, env: NodeJS.ProcessEnv): string {
  if (file === '~' || file.startsWith('~/')) return path.join(env.HOME ?? homedir(), file.slice(1));
  return path.resolve(file);
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}
