// Which of exec's options take a value is written three times: in commander's definitions (src/cli/commands/exec.ts),
// in EXEC_VALUE_OPTIONS for the entry's early read and in bin/doppel (a shell script) for its own; both reads stop at
// the program's word, so a list that missed one would take that option's value for the program.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { Command } from 'commander';
import { defineExec } from '../../src/cli/commands/exec.ts';
import { EXEC_VALUE_OPTIONS } from '../../src/platform/process/agent-spawn.ts';

test('EXEC_VALUE_OPTIONS and bin/doppel name exactly the options of exec that take a value', () => {
  const program = new Command('doppel');
  defineExec(program, async () => {});
  const exec = program.commands.find((command) => command.name() === 'exec')!;
  const valued = exec.options.filter((option) => option.required || option.optional).flatMap((option) => [option.short, option.long].filter((name): name is string => name !== undefined));
  assert.deepEqual([...EXEC_VALUE_OPTIONS].sort(), valued.sort());

  const script = readFileSync(new URL('../../bin/doppel', import.meta.url), 'utf8');
  const loop = script.slice(script.indexOf('if [ "$1" = exec ]; then'), script.indexOf('done\nfi'));
  const named = [...loop.matchAll(/^\s+((?:-[-a-z]+ \| )*-[-a-z]+)\) value=\w+ ;;$/gm)].flatMap((match) => match[1]!.split(' | '));
  assert.deepEqual(named.sort(), [...EXEC_VALUE_OPTIONS].sort());
});
