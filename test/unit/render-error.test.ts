// An internal error's stack names our TypeScript lines, from the built files' source maps (bin/doppel runs without
// --enable-source-maps). Needs the build (npm run build:ts), as every test of the CLI does.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { mapStack } from '../../src/cli/render-error.ts';

const built = fileURLToPath(new URL('../../dist/cli/cli.cjs', import.meta.url));
const source = fileURLToPath(new URL('../../src/cli/entry.ts', import.meta.url));

/** 1-based line and column of `text`'s first occurrence in `file`. */
function position(file: string, text: string): { line: number; column: number } {
  const lines = readFileSync(file, 'utf8').split('\n');
  const line = lines.findIndex((l) => l.includes(text));
  assert.ok(line >= 0, `${text} is not in ${file}`);
  return { line: line + 1, column: lines[line]!.indexOf(text) + 1 };
}

test("a frame in the CLI's bundle is told at its line of src/cli/entry.ts; other frames stay as they are", () => {
  const at = position(built, 'enableCompileCache');
  const want = position(source, 'enableCompileCache');
  const stack = [
    'Error: boom',
    `    at file://${pathToFileURL(built).pathname}:${at.line}:${at.column}`,
    '    at process.processTicksAndRejections (node:internal/process/task_queues:105:5)',
    '    at file:///nowhere/missing.js:3:7',
  ].join('\n');
  const mapped = mapStack(stack).split('\n');
  assert.equal(mapped[1], `    at ${source}:${want.line}:${want.column}`);
  assert.equal(mapped[2], '    at process.processTicksAndRejections (node:internal/process/task_queues:105:5)');
  assert.equal(mapped[3], '    at file:///nowhere/missing.js:3:7');
});
