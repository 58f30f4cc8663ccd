// The workloads the cluster suite runs, all from the test-app image, in one namespace the suite owns.
import { images } from './lib/settings.ts';

export const namespace = 'doppel-cluster-test';
const image = images.testApp;
const app = (name: string) => ({ app: name });
const httpd = {
  name: 'app',
  image,
  imagePullPolicy: 'Never',
  ports: [{ containerPort: 8080 }],
  readinessProbe: { httpGet: { path: '/', port: 8080 }, periodSeconds: 1 },
};

export const manifests = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } },
  {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'api', namespace },
    spec: {
      replicas: 2,
      selector: { matchLabels: app('api') },
      template: {
        metadata: { labels: app('api') },
        spec: { containers: [{ ...httpd, env: [{ name: 'DOPPEL_TEST_ENV', value: 'from-the-deployment' }] }] },
      },
    },
  },
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'api', namespace },
    spec: { selector: app('api'), ports: [{ port: 80, targetPort: 8080 }] },
  },
  {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name: 'once', namespace },
    spec: {
      backoffLimit: 0,
      template: {
        spec: {
          restartPolicy: 'Never',
          containers: [{ name: 'once', image, imagePullPolicy: 'Never', command: ['sh', '-c', 'cat /app/message.txt'] }],
        },
      },
    },
  },
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'db', namespace },
    spec: { clusterIP: 'None', selector: app('db'), ports: [{ port: 8080 }] },
  },
  {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: { name: 'db', namespace },
    spec: {
      serviceName: 'db',
      replicas: 1,
      selector: { matchLabels: app('db') },
      template: { metadata: { labels: app('db') }, spec: { containers: [httpd] } },
    },
  },
  {
    // What the doppel agent will need: the node's processes and the right to enter their namespaces.
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'agent-like', namespace },
    spec: {
      hostPID: true,
      restartPolicy: 'Never',
      containers: [
        {
          name: 'agent',
          image,
          imagePullPolicy: 'Never',
          command: ['sleep', '3600'],
          securityContext: { capabilities: { add: ['NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE'] } },
        },
      ],
    },
  },
];
