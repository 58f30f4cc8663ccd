// Which of exec's options take a value is written four times: in commander's definitions (src/cli/commands/exec.ts),
// in EXEC_VALUE_OPTIONS for the entry's early read and launch plans, in bin/doppel (a shell script) and in the layer's
// plans (layer/src/plan.c); each read stops at the program's word, so a list that missed one would take that option's
// value for the program.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { Command } from 'commander';
import { defineExec } from '../../src/cli/commands/exec.ts';
import { EXEC_VALUE_OPTIONS, programWordAt } from '../../src/cli/exec/program-word.ts';

test('EXEC_VALUE_OPTIONS, bin/doppel and plan.c name exactly the options of exec that take a value', () => {
  const program = new Command('doppel');
  defineExec(program, async () => {});
  const exec = program.commands.find((command) => command.name() === 'exec')!;
  const valued = exec.options.filter((option) => option.required || option.optional).flatMap((option) => [option.short, option.long].filter((name): name is string => name !== undefined));
  assert.deepEqual([...EXEC_VALUE_OPTIONS].sort(), valued.sort());

  const script = readFileSync(new URL('../../bin/doppel', import.meta.url), 'utf8');
  const loop = script.slice(script.indexOf('if [ "$1" = exec ]; then'), script.indexOf('done\nfi'));
  const named = [...loop.matchAll(/^\s+((?:-[-a-z]+ \| )*-[-a-z]+)\) value=\w+ ;;$/gm)].flatMap((match) => match[1]!.split(' | '));
  assert.deepEqual(named.sort(), [...EXEC_VALUE_OPTIONS].sort());

  const plan = readFileSync(new URL('../../layer/src/plan.c', import.meta.url), 'utf8');
  const array = /value_options\[\] = \{([^}]*)\}/.exec(plan)?.[1] ?? '';
  assert.deepEqual([...array.matchAll(/"([^"]+)"/g)].map((match) => match[1]!).sort(), [...EXEC_VALUE_OPTIONS].sort());
});

test('the program\'s word: after exec\'s options and their values, or after --; none when nothing follows', () => {
  assert.equal(programWordAt(['exec', '-t', 'process/1', '-q', 'sh', '-c', 'x'], 1), 4);
  assert.equal(programWordAt(['exec', '--target=process/1', '--steal', 'node', '-t'], 1), 3);
  assert.equal(programWordAt(['exec', '-t', 'process/1', '--', '-weird-name', 'x'], 1), 4);
  assert.equal(programWordAt(['exec', '-t', 'process/1'], 1), -1);
  assert.equal(programWordAt(['exec', '-q', '--'], 1), -1);
});
