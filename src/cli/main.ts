// Entry point of the doppel CLI: registers the commands and renders any error once, with the right exit status.
import { Command, Option } from 'commander';
import { readFileSync } from 'node:fs';
import process from 'node:process';
import { isDoppelError } from '../errors.ts';
import { register as registerDemo } from './commands/demo.ts';
import { register as registerExec } from './commands/exec.ts';
import { register as registerLs } from './commands/ls.ts';
import { register as registerSchema } from './commands/schema.ts';
import { register as registerVerifyConfig } from './commands/verify-config.ts';
import { trace } from '../trace.ts';
import { renderError } from './render-error.ts';

/** Runs the command line: the entry calls it once the early agent is on its way. */
export async function main(): Promise<void> {
  trace('cli: modules loaded');

  const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

  const program = new Command('doppel')
    .description('run a local program in the context of a remote target')
    .version(version)
    .option('--json-errors', 'print errors as one JSON object on stderr')
    // A usage error is one line and where to look, not the whole help.
    .showHelpAfterError('(add --help for the options)')
    .exitOverride();

  registerExec(program);
  registerLs(program);
  registerVerifyConfig(program);
  registerSchema(program);
  registerDemo(program);
  // Taken after a command too (`doppel ls --json-errors`), as before exec's options became positional; exec's own says so.
  for (const command of program.commands) if (!command.options.some((option) => option.long === '--json-errors')) command.addOption(new Option('--json-errors').hideHelp());

  try {
    await program.parseAsync(process.argv);
  } catch (error) {
    // commander has already printed its own usage errors, help and version.
    const code = (error as { code?: string }).code ?? '';
    if (code.startsWith('commander.')) {
      process.exitCode = (error as { exitCode?: number }).exitCode ?? 2;
      if (process.exitCode !== 0) process.exitCode = 2;
    } else {
      renderError(error, { json: [program, ...program.commands].some((command) => command.opts<{ jsonErrors?: boolean }>().jsonErrors === true) });
      process.exitCode = isDoppelError(error) ? error.exitCode : 70;
    }
  }
  // Leftover handles (a closing socket, a timer) must not hold the exit status back.
  process.exit();
}
