// Renders any error that reaches the CLI's top level: expected failures as one line plus a hint, anything else as a bug.
import process from 'node:process';
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
  const detail = error instanceof Error ? (error.stack ?? error.message) : String(error);
  return `doppel: internal error (a bug in doppel, please report it): ${detail}\n`;
}
