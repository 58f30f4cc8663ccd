// Renders schema problems as one line each, naming the exact key path.
import type { z } from 'zod';

type Issue = z.core.$ZodIssue;

export function describeIssues(issues: readonly Issue[], prefix: PropertyKey[] = []): string[] {
  return issues.flatMap((issue) => describe(issue, [...prefix, ...issue.path]));
}

function describe(issue: Issue, path: PropertyKey[]): string[] {
  const where = path.length === 0 ? '(top level)' : path.map(String).join('.');
  switch (issue.code) {
    case 'invalid_union': {
      // Report the branch that got deepest into the value (it matched its type); if none did, list the types that would have.
      const depth = (branch: Issue[]) => Math.min(...branch.map((i) => i.path.length));
      const deepest = [...issue.errors].sort((a, b) => depth(b) - depth(a))[0];
      if (deepest && depth(deepest) > 0) return describeIssues(deepest, path);
      const expected = issue.errors.flatMap((branch) => branch.filter((i) => i.path.length === 0).map((i) => expectedOf(i)));
      return [`${where}: expected ${[...new Set(expected)].join(' or ')}`];
    }
    case 'unrecognized_keys':
      return issue.keys.map((key) => `${path.length === 0 ? key : `${where}.${key}`}: unknown key`);
    case 'invalid_value':
      return [`${where}: expected one of ${issue.values.map((v) => JSON.stringify(v)).join('|')}`];
    case 'invalid_type':
      return [`${where}: expected ${issue.expected}`];
    default:
      return [`${where}: ${issue.message}`];
  }
}

function expectedOf(issue: Issue): string {
  if (issue.code === 'invalid_type') return String(issue.expected);
  if (issue.code === 'invalid_value') return `one of ${issue.values.map((v) => JSON.stringify(v)).join('|')}`;
  return issue.message;
}
