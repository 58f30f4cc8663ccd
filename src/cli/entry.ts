// The CLI's first module: starts a process target's agent before the commands and everything they use initialise.
// Our own code runs from its bundle's code cache (src/bundle-loader.ts); Node's compile cache serves the packages
// loaded later (the configuration's schema and parsers, the spinner).
import module from 'node:module';
import { join } from 'node:path';
import process from 'node:process';
import { cacheHome } from '../config/disk-cache.ts';
import { takeLaunchPlan } from './exec/launch-plan.ts';
import { startEarlyAgent } from '../platform/process/agent-spawn.ts';
import { takeShellAgent } from '../platform/process/shell-agent.ts';
import { enableTrace, trace, traceRequested } from '../trace.ts';

// Best effort: an unwritable cache directory only means no cache. Set here, not in the environment, so that the
// user's own program does not inherit it.
module.enableCompileCache?.(join(cacheHome(), 'doppel', 'node-compile-cache'));
if (traceRequested(process.argv.slice(2), process.env)) enableTrace();
trace('cli: started (Node.js itself started at 0)');
// A program bin/doppel's trampoline started from a launch plan is ours from here on (launch-plan.ts).
takeLaunchPlan(process.env);
// A process target named on the command line gets its agent now, while the CLI loads (agent-spawn.ts), unless
// bin/doppel started it already (shell-agent.ts).
if (!takeShellAgent(process.env)) startEarlyAgent(process.argv.slice(2), process.env);
void import('./main.ts').then(({ main }) => main());
