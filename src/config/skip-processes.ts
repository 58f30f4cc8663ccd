// skip_processes and skip_build_tools (mirrord's): the process names in which the layer stays inactive, handed to
// the layer as one ':'-separated list; it compares them with each process's name and its executable's file name.
import { DoppelError } from '../errors.ts';
import type { ResolvedConfig } from './schema.ts';

/** mirrord's build tools, left alone by default so that a command line that builds and then runs pays nothing for the build. */
export const BUILD_TOOLS = ['as', 'cc', 'ld', 'go', 'air', 'asm', 'cc1', 'cgo', 'dlv', 'gcc', 'git', 'link', 'math', 'cargo', 'hpack', 'rustc', 'compile', 'collect2', 'cargo-watch', 'debugserver'];

export function skippedProcesses(config: Pick<ResolvedConfig, 'skip_processes' | 'skip_build_tools'>): string[] {
  for (const name of config.skip_processes) {
    if (name === '' || name.includes(':') || name.includes('/')) {
      throw new DoppelError('E_CONFIG_INVALID', `skip_processes: "${name}" is not a process name`, { category: 'config', hint: 'list names as a process is called, without a directory or ":", e.g. ["bash", "node"]' });
    }
  }
  return [...new Set([...config.skip_processes, ...(config.skip_build_tools ? BUILD_TOOLS : [])])];
}
