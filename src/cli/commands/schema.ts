// `doppel schema`: prints the config file's JSON Schema, for editors and validators.
import type { Command } from 'commander';
import process from 'node:process';
import { z } from 'zod';
import { configSchema } from '../../config/schema.ts';

export function register(program: Command): void {
  program
    .command('schema')
    .description('print the JSON Schema of the config file')
    .action(() => {
      process.stdout.write(`${JSON.stringify(z.toJSONSchema(configSchema, { io: 'input' }), null, 2)}\n`);
    });
}
