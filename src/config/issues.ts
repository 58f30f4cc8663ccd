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
      // Report the branch whose type the value has; if none, list the types that would have done.
      const mismatched = (branch: Issue[]) => branch.some((i) => i.path.length === 0 && (i.code === 'invalid_type' || i.code === 'invalid_value'));
      const matched = issue.errors.find((branch) => !mismatched(branch));
      if (matched) return describeIssues(matched, path);
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
