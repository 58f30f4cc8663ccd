// Turns the fs policy's regexes into rules the layer applies itself, without a regex engine: exact paths, prefixes,
// suffixes and substrings, ASCII case-insensitive. Only simple patterns convert; the policy decides which may be sent.
import { diskCache } from './disk-cache.ts';

export type FastMatch = 'exact' | 'prefix' | 'suffix' | 'contains';

/**
 * The first rule a path matches decides: `local` keeps the call local without asking, `ask` sends it to the proxy, and
 * `remote` says the policy reads the file from the target at the same path: where the layer can reach the target's
 * root itself (a local process target), it opens such a file there for reading, without asking; any other call asks.
 */
export interface FastRule {
  match: FastMatch;
  verdict: 'local' | 'ask' | 'remote';
  /** Lower-case ASCII. */
  text: string;
}

type Token = { lit: string[] } | { caret: true } | { dollar: true } | { any: true } | { componentStart: true } | { componentEnd: true };

/** Characters a regex treats specially; escaped, they (and `/`, `-`) stand for themselves. */
const SPECIAL = new Set(['\\', '^', '$', '.', '|', '?', '*', '+', '(', ')', '[', ']', '{', '}']);
const MAX_EXPANSION = 64;

/** One literal (escapes resolved), or undefined when the text has regex syntax. */
function literal(text: string): string | undefined {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '\\') {
      const next = text[i + 1];
      if (next === undefined || !(SPECIAL.has(next) || next === '/' || next === '-')) return undefined;
      out += next;
      i++;
    } else if (SPECIAL.has(c)) return undefined;
    else out += c;
  }
  return out;
}

function tokenize(source: string): Token[] | undefined {
  const tokens: Token[] = [];
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    if (c === '\\') {
      const lit = literal(source.slice(i, i + 2));
      if (lit === undefined) return undefined;
      tokens.push({ lit: [lit] });
      i++;
    } else if (c === '^') tokens.push({ caret: true });
    else if (c === '$') tokens.push({ dollar: true });
    else if (c === '.' && source[i + 1] === '*') {
      tokens.push({ any: true });
      i++;
    } else if (c === '(') {
      const close = source.indexOf(')', i);
      if (close < 0) return undefined;
      const inner = source.slice(i + 1, close).replace(/^\?:/, '');
      if (inner.includes('(')) return undefined;
      if (inner === '.*') tokens.push({ any: true });
      else if (inner === '^|/') tokens.push({ componentStart: true });
      else if (inner === '/|$') tokens.push({ componentEnd: true });
      else {
        const alternatives = inner.split('|').map(literal);
        if (alternatives.some((alt) => alt === undefined)) return undefined;
        tokens.push({ lit: alternatives as string[] });
      }
      i = close;
    } else if (SPECIAL.has(c)) return undefined;
    else tokens.push({ lit: [c] });
  }
  return tokens;
}

/**
 * The rules matching exactly the absolute, normalized paths `new RegExp(source, 'i')` matches, or undefined when
 * the pattern is not of the simple forms: `^L`, `L$`, `^L$`, `L`, `(^|/)L`, `L(/|$)` and `.*` at either end, where
 * L is literal text with escapes and groups of literal alternatives. Rules with non-ASCII text are left out: in a
 * regex without the `u` flag, non-ASCII never matches ASCII, and the layer asks the proxy about any non-ASCII path.
 */
export function convertPattern(source: string): { match: FastMatch; text: string }[] | undefined {
  const tokens = tokenize(source);
  if (tokens === undefined) return undefined;
  const first = tokens[0];
  const start = first && ('caret' in first || 'componentStart' in first || 'any' in first) ? tokens.shift()! : undefined;
  const last = tokens.at(-1);
  let end = last && ('dollar' in last || 'componentEnd' in last || 'any' in last) ? tokens.pop()! : undefined;
  // `.*$` is `.*`.
  if (end && 'dollar' in end && tokens.at(-1) && 'any' in tokens.at(-1)!) end = tokens.pop();
  let texts = [''];
  for (const token of tokens) {
    if (!('lit' in token)) return undefined;
    texts = texts.flatMap((text) => token.lit.map((alt) => text + alt));
    if (texts.length > MAX_EXPANSION) return undefined;
  }
  const anchored = start !== undefined && 'caret' in start;
  if (start !== undefined && 'componentStart' in start) {
    // On an absolute path, `(^|/)L` can only match after a slash (L does not start with one).
    if (texts.some((text) => text === '' || text.startsWith('/'))) return undefined;
    texts = texts.map((text) => `/${text}`);
  }
  const rules = texts.flatMap((text): { match: FastMatch; text: string }[] => {
    if (end !== undefined && 'dollar' in end) return [{ match: anchored ? 'exact' : 'suffix', text }];
    if (end !== undefined && 'componentEnd' in end) return [{ match: anchored ? 'exact' : 'suffix', text }, { match: anchored ? 'prefix' : 'contains', text: `${text}/` }];
    return [{ match: anchored ? 'prefix' : 'contains', text }];
  });
  return rules.filter((rule) => [...rule.text].every((c) => c.charCodeAt(0) < 0x80)).map((rule) => ({ ...rule, text: rule.text.toLowerCase() }));
}

/**
 * For a pattern that does not convert exactly: the literal text every match starts with, when it is anchored at the
 * start (`^/srv/[a-z]+` -> `/srv/`). A prefix rule made of it matches more than the pattern, which is safe for an
 * exception (more paths asked), never for a local rule. Undefined when a top-level `|` could match anything else.
 */
export function anchoredPrefix(source: string): string | undefined {
  if (!source.startsWith('^')) return undefined;
  let depth = 0;
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') i++;
    else if (inClass) inClass = c !== ']';
    else if (c === '[') inClass = true;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '|' && depth === 0) return undefined;
  }
  let prefix = '';
  for (let i = 1; i < source.length; i++) {
    const c = source[i]!;
    const lit = c === '\\' ? literal(source.slice(i, i + 2)) : SPECIAL.has(c) ? undefined : c;
    if (lit === undefined) {
      // A quantifier applies to the character before it, which may then be absent.
      if ('?*{'.includes(c)) prefix = prefix.slice(0, -1);
      break;
    }
    prefix += lit;
    if (c === '\\') i++;
  }
  // Cut at the first non-ASCII character: a shorter prefix only matches more.
  const ascii = [...prefix].findIndex((c) => c.charCodeAt(0) >= 0x80);
  return (ascii < 0 ? prefix : prefix.slice(0, ascii)).toLowerCase();
}

/** The policy's lists in its decision order, as regex sources. */
export interface FsLists {
  mode: 'local' | 'localwithoverrides' | 'read' | 'write';
  /** Mapping patterns: a path one matches is rewritten, so it must reach the proxy. */
  mapping: string[];
  /** Decided before the local lists: not_found, then read_write and read_only (read from the target). */
  userNotFound: string[];
  userRemote: string[];
  userLocal: string[];
  /** The defaults that come before the local defaults: not-found ones, then the remote ones and the target's mounts. */
  defaultNotFound: string[];
  defaultRemote: string[];
  defaultLocal: string[];
}

/**
 * A rule that matches every path `source` matches, and more: its anchored literal prefix (`^/srv/[a-z]+`: `/srv/`), or
 * else the literal it starts with, which every match contains (`\\.so(\\.\\d+)+$`: `.so`). Undefined when there is none.
 */
function widen(source: string): { match: FastMatch; text: string } | undefined {
  const prefix = anchoredPrefix(source);
  if (prefix !== undefined) return { match: 'prefix', text: prefix };
  const component = source.startsWith('(^|/)');
  const text = anchoredPrefix(`^${component ? source.slice('(^|/)'.length) : source}`);
  return text ? { match: 'contains', text: `${component ? '/' : ''}${text}` } : undefined;
}

/**
 * Rules in the policy's decision order, the first match deciding, under which every path the layer calls local is
 * one the policy calls local, whatever the call, and every path it calls remote is one the policy reads from the
 * target at that very path. A pattern that does not convert exactly is widened (see `widen`) to an `ask` rule; if it
 * cannot be, no rules at all are sent (the layer then asks about everything), since the paths it matches could be
 * any. A local pattern that does not convert is left out (its paths are asked), but a path it matches must not meet
 * a later `remote` rule first: its widened `ask` rule goes before the next `remote` one, and if it has none, no later
 * rule is `remote`. In the read and write modes the last rule matches every path: the policy's last word for a read.
 */
function deriveFastRules(lists: FsLists): FastRule[] {
  const levels: { verdict: FastRule['verdict']; sources: string[] }[] = [
    { verdict: 'ask', sources: lists.mapping },
    ...(lists.mode === 'local' ? [] : [{ verdict: 'ask' as const, sources: lists.userNotFound }, { verdict: 'remote' as const, sources: lists.userRemote }]),
    ...(lists.mode === 'local' || lists.mode === 'localwithoverrides'
      ? [{ verdict: 'local' as const, sources: ['^/'] }]
      : [
          { verdict: 'local' as const, sources: lists.userLocal },
          { verdict: 'ask' as const, sources: lists.defaultNotFound },
          { verdict: 'remote' as const, sources: lists.defaultRemote },
          { verdict: 'local' as const, sources: lists.defaultLocal },
          { verdict: 'remote' as const, sources: [''] },
        ]),
  ];
  const rules: FastRule[] = [];
  /** The widened rules of local patterns that did not convert, not yet placed; and whether one could not be widened. */
  let pending: FastRule[] = [];
  let unwidened = false;
  for (const { verdict, sources } of levels) {
    for (const source of sources) {
      if (verdict === 'remote') {
        rules.push(...pending);
        pending = [];
      }
      const converted = source === '' ? [{ match: 'contains' as const, text: '' }] : convertPattern(source);
      if (converted !== undefined) {
        const decided = verdict === 'remote' && unwidened ? 'ask' : verdict;
        rules.push(...converted.map((rule) => ({ ...rule, verdict: decided })));
        continue;
      }
      const widened = widen(source);
      if (verdict === 'local') {
        if (widened) pending.push({ ...widened, verdict: 'ask' });
        else unwidened = true;
      } else if (widened) rules.push({ ...widened, verdict: 'ask' });
      else return [];
    }
  }
  // A rule after an identical one never decides; nor does an `ask` rule at the end, since no rule means ask.
  const seen = new Set<string>();
  const kept = rules.filter((rule) => {
    const key = `${rule.match} ${rule.text}`;
    return !seen.has(key) && seen.add(key);
  });
  while (kept.at(-1)?.verdict === 'ask') kept.pop();
  return kept;
}

/** deriveFastRules, kept on disk per lists (disk-cache.ts): run cold at every start, it cost 2-3 ms of the way to the program's spawn. */
export function fastRulesFor(lists: FsLists): FastRule[] {
  const cache = diskCache<FastRule[]>('fast-rules', lists, [new URL(import.meta.url)]);
  const cached = cache?.read();
  if (cached) return cached;
  const rules = deriveFastRules(lists);
  cache?.write(rules);
  return rules;
}
