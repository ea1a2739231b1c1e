// Kernels for token-by-token decoding: attention that reads a preallocated KV cache in place
// (F.attention's kvLength; AttentionParams.kvStride), on both backends whatever VERA_BACKEND says.
// kvLength < capacity must give exactly what attention over the sliced, contiguous k/v gives, and
// the positions past kvLength (NaN here) must never be read.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { tsKernels } from '../src/backends/index.js';
import { loadAddon, nativeKernels } from '../src/backends/native/index.js';
import { Tensor, F, Rng, noGrad, kernels, setKernels } from '../src/tensor/index.js';
import type { AttentionParams, Kernels } from '../src/tensor/index.js';

const load = loadAddon();
const backends: [string, Kernels][] = [['ts', tsKernels]];
if (load.addon) backends.push(['native', nativeKernels(load.addon)]);

const rng = new Rng(20250117);
const randn = (n: number): Float32Array => rng.fillNormal(new Float32Array(n), 0, 1);

function withBackend<T>(k: Kernels, fn: () => T): T {
  const prev = kernels();
  setKernels(k);
  try {
    return fn();
  } finally {
    setKernels(prev);
  }
}

interface Case {
  batch: number; heads: number; kvHeads: number; headDim: number;
  capacity: number; kvLength: number; tq: number;
  causal: boolean; causalOffset?: number; mask?: boolean;
}

/** A cache (batch, kvHeads, capacity, d) whose first `len` positions are `valid`'s and the rest NaN. */
function cacheOf(c: Case, valid: Float32Array): Float32Array {
  const { batch, kvHeads, capacity, kvLength: len, headDim: d } = c;
  const out = new Float32Array(batch * kvHeads * capacity * d).fill(NaN);
  for (let h = 0; h < batch * kvHeads; h++) out.set(valid.subarray(h * len * d, (h + 1) * len * d), h * capacity * d);
  return out;
}

function inputs(c: Case): { q: Float32Array; k: Float32Array; v: Float32Array; mask: Float32Array | null } {
  const { batch, heads, kvHeads, headDim: d, kvLength: len, tq } = c;
  let mask: Float32Array | null = null;
  if (c.mask) {
    // batch 0 pads its first keys, batch 1 (if any) sees none, the rest see all
    mask = new Float32Array(batch * len).fill(1);
    mask.fill(0, 0, Math.min(3, len));
    if (batch > 1) mask.fill(0, len, 2 * len);
  }
  return { q: randn(batch * heads * tq * d), k: randn(batch * kvHeads * len * d), v: randn(batch * kvHeads * len * d), mask };
}

const cases: Case[] = [
  // one new token over a partly filled cache, grouped heads
  { batch: 2, heads: 4, kvHeads: 2, headDim: 8, capacity: 13, kvLength: 9, tq: 1, causal: true },
  // a chunk of new tokens (chunked prefill): causal offset kvLength − tq by default
  { batch: 1, heads: 3, kvHeads: 1, headDim: 5, capacity: 20, kvLength: 12, tq: 4, causal: true },
  // an explicit offset that leaves the first rows without keys (they give 0)
  { batch: 2, heads: 2, kvHeads: 2, headDim: 4, capacity: 10, kvLength: 6, tq: 6, causal: true, causalOffset: -1 },
  // key mask over the valid positions (batch, kvLength)
  { batch: 3, heads: 2, kvHeads: 1, headDim: 16, capacity: 40, kvLength: 33, tq: 2, causal: true, mask: true },
  { batch: 1, heads: 2, kvHeads: 2, headDim: 7, capacity: 9, kvLength: 5, tq: 3, causal: false },
  // full and empty caches
  { batch: 1, heads: 2, kvHeads: 1, headDim: 4, capacity: 6, kvLength: 6, tq: 2, causal: true },
  { batch: 2, heads: 2, kvHeads: 2, headDim: 4, capacity: 6, kvLength: 0, tq: 1, causal: false },
  // SmolLM-135M's attention shape, a long cache: the GEMMs take their few-row paths with tails
  { batch: 2, heads: 9, kvHeads: 3, headDim: 64, capacity: 300, kvLength: 257, tq: 1, causal: true },
  { batch: 1, heads: 9, kvHeads: 3, headDim: 64, capacity: 300, kvLength: 250, tq: 37, causal: true },
];

const label = (c: Case): string => JSON.stringify(c);

describe('attention over a preallocated KV cache (kvLength < capacity)', () => {
  test('equals attention over the sliced contiguous k/v, bit for bit, on every backend; NaN past kvLength never read', () => {
    for (const c of cases) {
      const { batch, heads, kvHeads, headDim: d, capacity, kvLength, tq } = c;
      const x = inputs(c);
      const kCache = cacheOf(c, x.k);
      const vCache = cacheOf(c, x.v);
      const opts = { causal: c.causal, causalOffset: c.causalOffset, keyMask: x.mask };
      const results: Float32Array[] = [];
      for (const [name, k] of backends) {
        withBackend(k, () => {
          const q = Tensor.fromArray(x.q, [batch, heads, tq, d]);
          const want = F.attention(q, Tensor.fromArray(x.k, [batch, kvHeads, kvLength, d]), Tensor.fromArray(x.v, [batch, kvHeads, kvLength, d]), opts).toFloat32Array();
          const got = F.attention(q, Tensor.fromArray(kCache, [batch, kvHeads, capacity, d]), Tensor.fromArray(vCache, [batch, kvHeads, capacity, d]), { ...opts, kvLength }).toFloat32Array();
          assert.ok(got.every(Number.isFinite), `${name}: NaN from past kvLength, ${label(c)}`);
          assert.deepEqual(got, want, `${name}: ${label(c)}`);
          results.push(got);
        });
      }
      // and the backends agree with each other
      for (const r of results.slice(1)) {
        for (let i = 0; i < r.length; i++) assert.ok(Math.abs(r[i] - results[0][i]) <= 2e-5 * (1 + Math.abs(results[0][i])), `${label(c)} [${i}]: ${r[i]} vs ${results[0][i]}`);
      }
    }
  });

  test('kernels: forward and backward with kvStride > tk agree between backends; gk/gv are 0 past tk', { skip: load.addon ? false : `native addon not built (${load.addon === null ? load.reason : ''})` }, () => {
    const native = backends[1][1];
    for (const c of cases.slice(0, 5)) {
      const { batch, heads, kvHeads, headDim: d, capacity, kvLength: tk, tq } = c;
      const x = inputs(c);
      // finite everywhere here: backward zero-fills the whole allocation, so compare all of it
      const kCache = randn(batch * kvHeads * capacity * d);
      const vCache = randn(batch * kvHeads * capacity * d);
      const p: AttentionParams = {
        batch, heads, kvHeads, tq, tk, headDim: d, scale: 1 / Math.sqrt(d), causal: c.causal,
        causalOffset: c.causalOffset ?? tk - tq, keyMask: x.mask, kvStride: capacity,
      };
      const qn = batch * heads * tq * d;
      const run = (k: Kernels): Float32Array[] => {
        const out = new Float32Array(qn);
        const lse = new Float32Array(batch * heads * tq);
        const gq = randn(qn).fill(7);
        const gk = new Float32Array(kCache.length).fill(7);
        const gv = new Float32Array(vCache.length).fill(7);
        const gOut = Float32Array.from(x.q, (v, i) => Math.sin(v + i));
        k.attention(x.q, kCache, vCache, p, out, lse);
        k.attentionBackward(x.q, kCache, vCache, out, lse, gOut, p, gq, gk, gv);
        return [out, lse, gq, gk, gv];
      };
      const ref = run(tsKernels);
      const got = run(native);
      ['out', 'lse', 'gq', 'gk', 'gv'].forEach((name, j) => {
        const a = got[j];
        const b = ref[j];
        for (let i = 0; i < a.length; i++) {
          if (!Number.isFinite(b[i])) assert.ok(Object.is(a[i], b[i]), `${name}[${i}]: ${a[i]} vs ${b[i]}, ${label(c)}`);
          else assert.ok(Math.abs(a[i] - b[i]) <= 2e-5 * (1 + Math.abs(b[i])), `${name}[${i}]: native ${a[i]} vs ts ${b[i]}, ${label(c)}`);
        }
      });
      for (const g of [got[3], got[4]]) {
        for (let h = 0; h < batch * kvHeads; h++) {
          assert.ok(g.subarray((h * capacity + tk) * d, (h + 1) * capacity * d).every((v) => v === 0), `gradient past tk, ${label(c)}`);
        }
      }
    }
  });

  test('F.attention checks kvLength and refuses to record gradients through a partial cache', () => {
    const q = Tensor.fromArray(randn(1 * 2 * 1 * 4), [1, 2, 1, 4]);
    const k = Tensor.fromArray(randn(1 * 1 * 6 * 4), [1, 1, 6, 4]);
    const v = Tensor.fromArray(randn(1 * 1 * 6 * 4), [1, 1, 6, 4]);
    assert.throws(() => F.attention(q, k, v, { kvLength: 7 }), /kvLength 7 must be an integer in \[0, 6\]/);
    assert.throws(() => F.attention(q, k, v, { kvLength: 2.5 }), /kvLength 2.5/);
    assert.throws(() => F.attention(q, k, v, { kvLength: 4, keyMask: new Float32Array(6).fill(1) }), /key mask of 6 for batch 1 × 4 keys/);
    assert.equal(F.attention(q, k, v, { kvLength: 4, keyMask: new Float32Array(4).fill(1) }).shape.join(','), '1,2,1,4');

    const qg = Tensor.fromArray(randn(8), [1, 2, 1, 4], true);
    assert.throws(() => F.attention(qg, k, v, { kvLength: 4 }), /kvLength 4 < capacity 6 is for inference/);
    // under noGrad nothing is recorded, so it is allowed
    const infer = noGrad(() => F.attention(qg, k, v, { kvLength: 4 }));
    assert.equal(infer.requiresGrad, false);
    // kvLength = capacity is plain attention, gradients included
    const kg = Tensor.fromArray(k.toFloat32Array(), [1, 1, 6, 4], true);
    F.sum(F.attention(qg, kg, v, { kvLength: 6, causal: true })).backward();
    const gWith = [qg.grad!.toFloat32Array(), kg.grad!.toFloat32Array()];
    const q2 = Tensor.fromArray(qg.toFloat32Array(), [1, 2, 1, 4], true);
    const k2 = Tensor.fromArray(k.toFloat32Array(), [1, 1, 6, 4], true);
    F.sum(F.attention(q2, k2, v, { causal: true })).backward();
    assert.deepEqual(gWith, [q2.grad!.toFloat32Array(), k2.grad!.toFloat32Array()]);
  });
});
