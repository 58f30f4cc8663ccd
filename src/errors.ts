// DoppelError: every expected failure carries a stable code, a one-line message and a hint; only the CLI's top level prints it.

export type ErrorCategory = 'usage' | 'config' | 'target' | 'permission' | 'agent' | 'protocol' | 'internal';

export interface DoppelErrorOptions {
  hint?: string;
  category?: ErrorCategory;
  cause?: unknown;
  /** The CLI's exit status for this failure (default 1). */
  exitCode?: number;
}

export class DoppelError extends Error {
  override readonly name = 'DoppelError';
  readonly code: string;
  readonly hint: string | undefined;
  readonly category: ErrorCategory;
  readonly exitCode: number;

  constructor(code: string, message: string, options: DoppelErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.hint = options.hint;
    this.category = options.category ?? 'internal';
    this.exitCode = options.exitCode ?? 1;
  }
}

export function isDoppelError(error: unknown): error is DoppelError {
  return error instanceof DoppelError;
}
