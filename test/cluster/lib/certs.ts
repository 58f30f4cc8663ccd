// One CA and the certificates each component needs, made with openssl, plus the kubeconfigs that use them.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { kubeconfigPath, network, nodeName, ports, stateDir } from './settings.ts';
import { cmd } from './system.ts';

export const pkiDir = path.join(stateDir, 'pki');
export const pki = (name: string): string => path.join(pkiDir, name);
export const apiserverURL = `https://${network.nodeIP}:${ports.apiserver}`;

interface Cert {
  name: string;
  subject: string;
  /** Server certificates carry the names and addresses they answer on. */
  sans?: string[];
}

const clientCerts: Cert[] = [
  { name: 'admin', subject: '/O=system:masters/CN=doppel-admin' },
  { name: 'apiserver-kubelet-client', subject: '/O=system:masters/CN=kube-apiserver-kubelet-client' },
  { name: 'controller-manager', subject: '/CN=system:kube-controller-manager' },
  { name: 'scheduler', subject: '/CN=system:kube-scheduler' },
  { name: 'kubelet', subject: `/O=system:nodes/CN=system:node:${nodeName}` },
  { name: 'kube-proxy', subject: '/CN=system:kube-proxy' },
];

const apiserverCert: Cert = {
  name: 'apiserver',
  subject: '/CN=kube-apiserver',
  sans: [
    `IP:${network.nodeIP}`,
    `IP:${network.kubernetesServiceIP}`,
    'IP:127.0.0.1',
    'DNS:localhost',
    'DNS:kubernetes',
    'DNS:kubernetes.default',
    'DNS:kubernetes.default.svc',
    'DNS:kubernetes.default.svc.cluster.local',
  ],
};

function ecKey(file: string): void {
  cmd('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file]);
}

function issue(cert: Cert): void {
  const key = pki(`${cert.name}.key`);
  const csr = pki(`${cert.name}.csr`);
  const ext = pki(`${cert.name}.ext`);
  ecKey(key);
  cmd('openssl', ['req', '-new', '-key', key, '-subj', cert.subject, '-out', csr]);
  const usage = cert.sans ? 'serverAuth' : 'clientAuth';
  writeFileSync(
    ext,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      `extendedKeyUsage=${usage}`,
      ...(cert.sans ? [`subjectAltName=${cert.sans.join(',')}`] : []),
      '',
    ].join('\n'),
  );
  cmd('openssl', [
    'x509', '-req', '-in', csr, '-CA', pki('ca.crt'), '-CAkey', pki('ca.key'), '-CAcreateserial',
    '-days', '30', '-extfile', ext, '-out', pki(`${cert.name}.crt`),
  ]);
}

export function makeCertificates(): void {
  mkdirSync(pkiDir, { recursive: true, mode: 0o700 });
  ecKey(pki('ca.key'));
  cmd('openssl', [
    'req', '-x509', '-new', '-key', pki('ca.key'), '-subj', '/CN=doppel-test-cluster-ca', '-days', '30',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-out', pki('ca.crt'),
  ]);
  issue(apiserverCert);
  for (const cert of clientCerts) issue(cert);
  ecKey(pki('service-account.key'));
  cmd('openssl', ['pkey', '-in', pki('service-account.key'), '-pubout', '-out', pki('service-account.pub')]);
  for (const cert of clientCerts) writeKubeconfig(cert.name);
}

export function kubeconfigFor(name: string): string {
  return name === 'admin' ? kubeconfigPath : path.join(stateDir, `${name}.kubeconfig`);
}

function writeKubeconfig(name: string): void {
  if (name === 'apiserver-kubelet-client') return;
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'doppel-test', cluster: { server: apiserverURL, 'certificate-authority': pki('ca.crt') } }],
    users: [{ name, user: { 'client-certificate': pki(`${name}.crt`), 'client-key': pki(`${name}.key`) } }],
    contexts: [{ name: 'doppel-test', context: { cluster: 'doppel-test', user: name } }],
    'current-context': 'doppel-test',
  };
  // JSON is valid YAML, which every Kubernetes client reads.
  writeFileSync(kubeconfigFor(name), `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
}
