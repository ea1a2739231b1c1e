// The greedy choice every backend and the host share (argmaxOf, the argmaxRows kernel): the first
// maximum, NaNs skipped, 0 for a run with no number; the engine's greedy tokens come from the kernel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../src/backends/index.js';
import { argmaxOf, kernels } from '../src/tensor/index.js';

test('argmaxOf: first maximum, NaNs skipped, 0 without a number; argmaxRows on the active backend agrees', () => {
  const cases: [number[], number][] = [
    [[1, 3, 2, 3], 1],
    [[NaN, 1, 5, NaN, 5], 2],
    [[-Infinity, -Infinity, NaN], 0],
    [[NaN, NaN], 0],
    [[-2, -Infinity, -1.5, -7], 2],
    [[Infinity, 0, Infinity], 0],
    [[0], 0],
  ];
  for (const [row, want] of cases) assert.equal(argmaxOf(row), want, JSON.stringify(row));
  assert.equal(argmaxOf([9, 1, 4, 4, 2], 1, 3), 1, 'a window: indices from its start');
  const k = kernels();
  for (const [row, want] of cases) {
    const out = k.alloc(2);
    k.argmaxRows(k.fromArray(Float32Array.from([...row, ...row.map((v) => -v)])), 2, row.length, out);
    const got = k.read(out);
    assert.equal(got[0], want, `${k.name}: ${JSON.stringify(row)}`);
    assert.equal(got[1], argmaxOf(row.map((v) => -v)), `${k.name}: negated ${JSON.stringify(row)}`);
  }
});
