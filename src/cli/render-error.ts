// Renders any error that reaches the CLI's top level: expected failures as one line plus a hint, anything else as a bug.
import { readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { isDoppelError } from '../errors.ts';

export function renderError(error: unknown, options: { json: boolean }): void {
  process.stderr.write(errorText(error, options));
}

/** What renderError prints; the warm session host writes it to its program's stderr. */
export function errorText(error: unknown, options: { json: boolean }): string {
  if (options.json) {
    const body = isDoppelError(error)
      ? { code: error.code, category: error.category, message: error.message, hint: error.hint }
      : { code: 'E_INTERNAL', category: 'internal', message: String((error as Error)?.message ?? error) };
    return `${JSON.stringify({ error: body })}\n`;
  }
  if (isDoppelError(error)) return `doppel: ${error.message} [${error.code}]\n${error.hint ? `  hint: ${error.hint}\n` : ''}`;
  const detail = error instanceof Error ? (error.stack ? mapStack(error.stack) : error.message) : String(error);
  return `doppel: internal error (a bug in doppel, please report it): ${detail}\n`;
}

/**
 * The stack with each frame in our built files at its TypeScript line, from the file's source map. Node's
 * --enable-source-maps would do it for every stack, but it reads every module's map as the module loads, 3-8 ms of
 * every start, for the one report of a bug.
 */
export function mapStack(stack: string): string {
  const maps = new Map<string, SourceMap | undefined>();
  return stack.replace(/(file:\/\/\/[^\s()]+\.c?js):(\d+):(\d+)/g, (frame, url: string, line: string, column: string) => {
    if (!maps.has(url)) maps.set(url, readMap(url));
    const entry = maps.get(url)?.findEntry(Number(line) - 1, Number(column) - 1);
    if (!entry || !('originalSource' in entry)) return frame;
    return `${fileURLToPath(new URL(entry.originalSource, url))}:${entry.originalLine + 1}:${entry.originalColumn + 1}`;
  });
}

function readMap(url: string): SourceMap | undefined {
  try {
    return new SourceMap(JSON.parse(readFileSync(fileURLToPath(`${url}.map`), 'utf8')));
  } catch {
    return undefined;
  }
}
