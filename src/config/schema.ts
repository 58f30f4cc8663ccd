// The configuration file's schema (mirrord's keys and meanings) and the one resolved shape the rest of doppel reads.
import { z } from 'zod';
import { defaultAgentImage } from '../platform/kubernetes/agent-image.ts';

const list = z.union([z.string(), z.array(z.string())]);
const regexList = z.array(z.string());
const stringMap = z.record(z.string(), z.string());
const seconds = z.number().nonnegative();

export const fsModes = ['read', 'write', 'local', 'localwithoverrides'] as const;
const fsSchema = z.union([
  z.boolean(),
  z.enum(fsModes),
  z.strictObject({
    mode: z.enum(fsModes).optional(),
    read_write: regexList.optional(),
    read_only: regexList.optional(),
    local: regexList.optional(),
    not_found: regexList.optional(),
    mapping: stringMap.optional(),
    readonly_file_buffer: z.number().int().positive().optional(),
  }),
]);

const envSchema = z.union([
  z.boolean(),
  z.strictObject({
    include: list.optional(),
    exclude: list.optional(),
    override: stringMap.optional(),
    unset: list.optional(),
    env_file: z.string().optional(),
    mapping: stringMap.optional(),
    load_from_process: z.boolean().optional(),
  }),
]);

const filterSchema = z.strictObject({ remote: z.array(z.string()).optional(), local: z.array(z.string()).optional() });

const outgoingSchema = z.union([
  z.boolean(),
  z.strictObject({
    tcp: z.boolean().optional(),
    udp: z.boolean().optional(),
    ignore_localhost: z.boolean().optional(),
    filter: filterSchema.optional(),
    unix_streams: list.optional(),
  }),
]);

const dnsSchema = z.union([z.boolean(), z.strictObject({ enabled: z.boolean().optional(), filter: filterSchema.optional() })]);

const incomingModes = ['mirror', 'steal', 'off'] as const;
// mirrord's http_filter: one of header_filter, path_filter, method_filter, all_of, any_of; `ports` are the target's
// ports it applies to (all of them when absent, as in mirrord since its default of [80, 8080] went).
const httpFilterLeaf = z.strictObject({ header: z.string().optional(), path: z.string().optional(), method: z.string().optional() });
const httpFilterSchema = z.strictObject({
  header_filter: z.string().optional(),
  path_filter: z.string().optional(),
  method_filter: z.string().optional(),
  all_of: z.array(httpFilterLeaf).optional(),
  any_of: z.array(httpFilterLeaf).optional(),
  ports: z.array(z.number().int().min(1).max(65535)).optional(),
});
const portPair = z.tuple([z.number().int().min(0).max(65535), z.number().int().min(0).max(65535)]);
const incomingSchema = z.union([
  z.boolean(),
  z.enum(incomingModes),
  z.strictObject({
    mode: z.enum(incomingModes).optional(),
    http_filter: httpFilterSchema.optional(),
    port_mapping: z.array(portPair).optional(),
    ignore_localhost: z.boolean().optional(),
    ignore_ports: z.array(z.number().int().min(1).max(65535)).optional(),
    ports: z.array(z.number().int().min(1).max(65535)).optional(),
    listen_ports: z.array(portPair).optional(),
    on_concurrent_steal: z.enum(['abort', 'continue', 'override']).optional(),
    // doppel's own key: Kubernetes probes (`User-Agent: kube-probe/...`) are stolen too, so the target may go unready.
    steal_probes: z
      .boolean()
      .describe('doppel: also steal Kubernetes probes (User-Agent: kube-probe/...); by default they stay with the target, filtered steal or not')
      .optional(),
  }),
]);

export const logLevels = ['error', 'warn', 'info', 'debug'] as const;
const agentSchema = z.strictObject({
  image: z.string().optional(),
  namespace: z.string().optional(),
  log_level: z.enum(logLevels).optional(),
  image_pull_policy: z.enum(['Always', 'IfNotPresent', 'Never']).optional(),
  image_pull_secrets: z.array(z.record(z.string(), z.string())).optional(),
  ttl: seconds.optional(),
  ephemeral: z.boolean().optional(),
  communication_timeout: seconds.optional(),
  startup_timeout: seconds.optional(),
  flush_connections: z.boolean().optional(),
  disabled_capabilities: z.array(z.string()).optional(),
  privileged: z.boolean().optional(),
  tolerations: z.array(z.record(z.string(), z.unknown())).optional(),
  resources: z.record(z.string(), z.unknown()).optional(),
  labels: stringMap.optional(),
  annotations: stringMap.optional(),
  node_selector: stringMap.optional(),
  service_account: z.string().optional(),
  // doppel's own key.
  direct_link: z
    .boolean()
    .describe('doppel: once the agent answers through the port-forward, move the link to a TCP connection to its pod where this machine reaches it (default true)')
    .optional(),
});

export const configSchema = z.strictObject({
  $schema: z.string().optional(),
  target: z
    .union([
      z.string(),
      z.strictObject({
        path: z.string().optional(),
        namespace: z.string().optional(),
        // doppel's own key: a workload's every ready replica gets an agent ("all"), or only the first ("one", mirrord's way).
        replicas: z.enum(['all', 'one']).optional(),
      }),
    ])
    .optional(),
  feature: z
    .strictObject({
      env: envSchema.optional(),
      fs: fsSchema.optional(),
      network: z
        .strictObject({
          incoming: incomingSchema.optional(),
          outgoing: outgoingSchema.optional(),
          dns: dnsSchema.optional(),
        })
        .optional(),
      hostname: z.boolean().optional(),
    })
    .optional(),
  agent: agentSchema.optional(),
  kubeconfig: z.string().optional(),
  kube_context: z.string().optional(),
  accept_invalid_certificates: z.boolean().optional(),
  skip_processes: list.optional(),
  skip_build_tools: z.boolean().optional(),
  internal_proxy: z.strictObject({ start_idle_timeout: seconds.optional(), idle_timeout: seconds.optional() }).optional(),
});

export type ConfigFile = z.infer<typeof configSchema>;
export type FsMode = (typeof fsModes)[number];

export type HttpFilterConfig = z.infer<typeof httpFilterSchema>;

export interface Filter {
  remote?: string[];
  local?: string[];
}

/** Every key filled in: what the CLI, the proxy and the platforms read. */
export interface ResolvedConfig {
  target: { path: string | undefined; namespace: string | undefined; replicas: 'all' | 'one' };
  feature: {
    env: {
      enabled: boolean;
      include: string[] | undefined;
      exclude: string[];
      override: Record<string, string>;
      unset: string[];
      env_file: string | undefined;
      mapping: Record<string, string>;
      load_from_process: boolean;
    };
    fs: {
      mode: FsMode;
      read_write: string[];
      read_only: string[];
      local: string[];
      not_found: string[];
      mapping: Record<string, string>;
      readonly_file_buffer: number;
    };
    network: {
      incoming: {
        mode: (typeof incomingModes)[number];
        http_filter: HttpFilterConfig | undefined;
        port_mapping: [number, number][];
        ignore_localhost: boolean;
        ignore_ports: number[];
        ports: number[] | undefined;
        listen_ports: [number, number][];
        on_concurrent_steal: 'abort' | 'continue' | 'override';
        steal_probes: boolean;
      };
      outgoing: { tcp: boolean; udp: boolean; ignore_localhost: boolean; filter: Filter | undefined; unix_streams: string[] };
      dns: { enabled: boolean; filter: Filter | undefined };
    };
    hostname: boolean;
  };
  agent: {
    image: string;
    namespace: string | undefined;
    log_level: (typeof logLevels)[number];
    image_pull_policy: 'Always' | 'IfNotPresent' | 'Never';
    image_pull_secrets: Record<string, string>[];
    ttl: number;
    ephemeral: boolean;
    communication_timeout: number;
    startup_timeout: number;
    flush_connections: boolean;
    disabled_capabilities: string[];
    privileged: boolean;
    tolerations: Record<string, unknown>[];
    resources: Record<string, unknown>;
    labels: Record<string, string>;
    annotations: Record<string, string>;
    node_selector: Record<string, string>;
    service_account: string | undefined;
    direct_link: boolean;
  };
  kubeconfig: string | undefined;
  kube_context: string | undefined;
  accept_invalid_certificates: boolean;
  skip_processes: string[];
  skip_build_tools: boolean;
  internal_proxy: { start_idle_timeout: number; idle_timeout: number };
}

export const DEFAULT_AGENT_IMAGE = defaultAgentImage();
