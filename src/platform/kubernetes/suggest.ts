// "Did you mean": the existing names closest to a mistyped one, by edit distance, plus names that extend it.

export function closestNames(wanted: string, candidates: readonly string[], limit = 3): string[] {
  const tolerance = Math.max(2, Math.floor(wanted.length / 3));
  return [...new Set(candidates)]
    .map((name) => ({ name, distance: name.startsWith(wanted) || wanted.startsWith(name) ? Math.min(1, editDistance(wanted, name)) : editDistance(wanted, name) }))
    .filter(({ distance }) => distance <= tolerance)
    .sort((a, b) => a.distance - b.distance || a.name.localeCompare(b.name))
    .slice(0, limit)
    .map(({ name }) => name);
}

/** Levenshtein distance: insertions, deletions and substitutions each cost 1. */
export function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i += 1) {
    const current = [i];
    for (let j = 1; j <= b.length; j += 1) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length]!;
}
