// Turns what @kubernetes/client-node throws (API statuses, network and TLS failures) into one-line DoppelErrors with a hint.
import { DoppelError } from '../../errors.ts';

/** What was being done when a call failed, so that the error can name it. */
export interface KubeOperation {
  /** The RBAC verb: get, list, watch, create, delete, patch, ... */
  verb: string;
  /** The RBAC resource, with its group for non-core ones and a subresource after a slash: `pods`, `jobs.batch`, `pods/portforward`. */
  resource: string;
  /** The namespace of the call; `undefined` for cluster-scoped resources. */
  namespace?: string | undefined;
  /** A list or watch across every namespace. */
  allNamespaces?: boolean;
  /** The object's name, when there is one. */
  name?: string | undefined;
  /** The connection, to name the server and context in the message. */
  kube?: { contextName: string; server: string } | undefined;
}

/** The HTTP status of a failed API call, if the server answered. */
export function apiStatus(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { code, statusCode } = error as { code?: unknown; statusCode?: unknown };
  if (typeof code === 'number') return code;
  if (typeof statusCode === 'number') return statusCode;
  return undefined;
}

export function isNotFound(error: unknown): boolean {
  return apiStatus(error) === 404;
}

/** The server's own words (a Status object's message), when the body carries one. */
export function serverMessage(error: unknown): string | undefined {
  const body = (error as { body?: unknown } | undefined)?.body;
  if (typeof body === 'string') {
    try {
      const parsed = JSON.parse(body) as { message?: unknown };
      if (typeof parsed.message === 'string') return parsed.message;
    } catch {
      return body.trim() === '' ? undefined : body.trim().split('\n')[0];
    }
  }
  if (typeof body === 'object' && body !== null && typeof (body as { message?: unknown }).message === 'string') return (body as { message: string }).message;
  return undefined;
}

const networkCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EPIPE', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_CLOSED']);

export function kubeError(error: unknown, operation: KubeOperation): DoppelError {
  if (error instanceof DoppelError) return error;
  const status = apiStatus(error);
  const what = describeOperation(operation);
  const server = operation.kube ? `the API server at ${operation.kube.server}` : 'the API server';
  const context = operation.kube ? ` (context ${operation.kube.contextName})` : '';
  const contextFlag = operation.kube ? ` --context ${operation.kube.contextName}` : '';
  if (status === 401) {
    return new DoppelError('E_KUBE_UNAUTHORIZED', `${server} rejected the credentials${context} (401 Unauthorized)`, {
      category: 'permission',
      cause: error,
      hint: `the kubeconfig's token or certificate is expired or invalid; log in again (refresh your cloud CLI's credentials) and check with \`kubectl${contextFlag} get --raw /version\``,
    });
  }
  if (status === 403) {
    const user = /User "([^"]+)"/.exec(serverMessage(error) ?? '')?.[1];
    return new DoppelError('E_KUBE_FORBIDDEN', `not allowed to ${what}${user ? ` as ${user}` : ''} (403 Forbidden)`, {
      category: 'permission',
      cause: error,
      hint: `check with \`${canIRequest(operation, contextFlag)}\`; ask a cluster admin for a Role that allows it`,
    });
  }
  if (status !== undefined) {
    const said = serverMessage(error);
    return new DoppelError('E_KUBE_API', `${server} refused to ${what}: ${status}${said ? ` ${oneLine(said)}` : ''}`, {
      category: 'target',
      cause: error,
      hint: status >= 500 ? 'the cluster is unwell; try again, or ask its admin' : `try the same with kubectl${contextFlag} to see the server's full answer`,
    });
  }
  const cause = rootCause(error);
  if (cause.code === 'ENOENT' && typeof cause.path === 'string') {
    return new DoppelError('E_KUBECONFIG_INVALID', `the kubeconfig${context} names ${cause.path}, which does not exist`, {
      category: 'config',
      cause: error,
      hint: 'fix the certificate, key or token file path in the kubeconfig (relative paths are relative to the kubeconfig file)',
    });
  }
  if (cause.name === 'TimeoutError' || cause.name === 'AbortError') {
    return new DoppelError('E_KUBE_UNREACHABLE', `${server}${context} did not answer in time to ${what}`, {
      category: 'target',
      cause: error,
      hint: `check that the cluster is up and reachable from here: \`kubectl${contextFlag} cluster-info\``,
    });
  }
  if (cause.code !== undefined && networkCodes.has(cause.code)) {
    return new DoppelError('E_KUBE_UNREACHABLE', `cannot reach ${server}${context}: ${cause.code}`, {
      category: 'target',
      cause: error,
      hint: `check that the cluster is running and that the kubeconfig's server address is right: \`kubectl${contextFlag} cluster-info\``,
    });
  }
  if (cause.code !== undefined && /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME/.test(cause.code)) {
    return new DoppelError('E_KUBE_UNREACHABLE', `cannot trust ${server}${context}: ${cause.code}`, {
      category: 'target',
      cause: error,
      hint: "the server's certificate does not match the kubeconfig's certificate-authority; fetch a fresh kubeconfig for this cluster",
    });
  }
  return new DoppelError('E_KUBE_API', `cannot ${what}${context}: ${oneLine(cause.message ?? String(error))}`, {
    category: 'target',
    cause: error,
    hint: `try the same with kubectl${contextFlag}; if kubectl works, this is a bug in doppel`,
  });
}

/** Runs one API call and turns its failure into a DoppelError naming the operation. */
export async function kubeCall<T>(operation: KubeOperation, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw kubeError(error, operation);
  }
}

function describeOperation(operation: KubeOperation): string {
  const object = operation.name ? `${operation.resource} ${operation.name}` : operation.resource;
  if (operation.allNamespaces) return `${operation.verb} ${object} in all namespaces`;
  if (operation.namespace === undefined) return `${operation.verb} ${object}`;
  return `${operation.verb} ${object} in namespace ${operation.namespace}`;
}

function canIRequest(operation: KubeOperation, contextFlag: string): string {
  const scope = operation.allNamespaces ? ' --all-namespaces' : operation.namespace === undefined ? '' : ` -n ${operation.namespace}`;
  return `kubectl${contextFlag} auth can-i ${operation.verb} ${operation.resource}${scope}`;
}

/** fetch wraps the socket's error as `cause`, sometimes twice (AggregateError for several addresses). */
function rootCause(error: unknown): { code?: string; name?: string; message?: string; path?: unknown } {
  let current = error as { code?: unknown; name?: string; message?: string; path?: unknown; cause?: unknown; errors?: unknown[] } | undefined;
  for (let depth = 0; depth < 5 && current; depth += 1) {
    if (typeof current.code === 'string' || current.name === 'TimeoutError' || current.name === 'AbortError') break;
    const next = current.cause ?? current.errors?.[0];
    if (next === undefined || next === null) break;
    current = next as typeof current;
  }
  return {
    code: typeof current?.code === 'string' ? current.code : undefined,
    name: current?.name,
    message: current?.message,
    path: current?.path,
  };
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
