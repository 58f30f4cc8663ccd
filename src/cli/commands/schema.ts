// `doppel schema`: prints the config file's JSON Schema, for editors and validators.
import type { Command } from 'commander';
import process from 'node:process';

export function register(program: Command): void {
  program
    .command('schema')
    .description('print the JSON Schema of the config file')
    .action(async () => {
      // The schema library loads only for the commands that need it.
      const [{ z }, { configSchema }] = await Promise.all([import('zod'), import('../../config/schema.ts')]);
      process.stdout.write(`${JSON.stringify(z.toJSONSchema(configSchema, { io: 'input' }), null, 2)}\n`);
    });
}
