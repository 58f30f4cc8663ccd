// DoppelError keeps its code, hint and category.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DoppelError, isDoppelError } from '../../src/errors.ts';

test('DoppelError carries code, hint and category', () => {
  const error = new DoppelError('E_TEST', 'it failed', { hint: 'do this', category: 'config' });
  assert.equal(error.code, 'E_TEST');
  assert.equal(error.hint, 'do this');
  assert.equal(error.category, 'config');
  assert.ok(isDoppelError(error));
  assert.ok(!isDoppelError(new Error('x')));
});
