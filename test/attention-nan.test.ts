// Attention propagates NaN as PyTorch's softmax does: a NaN score (from NaN in Q or K) makes its
// query's output NaN, on every backend and in every kernel path (fused, ragged scalar and AVX2
// widths). Only rows whose keys are all masked are defined, as zeros.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { backendNames, useBackend } from '../src/backends/index.js';
import { F, Tensor, kernels, noGrad } from '../src/tensor/index.js';

const seq = (n: number, scale = 0.1): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i + 1) * scale);

function onEachBackend(name: string, fn: () => void): void {
  for (const backend of backendNames()) {
    test(`${name} (${backend})`, () => {
      const prev = kernels().name;
      useBackend(backend);
      try {
        fn();
      } finally {
        useBackend(prev);
      }
    });
  }
}

const rowOf = (out: Float32Array, row: number, d: number): number[] => Array.from(out.subarray(row * d, (row + 1) * d));

onEachBackend('a NaN in Q makes that query row NaN, the others stay finite', () => {
  const d = 8;
  const qd = seq(2 * 3 * d);
  qd[1 * d + 2] = NaN; // head 0, query 1
  const q = Tensor.fromArray(qd, [1, 2, 3, d]);
  const k = Tensor.fromArray(seq(2 * 4 * d, 0.2), [1, 2, 4, d]);
  const v = Tensor.fromArray(seq(2 * 4 * d, 0.3), [1, 2, 4, d]);
  for (const causal of [false, true]) {
    const out = F.attention(q, k, v, { causal }).toFloat32Array();
    assert.ok(rowOf(out, 1, d).every(Number.isNaN), `causal ${causal}: the NaN query's output is NaN`);
    for (const r of [0, 2, 3, 4, 5]) assert.ok(rowOf(out, r, d).every(Number.isFinite), `causal ${causal}: row ${r} finite`);
  }
});

onEachBackend('a NaN in K reaches every query that sees it; an all-masked row is zeros', () => {
  const d = 4;
  const kd = seq(3 * d, 0.2);
  kd[2 * d] = NaN; // key 2
  const q = Tensor.fromArray(seq(3 * d), [1, 1, 3, d]);
  const k = Tensor.fromArray(kd, [1, 1, 3, d]);
  const v = Tensor.fromArray(seq(3 * d, 0.3), [1, 1, 3, d]);
  const causal = F.attention(q, k, v, { causal: true }).toFloat32Array();
  assert.ok(rowOf(causal, 0, d).every(Number.isFinite) && rowOf(causal, 1, d).every(Number.isFinite), 'queries before key 2 never see it');
  assert.ok(rowOf(causal, 2, d).every(Number.isNaN), 'query 2 sees the NaN key');
  // masking the NaN key out hides it (torch's masked_fill gives the same)
  const masked = F.attention(q, k, v, { keyMask: new Float32Array([1, 1, 0]) }).toFloat32Array();
  assert.ok(masked.every(Number.isFinite));
  const none = F.attention(q, k, v, { keyMask: new Float32Array([0, 0, 0]) }).toFloat32Array();
  assert.deepEqual(Array.from(none), new Array(3 * d).fill(0), 'all keys masked: zeros');
});

onEachBackend('NaN from the weights reaches the gradient too', () => {
  const d = 4;
  const qd = seq(2 * d);
  qd[0] = NaN;
  const q = Tensor.fromArray(qd, [1, 1, 2, d], true);
  const k = Tensor.fromArray(seq(2 * d, 0.2), [1, 1, 2, d], true);
  const v = Tensor.fromArray(seq(2 * d, 0.3), [1, 1, 2, d], true);
  F.sum(F.attention(q, k, v)).backward();
  assert.ok(Array.from(q.grad!.toFloat32Array()).slice(0, d).every(Number.isNaN), 'the NaN query row gets a NaN gradient');
  assert.ok(Array.from(v.grad!.toFloat32Array()).some(Number.isNaN), 'v is reached by the NaN probabilities');
});

onEachBackend('ragged attention: a NaN query gives NaN, whatever the head size', () => {
  // 8 and 64 take the AVX2 row kernel on the native backend; 6 the scalar one
  for (const d of [6, 8, 64]) {
    noGrad(() => {
      const qd = seq(3 * 2 * d);
      qd[(1 * 2 + 1) * d] = NaN; // token 1, head 1
      const q = Tensor.fromArray(qd, [3, 2, d]);
      const kv = Tensor.fromArray(seq(3 * d, 0.2), [3, 1, d]);
      const kc = Tensor.zeros([4, 1, d]);
      const vc = Tensor.zeros([4, 1, d]);
      const out = F.raggedAttention(q, kv, kv, [kc], [vc], Int32Array.from([3]), Int32Array.from([0]), 0.5).toFloat32Array();
      for (let row = 0; row < 6; row++) {
        const r = rowOf(out, row, d);
        if (row === 3) assert.ok(r.every(Number.isNaN), `d ${d}: the NaN query's row is NaN`);
        else assert.ok(r.every(Number.isFinite), `d ${d}: row ${row} finite`);
      }
      // a NaN in a cached key reaches every later token
      const kd = seq(2 * d, 0.2);
      kd[0] = NaN;
      const kc2 = Tensor.zeros([2, 1, d]);
      const out2 = F.raggedAttention(Tensor.fromArray(seq(2 * 2 * d), [2, 2, d]), Tensor.fromArray(kd, [2, 1, d]), Tensor.fromArray(seq(2 * d), [2, 1, d]),
        [kc2], [Tensor.zeros([2, 1, d])], Int32Array.from([2]), Int32Array.from([0]), 0.5).toFloat32Array();
      assert.ok(Array.from(out2).every(Number.isNaN), `d ${d}: a NaN key makes every query that sees it NaN`);
    });
  }
});
