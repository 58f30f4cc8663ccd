// The CLI's first module: turns on Node's compile cache (about a fifth of every start) before the CLI's own modules load.
import module from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';

// Best effort: an unwritable cache directory only means no cache. Set here, not in the environment, so that the
// user's own program does not inherit it.
// A relative XDG_CACHE_HOME is ignored, as the XDG spec says (disk-cache.ts does the same).
const cacheHome = process.env.XDG_CACHE_HOME?.startsWith('/') ? process.env.XDG_CACHE_HOME : join(homedir(), '.cache');
module.enableCompileCache?.(join(cacheHome, 'doppel', 'node-compile-cache'));
const { enableTrace, trace, traceRequested } = await import('../trace.ts');
if (traceRequested(process.argv.slice(2), process.env)) enableTrace();
trace('cli: started (Node.js itself started at 0)');
// A process target named on the command line gets its agent now, while the CLI loads: see agent-spawn.ts.
(await import('../platform/process/agent-spawn.ts')).startEarlyAgent(process.argv.slice(2), process.env);
await import('./main.ts');
