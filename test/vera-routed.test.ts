// F.veraRouted (one VeRA adapter per row over the shared A/B, for a multi-adapter inference batch)
// against F.veraBranch run with each row's own λd/λb, and F.scatterAddRows against a loop. Runs on
// whichever backend VERA_BACKEND selects (scripts/run-tests.mjs runs the suite once per backend);
// when the addon is built, the native kernel is also compared with the TypeScript one directly.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { tsKernels } from '../src/backends/index.js';
import { loadAddon, nativeKernels } from '../src/backends/native/index.js';
import { Tensor, F, Rng, noGrad, kernels } from '../src/tensor/index.js';
import type { Shape, VeraRoutedParams } from '../src/tensor/index.js';

const rng = new Rng(20240917);
const randn = (shape: Shape, std = 1): Tensor => {
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.fromArray(rng.fillNormal(new Float32Array(n), 0, std), shape);
};
const randu = (shape: Shape, lo: number, hi: number): Tensor => {
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.fromArray(Float32Array.from({ length: n }, () => rng.uniform(lo, hi)), shape);
};
/** Row s of a (slots, n) slab as its own tensor. */
const slabRow = (slab: Tensor, s: number): Tensor => {
  const n = slab.shape[1];
  return Tensor.fromArray(slab.toFloat32Array().slice(s * n, (s + 1) * n), [n]);
};

function assertClose(got: Float32Array, want: Float32Array, what: string, tol = 1e-5): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < got.length; i++) {
    assert.ok(Math.abs(got[i] - want[i]) <= tol * (1 + Math.abs(want[i])), `${what}[${i}]: ${got[i]} vs ${want[i]}`);
  }
}

interface Pair {
  A: Tensor; // (rank, maxIn)
  B: Tensor; // (maxOut, rank)
  lambdaD: Tensor; // (numSlots, rank)
  lambdaB: Tensor; // (numSlots, out)
}

function pair(rank: number, maxIn: number, maxOut: number, out: number, numSlots: number): Pair {
  return {
    A: randu([rank, maxIn], -1 / Math.sqrt(maxIn), 1 / Math.sqrt(maxIn)),
    B: randu([maxOut, rank], -1 / Math.sqrt(rank), 1 / Math.sqrt(rank)),
    lambdaD: randu([numSlots, rank], 0.2, 1.5),
    lambdaB: randn([numSlots, out]),
  };
}

/** veraBranch row by row: rows of slot s from one veraBranch call with λd[s], λb[s]; base (or 0) where s < 0. */
function reference(x: Tensor, p: Pair, slots: Int32Array, base: Float32Array | null): Float32Array {
  const inF = x.shape[x.ndim - 1];
  const out = p.lambdaB.shape[1];
  const rows = x.size / inF;
  const x2 = F.reshape(x, [rows, inF]);
  const want = base ? base.slice() : new Float32Array(rows * out);
  for (const s of new Set(slots)) {
    if (s < 0) continue;
    const y = F.veraBranch(x2, p.A, p.B, slabRow(p.lambdaD, s), slabRow(p.lambdaB, s)).toFloat32Array();
    for (let i = 0; i < rows; i++) {
      if (slots[i] !== s) continue;
      for (let o = 0; o < out; o++) want[i * out + o] += y[i * out + o];
    }
  }
  return want;
}

/** Checks veraRouted against the reference, overwriting and accumulating into a random base. */
function check(xShape: Shape, rank: number, maxIn: number, maxOut: number, out: number, numSlots: number, slots: Int32Array): void {
  const p = pair(rank, maxIn, maxOut, out, numSlots);
  const x = randn(xShape);
  const outShape = [...xShape.slice(0, -1), out];
  const what = `x ${JSON.stringify(xShape)}, r ${rank}, A (${rank}, ${maxIn}), B (${maxOut}, ${rank}), out ${out}`;

  const y = F.veraRouted(x, p.A, p.B, p.lambdaD, p.lambdaB, slots);
  assert.deepEqual(y.shape, outShape);
  assertClose(y.toFloat32Array(), reference(x, p, slots, null), `${what}, overwrite`);

  const base = randn(outShape);
  const baseData = base.toFloat32Array();
  const into = F.veraRouted(x, p.A, p.B, p.lambdaD, p.lambdaB, slots, base);
  assert.equal(into, base, 'returns `into` itself');
  const got = into.toFloat32Array();
  assertClose(got, reference(x, p, slots, baseData), `${what}, accumulate`);
  // rows with no adapter are left bit for bit
  for (let i = 0; i < slots.length; i++) {
    if (slots[i] >= 0) continue;
    for (let o = 0; o < out; o++) assert.ok(Object.is(got[i * out + o], baseData[i * out + o]), `row ${i} (slot ${slots[i]}) was touched`);
  }
}

const slotsOf = (n: number, numSlots: number, pNone = 0.25): Int32Array =>
  Int32Array.from({ length: n }, () => (rng.random() < pNone ? -1 : Math.floor(rng.uniform(0, numSlots))));

describe('F.veraRouted', () => {
  test('equals veraBranch with each row’s λd/λb: mixed slots, −1, repeats, in < maxIn, out < maxOut', () => {
    const slots = slotsOf(64, 4);
    slots[0] = -1;
    slots[1] = 3;
    slots[2] = 3;
    check([2, 32, 7], 5, 11, 13, 9, 4, slots);
  });

  test('rows = 1 (routed and not), 1-d x', () => {
    check([1, 7], 5, 11, 13, 9, 3, Int32Array.of(2));
    check([1, 7], 5, 11, 13, 9, 3, Int32Array.of(-1));
    check([7], 5, 11, 13, 9, 3, Int32Array.of(0));
  });

  test('every row routed, none routed, one slot for all', () => {
    check([64, 9], 6, 9, 10, 10, 5, slotsOf(64, 5, 0)); // in = maxIn, out = maxOut
    check([64, 9], 6, 12, 10, 8, 5, new Int32Array(64).fill(-1));
    check([4, 16, 9], 6, 12, 10, 8, 5, new Int32Array(64).fill(4));
  });

  test('sizes past the GEMM blocks and micro-tiles (in > 256, out not a multiple of 16, rank 33)', () => {
    check([64, 300], 33, 310, 50, 41, 7, slotsOf(64, 7));
  });

  test('out-of-range slots and bad shapes are refused', () => {
    const p = pair(4, 8, 6, 5, 3);
    const x = randn([3, 8]);
    assert.throws(() => F.veraRouted(x, p.A, p.B, p.lambdaD, p.lambdaB, Int32Array.of(0, 3, 1)), /slot 3 \(row 1\) out of range: the slabs hold 3/);
    assert.throws(() => F.veraRouted(x, p.A, p.B, p.lambdaD, p.lambdaB, Int32Array.of(0, 1)), /2 slots for 3 rows/);
    assert.throws(() => F.veraRouted(randn([3, 9]), p.A, p.B, p.lambdaD, p.lambdaB, Int32Array.of(0, 1, 2)), /does not fit/);
    assert.throws(() => F.veraRouted(x, p.A, p.B, randn([2, 4]), p.lambdaB, Int32Array.of(0, 1, 1)), /same slot count/);
    assert.throws(() => F.veraRouted(x, p.A, p.B, randn([3, 5]), p.lambdaB, Int32Array.of(0, 1, 1)), /λd slab \(slots, 4\)/);
    assert.throws(() => F.veraRouted(x, p.A, p.B, p.lambdaD, p.lambdaB, Int32Array.of(0, 1, 1), randn([3, 6])), /into is \[3, 6\]/);
    // the kernel itself refuses too (the native addon must never read past the slabs)
    const params: VeraRoutedParams = { rows: 3, inFeatures: 8, outFeatures: 5, rank: 4, lda: 8, numSlots: 3 };
    const out = Tensor.zeros([3, 5]);
    assert.throws(
      () => kernels().veraRoutedForward(x.storage, p.A.storage, p.B.storage, p.lambdaD.storage, p.lambdaB.storage, Int32Array.of(0, 7, 1), params, out.storage, false),
      (e: unknown) => e instanceof Error && /slot 7/.test(e.message),
    );
  });

  test('inference only: inputs that require grad are refused unless under noGrad', () => {
    const p = pair(4, 8, 6, 5, 2);
    const slots = Int32Array.of(0, -1, 1);
    const x = randn([3, 8]);
    const lb = new Tensor(p.lambdaB.storage, p.lambdaB.shape, true);
    assert.throws(() => F.veraRouted(x, p.A, p.B, p.lambdaD, lb, slots), /inference only, but lambdaBSlab requires grad/);
    const y = noGrad(() => F.veraRouted(x, p.A, p.B, p.lambdaD, lb, slots));
    assert.equal(y.requiresGrad, false);
    assertClose(y.toFloat32Array(), reference(x, p, slots, null), 'under noGrad');
  });
});

describe('F.scatterAddRows', () => {
  test('target[rows[i]] += src[i], repeated rows, in place', () => {
    const target = randn([10, 37]);
    const before = target.toFloat32Array();
    const rows = Int32Array.of(3, 0, 9, 3, 3, 7);
    const src = randn([rows.length, 37]);
    const s = src.toFloat32Array();
    const want = before.slice();
    for (let i = 0; i < rows.length; i++) for (let j = 0; j < 37; j++) want[rows[i] * 37 + j] += s[i * 37 + j];
    const r = F.scatterAddRows(target, rows, src);
    assert.equal(r, target);
    assertClose(target.toFloat32Array(), want, 'scatterAddRows', 1e-6);
    assert.deepEqual(F.scatterAddRows(target, new Int32Array(0), Tensor.zeros([0, 37])).shape, [10, 37]);
  });

  test('bad rows and shapes are refused', () => {
    const target = randn([4, 3]);
    assert.throws(() => F.scatterAddRows(target, Int32Array.of(0, 4), randn([2, 3])), /row 4 \(index 1\) out of range \[0, 4\)/);
    assert.throws(() => F.scatterAddRows(target, Int32Array.of(-1), randn([1, 3])), /out of range/);
    assert.throws(() => F.scatterAddRows(target, Int32Array.of(0, 1), randn([2, 4])), /need src \(2, 3\)/);
    assert.throws(() => F.scatterAddRows(new Tensor(target.storage, target.shape, true), Int32Array.of(0), randn([1, 3])), /inference only/);
  });
});

const load = loadAddon();
describe('native veraRoutedForward matches the TypeScript kernel', { skip: load.addon === null ? `native addon not built (${load.reason})` : false }, () => {
  test('overwrite and accumulate, mixed and full routing', () => {
    const native = nativeKernels(load.addon!);
    const r = new Rng(7);
    const f32 = (n: number, std = 1): Float32Array => r.fillNormal(new Float32Array(n), 0, std);
    for (const [rows, inF, lda, out, maxOut, rank, numSlots, pNone] of [
      [50, 13, 20, 19, 23, 7, 3, 0.3], [50, 13, 13, 19, 19, 7, 3, 0], [1, 5, 8, 3, 4, 2, 1, 0], [17, 260, 270, 33, 40, 16, 4, 0.5],
    ]) {
      // projections scaled as VeRA's (kaiming-uniform-like), so sums do not cancel far below their terms
      const x = f32(rows * inF), A = f32(rank * lda, 1 / Math.sqrt(inF)), B = f32(maxOut * rank, 1 / Math.sqrt(rank));
      const ld = f32(numSlots * rank), lb = f32(numSlots * out);
      const slots = Int32Array.from({ length: rows }, () => (r.random() < pNone ? -1 : Math.floor(r.uniform(0, numSlots))));
      const p: VeraRoutedParams = { rows, inFeatures: inF, outFeatures: out, rank, lda, numSlots };
      for (const accumulate of [false, true]) {
        const base = f32(rows * out);
        const want = base.slice();
        const got = base.slice();
        tsKernels.veraRoutedForward(x, A, B, ld, lb, slots, p, want, accumulate);
        native.veraRoutedForward(x, A, B, ld, lb, slots, p, got, accumulate);
        assertClose(got, want, `rows ${rows}, in ${inF}/${lda}, out ${out}/${maxOut}, r ${rank}, accumulate ${accumulate}`);
      }
    }
  });
});

describe('native veraRoutedForward: the B product and λb scaling', { skip: load.addon === null ? `native addon not built (${load.reason})` : false }, () => {
  test('gives the bits of its composition: x·Aᵀ, λd, one GEMM with B[:out]ᵀ, then y += λb·t', () => {
    const native = nativeKernels(load.addon!);
    const r = new Rng(11);
    const f32 = (n: number, std = 1): Float32Array => r.fillNormal(new Float32Array(n), 0, std);
    // 64 rows all routed (a decode step: λb is applied in the GEMM's store), some rows unrouted (a
    // separate λb pass), one row (the matrix-vector kernel's store), r past 768 (the kernel's k
    // slabs: λb only in the last), out not a multiple of the column groups; added to y and not
    for (const [rows, inF, lda, out, maxOut, rank, pNone] of [[64, 96, 120, 202, 210, 48, 0], [40, 64, 64, 77, 80, 33, 0.4], [3, 16, 16, 5, 8, 8, 0], [1, 40, 40, 21, 24, 17, 0], [8, 24, 24, 30, 32, 800, 0]]) {
      for (const accumulate of [true, false]) {
        const x = f32(rows * inF), A = f32(rank * lda, 1 / Math.sqrt(inF)), B = f32(maxOut * rank, 1 / Math.sqrt(rank));
        const numSlots = 5;
        const ld = f32(numSlots * rank), lb = f32(numSlots * out);
        const slots = Int32Array.from({ length: rows }, () => (r.random() < pNone ? -1 : Math.floor(r.uniform(0, numSlots))));
        const routed = [...slots.keys()].filter((i) => slots[i] >= 0);
        const m = routed.length;
        // the composition, kernel by kernel: ax = x·A[:, :in]ᵀ (A read in place, row stride lda)
        const ax = new Float32Array(rows * rank);
        const Ain = new Float32Array(rank * inF);
        for (let j = 0; j < rank; j++) Ain.set(A.subarray(j * lda, j * lda + inF), j * inF);
        native.matmul(x, Ain, ax, { batch: 1, m: rows, n: rank, k: inF, transA: false, transB: true, strideA: 0, strideB: 0, accumulate: false });
        const u = new Float32Array(m * rank);
        routed.forEach((i, k) => {
          for (let j = 0; j < rank; j++) u[k * rank + j] = Math.fround(ax[i * rank + j] * ld[slots[i] * rank + j]);
        });
        const t = new Float32Array(m * out);
        native.matmul(u, B.subarray(0, out * rank), t, { batch: 1, m, n: out, k: rank, transA: false, transB: true, strideA: 0, strideB: 0, accumulate: false });
        const base = f32(rows * out);
        const want = accumulate ? base.slice() : new Float32Array(rows * out);
        routed.forEach((i, k) => {
          for (let o = 0; o < out; o++) {
            const product = Math.fround(lb[slots[i] * out + o] * t[k * out + o]);
            want[i * out + o] = accumulate ? Math.fround(want[i * out + o] + product) : product;
          }
        });
        const got = base.slice();
        native.veraRoutedForward(x, A, B, ld, lb, slots, { rows, inFeatures: inF, outFeatures: out, rank, lda, numSlots }, got, accumulate);
        for (let e = 0; e < want.length; e++) assert.ok(Object.is(got[e], want[e]), `rows ${rows}, out ${out}, accumulate ${accumulate}: element ${e}: ${got[e]}, composed ${want[e]}`);
      }
    }
  });
});

test('veraRouted with a shared x·Aᵀ: layers reading one input (q, k, v) compute it once and give what each gives alone', () => {
  noGrad(() => {
    const rank = 6, inF = 10, rows = 7;
    const A = randn([rank, 12]), B = randn([20, rank]);
    const x = randn([rows, inF]);
    const slots = Int32Array.from([0, -1, 2, 1, 2, -1, 0]);
    const shared = { ax: Tensor.zeros([rows, rank]), ready: false };
    for (const out of [20, 8, 15]) {
      const lambdaD = randn([3, rank]), lambdaB = randn([3, out]);
      const alone = F.veraRouted(x, A, B, lambdaD, lambdaB, slots).toFloat32Array();
      const y = F.veraRouted(x, A, B, lambdaD, lambdaB, slots, undefined, shared).toFloat32Array();
      assertClose(y, alone, `out ${out}`);
      shared.ready = true;
      // the shared rows are x·A[:, :in]ᵀ, untouched by any layer's λd
      const xa = F.matmul(x, F.slice(A, 1, 0, inF), { transB: true }).toFloat32Array();
      assertClose(shared.ax.toFloat32Array(), xa, 'shared x·Aᵀ');
    }
    assert.throws(() => F.veraRouted(x, A, B, randn([3, rank]), randn([3, 5]), slots, undefined, { ax: Tensor.zeros([rows - 1, rank]), ready: true }), /shared x·Aᵀ/);
  });
});
