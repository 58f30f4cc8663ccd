// Renders any error that reaches the CLI's top level: expected failures as one line plus a hint, anything else as a bug.
import process from 'node:process';
import { isDoppelError } from '../errors.ts';

export function renderError(error: unknown, options: { json: boolean }): void {
  if (options.json) {
    const body = isDoppelError(error)
      ? { code: error.code, category: error.category, message: error.message, hint: error.hint }
      : { code: 'E_INTERNAL', category: 'internal', message: String((error as Error)?.message ?? error) };
    process.stderr.write(`${JSON.stringify({ error: body })}\n`);
    return;
  }
  if (isDoppelError(error)) {
    process.stderr.write(`doppel: ${error.message} [${error.code}]\n`);
    if (error.hint) process.stderr.write(`  hint: ${error.hint}\n`);
    return;
  }
  const detail = error instanceof Error ? (error.stack ?? error.message) : String(error);
  process.stderr.write(`doppel: internal error (a bug in doppel, please report it): ${detail}\n`);
}
