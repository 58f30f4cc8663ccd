// Turns agent failures into layer answers: an errno name travels on, anything without one becomes EIO.
import type { Answer } from './layer-handler.ts';

export function errorAnswer(error: unknown, fallback = 'EIO'): Answer<never> {
  const code = (error as { code?: unknown } | null)?.code;
  return { kind: 'error', code: typeof code === 'string' && /^E[A-Z0-9_]+$/.test(code) ? code : fallback };
}

export async function remote<T>(work: () => Promise<T>, fallback?: string): Promise<Answer<T>> {
  try {
    return { kind: 'remote', value: await work() };
  } catch (error) {
    return errorAnswer(error, fallback);
  }
}
