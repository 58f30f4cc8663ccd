// The layer built with AddressSanitizer and UBSan, and the environment that preloads it: what the sanitizer runs share.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const layerDir = fileURLToPath(new URL('../../layer/', import.meta.url));

/** Builds the sanitized layer; returns the environment for `doppel exec` to preload it (a report ends the program with 98 or 99). */
export function sanitizedEnv(): NodeJS.ProcessEnv {
  execFileSync('make', ['-C', layerDir, '--no-print-directory', '-s', 'asan']);
  const libasan = execFileSync('gcc', ['-print-file-name=libasan.so'], { encoding: 'utf8' }).trim();
  return {
    ...process.env,
    DOPPEL_LAYER_LIBRARY: `${layerDir}build/asan/libdoppel.so`,
    LD_PRELOAD: libasan,
    ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=0:exitcode=99',
    UBSAN_OPTIONS: 'halt_on_error=1:print_stacktrace=1:exitcode=98',
  };
}

export const sanitizerReport = /ERROR: AddressSanitizer|runtime error:/;
