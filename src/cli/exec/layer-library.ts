// Finds the built layer and composes the environment variables that load it into the program and its children.
import { existsSync } from 'node:fs';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { DoppelError } from '../../errors.ts';

// DOPPEL_LAYER_LIBRARY lets the tests run a sanitizer build of the layer.
const layerPath = process.env.DOPPEL_LAYER_LIBRARY ?? fileURLToPath(new URL('../../../layer/build/libdoppel.so', import.meta.url));

export function findLayer(): string {
  if (!existsSync(layerPath)) {
    throw new DoppelError('E_LAYER_MISSING', `the layer library is not built (${layerPath} is missing)`, {
      category: 'usage',
      hint: 'run `npm install` (or `./dev install`) in the doppel directory; it builds the layer with the system C compiler',
    });
  }
  return layerPath;
}

/**
 * `hostname`: the target's, for the layer's gethostname and uname (feature.hostname); absent keeps the local one.
 * `unixStreams`: some Unix socket paths are the target's, so the layer asks about AF_UNIX connects.
 * `skipProcesses`: names of processes the layer leaves alone (skip_processes, build tools).
 */
export function layerEnvironment(layer: string, socketPath: string, existingPreload: string | undefined, session: { hostname?: string; unixStreams?: boolean; skipProcesses?: string[] } = {}): Record<string, string> {
  const preload = (existingPreload ?? '').split(/[: ]/).filter((entry) => entry !== '' && entry !== layer);
  return {
    LD_PRELOAD: [...preload, layer].join(':'),
    DOPPEL_LAYER_SOCKET: socketPath,
    // libuv would hand file I/O to io_uring, which no preloaded library can see.
    UV_USE_IO_URING: '0',
    ...(session.hostname === undefined ? {} : { DOPPEL_HOSTNAME: session.hostname }),
    ...(session.unixStreams ? { DOPPEL_UNIX_STREAMS: '1' } : {}),
    ...(session.skipProcesses?.length ? { DOPPEL_SKIP_PROCESSES: session.skipProcesses.join(':') } : {}),
  };
}
