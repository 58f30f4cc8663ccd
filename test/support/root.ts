// Test gate for work that needs root: skips with a visible reason outside CI, fails under CI=true where nothing may skip.
import process from 'node:process';

export function needsRoot(what = 'this test'): { skip?: string } {
  if (process.getuid?.() === 0) return {};
  const reason = `${what} needs root (namespaces, mounts, iptables)`;
  if (process.env.CI === 'true') throw new Error(`${reason}, and under CI=true nothing may skip`);
  return { skip: reason };
}
