// `doppel verify-config [FILE]`: prints the resolved configuration, or one line per problem naming its key path.
import type { Command } from 'commander';
import process from 'node:process';
import { resolveConfig } from '../../config/load.ts';

export function register(program: Command): void {
  program
    .command('verify-config')
    .description('check a config file and print the configuration doppel would use (flags and DOPPEL_* variables not applied)')
    .argument('[file]', 'config file (default: .doppel/config.* or .mirrord/mirrord.json in the working directory)')
    .action(async (file: string | undefined) => {
      const { config, source } = await resolveConfig({ cwd: process.cwd(), configFile: file, env: {}, flags: {} });
      process.stdout.write(`${JSON.stringify({ source: source ?? null, config }, null, 2)}\n`);
    });
}
