// Turns a validated config file (shorthands and all) into the one resolved shape, with mirrord's defaults.
import type { ConfigFile, ResolvedConfig } from './schema.ts';
import { DEFAULT_AGENT_IMAGE } from './schema.ts';

/** `a;b` strings and lists both become lists. */
export function toList(value: string | string[] | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  return (Array.isArray(value) ? value : value.split(';')).map((item) => item.trim()).filter((item) => item !== '');
}

export function resolveConfig(file: ConfigFile): ResolvedConfig {
  const feature = file.feature ?? {};
  const env = typeof feature.env === 'object' ? feature.env : {};
  const fs = typeof feature.fs === 'object' ? feature.fs : {};
  const fsMode = feature.fs === false ? 'local' : typeof feature.fs === 'string' ? feature.fs : (fs.mode ?? 'read');
  const network = feature.network ?? {};
  const incoming = typeof network.incoming === 'object' ? network.incoming : {};
  const incomingMode = network.incoming === false ? 'off' : typeof network.incoming === 'string' ? network.incoming : (incoming.mode ?? 'mirror');
  const outgoing = typeof network.outgoing === 'object' ? network.outgoing : {};
  const outgoingOn = network.outgoing !== false;
  const dns = typeof network.dns === 'object' ? network.dns : {};
  const agent = file.agent ?? {};
  const target = typeof file.target === 'string' ? { path: file.target } : (file.target ?? {});
  return {
    target: { path: target.path, namespace: target.namespace, replicas: target.replicas ?? 'all' },
    feature: {
      env: {
        enabled: feature.env !== false,
        include: toList(env.include),
        exclude: toList(env.exclude) ?? [],
        override: env.override ?? {},
        unset: toList(env.unset) ?? [],
        env_file: env.env_file,
        mapping: env.mapping ?? {},
        load_from_process: env.load_from_process ?? false,
      },
      fs: {
        mode: fsMode,
        read_write: fs.read_write ?? [],
        read_only: fs.read_only ?? [],
        local: fs.local ?? [],
        not_found: fs.not_found ?? [],
        mapping: fs.mapping ?? {},
        readonly_file_buffer: fs.readonly_file_buffer ?? 128_000,
      },
      network: {
        incoming: {
          mode: incomingMode,
          http_filter: incoming.http_filter,
          port_mapping: incoming.port_mapping ?? [],
          ignore_localhost: incoming.ignore_localhost ?? false,
          ignore_ports: incoming.ignore_ports ?? [],
          ports: incoming.ports,
          listen_ports: incoming.listen_ports ?? [],
          on_concurrent_steal: incoming.on_concurrent_steal ?? 'abort',
          steal_probes: incoming.steal_probes ?? false,
        },
        outgoing: {
          tcp: outgoingOn && (outgoing.tcp ?? true),
          udp: outgoingOn && (outgoing.udp ?? true),
          ignore_localhost: outgoing.ignore_localhost ?? false,
          filter: outgoing.filter,
          unix_streams: toList(outgoing.unix_streams) ?? [],
        },
        dns: { enabled: network.dns !== false && (dns.enabled ?? true), filter: dns.filter },
      },
      hostname: feature.hostname ?? true,
    },
    agent: {
      image: agent.image ?? DEFAULT_AGENT_IMAGE,
      namespace: agent.namespace,
      log_level: agent.log_level ?? 'info',
      image_pull_policy: agent.image_pull_policy ?? 'IfNotPresent',
      image_pull_secrets: agent.image_pull_secrets ?? [],
      ttl: agent.ttl ?? 1,
      ephemeral: agent.ephemeral ?? false,
      communication_timeout: agent.communication_timeout ?? 30,
      startup_timeout: agent.startup_timeout ?? 60,
      flush_connections: agent.flush_connections ?? true,
      disabled_capabilities: agent.disabled_capabilities ?? [],
      privileged: agent.privileged ?? false,
      tolerations: agent.tolerations ?? [{ operator: 'Exists' }],
      // mirrord's 100Mi limit is known to kill its agent under load (its #3255); two Node processes need more.
      resources: agent.resources ?? { requests: { cpu: '10m', memory: '64Mi' }, limits: { cpu: '1', memory: '256Mi' } },
      labels: agent.labels ?? {},
      annotations: agent.annotations ?? {},
      node_selector: agent.node_selector ?? {},
      service_account: agent.service_account,
      direct_link: agent.direct_link ?? true,
    },
    kubeconfig: file.kubeconfig,
    kube_context: file.kube_context,
    accept_invalid_certificates: file.accept_invalid_certificates ?? false,
    skip_processes: toList(file.skip_processes) ?? [],
    skip_build_tools: file.skip_build_tools ?? true,
    internal_proxy: { start_idle_timeout: file.internal_proxy?.start_idle_timeout ?? 60, idle_timeout: file.internal_proxy?.idle_timeout ?? 5 },
  };
}
