// Finite-difference gradient checks for every differentiable op in src/tensor/ops.ts, plus the
// autograd engine's bookkeeping (frozen inputs, accumulation, noGrad, shared subgraphs).
//
// checkGrad compares the tape's gradient of L = Σ w·fn(inputs) (w random, fixed per check) with
// central differences of L computed on the host in double. Tensors are float32, so each check
// picks eps to balance truncation error (large eps) against float32 rounding noise (small eps),
// divides by the actually representable step (x+eps)−(x−eps), and keeps inputs of non-smooth
// ops (relu, abs, maximum, max-pool) well away from their kinks.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import '../src/backends/index.js';
import { Tensor, F, Rng, noGrad, isGradEnabled, kernels, setKernels } from '../src/tensor/index.js';
import type { Kernels, Shape } from '../src/tensor/index.js';

// ---------------------------------------------------------------- helpers

interface CheckOptions {
  /** Finite-difference half-step. */
  eps?: number;
  /** Bound on ‖analytic − numeric‖ / max(‖analytic‖, ‖numeric‖, floor). */
  rtol?: number;
  /** Norm floor for gradients that are legitimately ~0. */
  floor?: number;
  /** Seed of the random output weights. */
  seed?: number;
}

function indexOf(flat: number, shape: Shape): string {
  const idx: number[] = [];
  for (let d = shape.length - 1; d >= 0; d--) {
    idx.unshift(flat % shape[d]);
    flat = Math.floor(flat / shape[d]);
  }
  return `[${idx.join(', ')}]`;
}

/**
 * Checks d(Σ w·fn(...inputs))/d(input) for every input with requiresGrad, and that inputs
 * without it get no gradient. Inputs are leaves; fn must be deterministic (re-seed any Rng
 * inside it).
 */
function checkGrad(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: CheckOptions = {}): void {
  const eps = opts.eps ?? 3e-3;
  const rtol = opts.rtol ?? 1e-2;
  const floor = opts.floor ?? 1e-3;
  for (const x of inputs) x.zeroGrad();

  const out = fn(...inputs);
  assert.ok(out.requiresGrad, 'output does not require grad');
  const rng = new Rng(opts.seed ?? 4242);
  const w = new Float32Array(out.size);
  for (let i = 0; i < w.length; i++) w[i] = Math.fround(rng.uniform(-1, 1));
  for (const v of out.data()) assert.ok(Number.isFinite(v), 'non-finite forward output');
  out.backward(Tensor.fromArray(w, out.shape));

  const loss = (): number =>
    noGrad(() => {
      const y = fn(...inputs);
      const d = y.data();
      let s = 0;
      for (let i = 0; i < d.length; i++) s += w[i] * d[i];
      return s;
    });

  const k = kernels();
  const seen = new Set<Tensor>();
  inputs.forEach((x, which) => {
    if (!x.requiresGrad) {
      assert.equal(x.grad, null, `frozen input ${which} got a gradient`);
      return;
    }
    if (seen.has(x)) return;
    seen.add(x);
    assert.ok(x.grad !== null, `input ${which} got no gradient`);
    assert.deepEqual(x.grad.shape, x.shape, `input ${which}: gradient shape`);
    const ana = x.grad.toFloat32Array();
    const base = x.toFloat32Array();
    const num = new Float64Array(x.size);
    const one = new Float32Array(1);
    for (let j = 0; j < x.size; j++) {
      const v = base[j];
      one[0] = v + eps;
      const hi = one[0];
      k.write(x.storage, one, j);
      const lp = loss();
      one[0] = v - eps;
      const lo = one[0];
      k.write(x.storage, one, j);
      const lm = loss();
      one[0] = v;
      k.write(x.storage, one, j);
      num[j] = (lp - lm) / (hi - lo);
    }
    let d2 = 0;
    let n2 = 0;
    let a2 = 0;
    let worst = 0;
    let worstErr = -1;
    for (let j = 0; j < x.size; j++) {
      assert.ok(Number.isFinite(ana[j]), `input ${which}: non-finite gradient at ${indexOf(j, x.shape)}`);
      const d = ana[j] - num[j];
      d2 += d * d;
      n2 += num[j] * num[j];
      a2 += ana[j] * ana[j];
      if (Math.abs(d) > worstErr) {
        worstErr = Math.abs(d);
        worst = j;
      }
    }
    const rel = Math.sqrt(d2) / Math.max(Math.sqrt(n2), Math.sqrt(a2), floor);
    assert.ok(
      rel < rtol,
      `input ${which} ${shapeStr(x.shape)}: relative error ${rel.toExponential(3)} ≥ ${rtol} ` +
        `(‖analytic‖ ${Math.sqrt(a2).toExponential(3)}, ‖numeric‖ ${Math.sqrt(n2).toExponential(3)}); ` +
        `worst element ${indexOf(worst, x.shape)}: analytic ${ana[worst]}, numeric ${num[worst]}`,
    );
  });
}

const shapeStr = (s: Shape): string => `[${s.join(', ')}]`;
const sizeOf = (s: Shape): number => s.reduce((a, b) => a * b, 1);

let seedCounter = 1;
/** Normal(0, std²) leaf. */
function randn(shape: Shape, requiresGrad = true, std = 1): Tensor {
  const rng = new Rng(seedCounter++);
  return Tensor.fromArray(rng.fillNormal(new Float32Array(sizeOf(shape)), 0, std), shape, requiresGrad);
}
/** Uniform [lo, hi) leaf. */
function randu(shape: Shape, lo: number, hi: number, requiresGrad = true): Tensor {
  const rng = new Rng(seedCounter++);
  return Tensor.fromArray(rng.fillUniform(new Float32Array(sizeOf(shape)), lo, hi), shape, requiresGrad);
}
/** Values bounded away from zero: |v| ∈ [lo, hi), random sign. */
function awayFromZero(shape: Shape, lo: number, hi: number, requiresGrad = true): Tensor {
  const rng = new Rng(seedCounter++);
  const d = new Float32Array(sizeOf(shape));
  for (let i = 0; i < d.length; i++) d[i] = (rng.random() < 0.5 ? -1 : 1) * (lo + (hi - lo) * rng.random());
  return Tensor.fromArray(d, shape, requiresGrad);
}
/** Values on the grid offset + 0.1·ℤ (so two grids with different offsets never tie). */
function onGrid(shape: Shape, offset: number, requiresGrad = true): Tensor {
  const rng = new Rng(seedCounter++);
  const d = new Float32Array(sizeOf(shape));
  for (let i = 0; i < d.length; i++) d[i] = (rng.int(41) - 20) * 0.1 + offset;
  return Tensor.fromArray(d, shape, requiresGrad);
}
/** Distinct values spaced `gap` apart, shuffled (unique arg-max everywhere). */
function distinct(shape: Shape, gap: number, requiresGrad = true): Tensor {
  const n = sizeOf(shape);
  const rng = new Rng(seedCounter++);
  const idx = Int32Array.from({ length: n }, (_, i) => i);
  rng.shuffle(idx);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = (idx[i] - n / 2) * gap;
  return Tensor.fromArray(d, shape, requiresGrad);
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol * (1 + Math.abs(expected[i])), `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

/** Runs fn with a kernel table whose named methods are wrapped to record their arguments. */
function spyKernels<K extends keyof Kernels>(names: K[], fn: (calls: Map<K, unknown[][]>) => void): void {
  const orig = kernels();
  const calls = new Map<K, unknown[][]>(names.map((n) => [n, []]));
  const spy: Record<string, unknown> = { ...orig };
  for (const n of names) {
    const f = orig[n] as unknown as (...a: unknown[]) => unknown;
    spy[n as string] = (...args: unknown[]) => {
      calls.get(n)!.push(args);
      return f.apply(orig, args);
    };
  }
  setKernels(spy as unknown as Kernels);
  try {
    fn(calls);
  } finally {
    setKernels(orig);
  }
}

// ---------------------------------------------------------------- self-test of the checker

describe('checkGrad itself', () => {
  test('rejects a wrong gradient', () => {
    // d/dx of this op claims 2·g instead of g: the checker must notice.
    const wrong = (x: Tensor): Tensor => {
      const out = F.affine(x.detach(), 1, 0);
      out.requiresGrad = true;
      out.gradFn = { name: 'wrong', inputs: [x], backward: (g) => [F.scale(g, 2)] };
      return out;
    };
    assert.throws(() => checkGrad(wrong, [randn([3, 4])]), /relative error/);
  });
  test('rejects a gradient off by 1% of its norm in one element', () => {
    const x = randn([10]);
    const wrong = (t: Tensor): Tensor => {
      const out = F.affine(t.detach(), 3, 0);
      out.requiresGrad = true;
      out.gradFn = {
        name: 'wrong',
        inputs: [t],
        backward: (g) => {
          const d = F.scale(g, 3).toFloat32Array();
          d[4] += 0.05 * Math.sqrt(d.reduce((s, v) => s + v * v, 0));
          return [Tensor.fromArray(d, t.shape)];
        },
      };
      return out;
    };
    assert.throws(() => checkGrad(wrong, [x], { eps: 1e-2 }), /worst element \[4\]/);
  });
});

// ---------------------------------------------------------------- layout

describe('gradcheck: layout ops', () => {
  test('reshape (with -1)', () => {
    checkGrad((x) => F.mul(F.reshape(x, [3, -1]), F.reshape(x, [3, 8])), [randn([2, 3, 4])], { eps: 1e-2 });
    checkGrad((x) => F.reshape(x, [4, 6]), [randn([2, 3, 4])], { eps: 1e-2 });
  });
  test('permute', () => {
    checkGrad((x) => F.permute(x, [2, 0, 1]), [randn([2, 3, 4])], { eps: 1e-2 });
    checkGrad((x) => F.permute(x, [1, 3, 0, 2]), [randn([2, 3, 2, 4])], { eps: 1e-2 });
  });
  test('transpose', () => {
    checkGrad((x) => F.transpose(x), [randn([2, 3, 4])], { eps: 1e-2 });
    checkGrad((x) => F.transpose(x, 0, 2), [randn([2, 3, 4])], { eps: 1e-2 });
  });
  test('slice on each axis', () => {
    checkGrad((x) => F.slice(x, 0, 1, 2), [randn([3, 4, 5])], { eps: 1e-2 });
    checkGrad((x) => F.slice(x, 1, 1, 3), [randn([3, 4, 5])], { eps: 1e-2 });
    checkGrad((x) => F.slice(x, -1, 2, 5), [randn([3, 4, 5])], { eps: 1e-2 });
    // overlapping slices of one tensor: gradients sum
    checkGrad((x) => F.mul(F.slice(x, 1, 0, 3), F.slice(x, 1, 1, 4)), [randn([3, 4, 5])], { eps: 1e-2 });
  });
  test('expand (leading, middle and scalar broadcasts)', () => {
    checkGrad((x) => F.expand(x, [2, 3, 4]), [randn([3, 4])], { eps: 1e-2 });
    checkGrad((x) => F.expand(x, [2, 3, 4]), [randn([2, 1, 4])], { eps: 1e-2 });
    checkGrad((x) => F.expand(x, [2, 3, 4]), [randn([3, 1])], { eps: 1e-2 });
    checkGrad((x) => F.expand(x, [2, 3]), [randn([])], { eps: 1e-2 });
  });
  test('concat along each axis, with a frozen part', () => {
    checkGrad((a, b) => F.concat([a, b], 0), [randn([2, 3]), randn([4, 3])], { eps: 1e-2 });
    checkGrad((a, b, c) => F.concat([a, b, c], 1), [randn([2, 1, 3]), randn([2, 2, 3], false), randn([2, 3, 3])], { eps: 1e-2 });
    checkGrad((a, b) => F.concat([a, b, a], -1), [randn([2, 3, 2]), randn([2, 3, 1])], { eps: 1e-2 });
  });
});

// ---------------------------------------------------------------- elementwise

const broadcastCases: [string, Shape, Shape][] = [
  ['same shape', [2, 3, 4], [2, 3, 4]],
  ['scalar b', [2, 3], []],
  ['scalar a', [], [2, 3]],
  ['one-element b', [2, 3], [1]],
  ['leading-dim broadcast of b', [2, 3, 4], [3, 4]],
  ['leading-dim broadcast of a', [4], [2, 3, 4]],
  ['middle-dim size-1 a', [2, 1, 4], [2, 3, 4]],
  ['middle-dim size-1 b', [2, 3, 4], [2, 1, 4]],
  ['both broadcast', [2, 1, 4], [3, 1]],
  ['size-1 leading dim', [1, 3, 4], [2, 1, 4]],
];

describe('gradcheck: binary ops with broadcasting', () => {
  for (const [name, sa, sb] of broadcastCases) {
    test(`add/sub/mul/div/maximum: ${name} ${shapeStr(sa)} ${shapeStr(sb)}`, () => {
      checkGrad(F.add, [randn(sa), randn(sb)], { eps: 1e-2 });
      checkGrad(F.sub, [randn(sa), randn(sb)], { eps: 1e-2 });
      checkGrad(F.mul, [randn(sa), randn(sb)], { eps: 1e-2 });
      checkGrad(F.div, [randn(sa), awayFromZero(sb, 0.5, 2)], { eps: 1e-3 });
      checkGrad(F.maximum, [onGrid(sa, 0.05), onGrid(sb, 0)], { eps: 1e-3 });
      // one operand frozen
      checkGrad(F.div, [randn(sa, false), awayFromZero(sb, 0.5, 2)], { eps: 1e-3 });
      checkGrad(F.mul, [randn(sa), randn(sb, false)], { eps: 1e-2 });
    });
  }
});

describe('gradcheck: scalar-parameter ops', () => {
  test('affine / scale / addScalar', () => {
    checkGrad((x) => F.affine(x, -1.5, 0.25), [randn([3, 4])], { eps: 1e-2 });
    checkGrad((x) => F.scale(x, 3), [randn([3, 4])], { eps: 1e-2 });
    checkGrad((x) => F.mul(F.addScalar(x, 2), x), [randn([3, 4])], { eps: 1e-2 });
  });
  for (const p of [2, 3, -1.5, 0.5, 2.5]) {
    test(`pow ${p}`, () => checkGrad((x) => F.pow(x, p), [randu([3, 4], 0.5, 2)], { eps: 1e-3 }));
  }
  test('pow 3 of negative inputs', () => checkGrad((x) => F.pow(x, 3), [randn([3, 4])], { eps: 1e-3 }));
});

describe('gradcheck: unary ops', () => {
  const cases: [string, (x: Tensor) => Tensor, () => Tensor][] = [
    ['neg', F.neg, () => randn([3, 5])],
    ['exp', F.exp, () => randn([3, 5])],
    ['log', F.log, () => randu([3, 5], 0.3, 3)],
    ['tanh', F.tanh, () => randn([3, 5], true, 1.5)],
    ['sqrt', F.sqrt, () => randu([3, 5], 0.3, 3)],
    ['rsqrt', F.rsqrt, () => randu([3, 5], 0.3, 3)],
    ['sigmoid', F.sigmoid, () => randn([3, 5], true, 2)],
    ['abs', F.abs, () => awayFromZero([3, 5], 0.05, 2)],
    ['square', F.square, () => randn([3, 5])],
    ['relu', F.relu, () => awayFromZero([3, 5], 0.05, 2)],
    ['silu', F.silu, () => randn([3, 5], true, 2)],
    ['gelu tanh', (x) => F.gelu(x, 'tanh'), () => randn([3, 5], true, 2)],
    ['gelu erf', (x) => F.gelu(x, 'erf'), () => randn([3, 5], true, 2)],
    ['gelu default (erf)', (x) => F.gelu(x), () => randn([3, 5], true, 2)],
  ];
  for (const [name, fn, make] of cases) test(name, () => checkGrad(fn, [make()], { eps: 1e-3 }));
  test('gelu default is the erf form', () => {
    const x = randn([7], false, 2);
    assert.deepEqual(F.gelu(x).toFloat32Array(), F.gelu(x, 'erf').toFloat32Array());
  });
});

// ---------------------------------------------------------------- reductions

describe('gradcheck: reductions', () => {
  const axesCases: [number[] | undefined, boolean][] = [
    [undefined, false],
    [undefined, true],
    [[0], false],
    [[1], false],
    [[2], true],
    [[-1], false],
    [[0, 1], false],
    [[1, 2], true],
    [[0, 2], false], // non-contiguous
    [[0, 2], true],
    [[2, 0], false], // unsorted
    [[0, 1, 2], false],
  ];
  for (const [axes, keep] of axesCases) {
    test(`sum and mean over ${axes === undefined ? 'all' : `[${axes}]`}${keep ? ' keepDims' : ''}`, () => {
      const x = randn([2, 3, 4]);
      checkGrad((t) => F.sum(t, axes, keep), [x], { eps: 1e-2 });
      checkGrad((t) => F.mean(t, axes, keep), [x], { eps: 1e-2 });
      // nonlinear downstream so the reduced gradient is not constant
      checkGrad((t) => F.square(F.sum(t, axes, keep)), [x], { eps: 1e-3 });
    });
  }
  test('sum of a 4-d tensor over non-contiguous axes [1, 3]', () => {
    checkGrad((t) => F.square(F.sum(t, [1, 3])), [randn([2, 3, 2, 3])], { eps: 1e-3 });
  });
  test('scalar loss backward without gradOut', () => {
    const x = randn([2, 3]);
    F.sum(F.square(x)).backward();
    assertClose(x.grad!.toFloat32Array(), Float32Array.from(x.toFloat32Array(), (v) => 2 * v), 1e-6, 'grad');
  });
});

// ---------------------------------------------------------------- matmul / linear

/** Shape of an operand stored transposed when `t`. */
const maybeT = (s: number[], t: boolean): number[] => (t ? [...s.slice(0, -2), s[s.length - 1], s[s.length - 2]] : s);

describe('gradcheck: matmul', () => {
  const configs: [string, number[], number[]][] = [
    ['2-D', [3, 4], [4, 5]],
    ['batched', [2, 3, 4], [2, 4, 5]],
    ['batched a, 2-D b', [2, 3, 4], [4, 5]],
    ['4-d a, 2-D b', [2, 2, 3, 4], [4, 5]],
    ['2-D a, batched b', [3, 4], [2, 4, 5]],
    ['broadcast batch [2,1] × [3]', [2, 1, 3, 4], [3, 4, 5]],
    ['broadcast batch [1] × [2]', [1, 3, 4], [2, 4, 5]],
    ['broadcast batch [2,1] × [1,3]', [2, 1, 3, 4], [1, 3, 4, 5]],
  ];
  for (const [name, sa, sb] of configs) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        test(`${name}${transA ? ' transA' : ''}${transB ? ' transB' : ''}`, () => {
          const a = randn(maybeT(sa, transA));
          const b = randn(maybeT(sb, transB));
          const out = F.matmul(a, b, { transA, transB });
          const m = sa[sa.length - 2];
          const n = sb[sb.length - 1];
          assert.deepEqual(out.shape.slice(-2), [m, n]);
          checkGrad((x, y) => F.matmul(x, y, { transA, transB }), [a, b], { eps: 1e-2 });
        });
      }
    }
  }
  test('matches an explicit transpose', () => {
    const a = randn([2, 4, 3], false);
    const b = randn([2, 5, 4], false);
    const fused = F.matmul(a, b, { transA: true, transB: true }).toFloat32Array();
    const explicit = F.matmul(F.transpose(a), F.transpose(b)).toFloat32Array();
    assertClose(fused, explicit, 1e-5, 'matmul');
  });
  test('frozen a or frozen b', () => {
    checkGrad((x, y) => F.matmul(x, y), [randn([2, 3, 4], false), randn([4, 5])], { eps: 1e-2 });
    checkGrad((x, y) => F.matmul(x, y, { transB: true }), [randn([2, 3, 4]), randn([5, 4], false)], { eps: 1e-2 });
    checkGrad((x, y) => F.matmul(x, y, { transA: true }), [randn([4, 3], false), randn([2, 4, 5])], { eps: 1e-2 });
  });
});

describe('gradcheck: fused VeRA branch', () => {
  // shared projections larger than the layer: the op must read A[:, :in] and B[:out, :] in place
  const unfused = (x: Tensor, A: Tensor, B: Tensor, d: Tensor, b: Tensor): Tensor => {
    const ax = F.matmul(x, F.slice(A, 1, 0, x.shape[x.ndim - 1]), { transB: true });
    return F.mul(F.matmul(F.mul(ax, d), F.slice(B, 0, 0, b.size), { transB: true }), b);
  };
  for (const [name, xShape] of [['2-D x', [5, 7]], ['3-D x', [2, 3, 7]]] as [string, number[]][]) {
    test(`${name}: gradients of x, λd, λb`, () => {
      const A = randn([4, 9], false);
      const B = randn([6, 4], false);
      checkGrad((x, d, b) => F.veraBranch(x, A, B, d, b), [randn(xShape), randn([4]), randn([5])], { eps: 1e-2 });
    });
    test(`${name}: matches the unfused matmul/mul path`, () => {
      const [A, B, x, d, b] = [randn([4, 9], false), randn([6, 4], false), randn(xShape), randn([4]), randn([5])];
      const fused = F.veraBranch(x, A, B, d, b);
      const ref = unfused(x, A, B, d, b);
      assertClose(fused.toFloat32Array(), ref.toFloat32Array(), 1e-5, 'y');
      const w = randn(ref.shape, false);
      F.sum(F.mul(fused, w)).backward();
      const grads = [x, d, b].map((t) => t.grad!.toFloat32Array());
      for (const t of [x, d, b]) t.zeroGrad();
      F.sum(F.mul(ref, w)).backward();
      [x, d, b].forEach((t, i) => assertClose(grads[i], t.grad!.toFloat32Array(), 1e-5, `grad ${i}`));
    });
  }
  test('frozen λd or x', () => {
    const A = randn([3, 6], false);
    const B = randn([5, 3], false);
    checkGrad((x, d, b) => F.veraBranch(x, A, B, d, b), [randn([4, 6], false), randn([3], false), randn([5])], { eps: 1e-2 });
    checkGrad((x, d, b) => F.veraBranch(x, A, B, d, b), [randn([4, 6]), randn([3]), randn([5], false)], { eps: 1e-2 });
  });
  test('rejects trainable projections and layers larger than them', () => {
    assert.throws(() => F.veraBranch(randn([2, 6]), randn([3, 6]), randn([5, 3], false), randn([3]), randn([5])), /frozen/);
    assert.throws(() => F.veraBranch(randn([2, 7]), randn([3, 6], false), randn([5, 3], false), randn([3]), randn([5])), /does not fit/);
  });
});

describe('gradcheck: linear', () => {
  test('weight (out, in) with bias', () => {
    checkGrad((x, w, b) => F.linear(x, w, b), [randn([2, 3, 4]), randn([5, 4]), randn([5])], { eps: 1e-2 });
  });
  test('weight (in, out) (Conv1D layout) with bias', () => {
    checkGrad((x, w, b) => F.linear(x, w, b, true), [randn([2, 3, 4]), randn([4, 5]), randn([5])], { eps: 1e-2 });
  });
  test('no bias, frozen weight', () => {
    checkGrad((x, w) => F.linear(x, w, null), [randn([3, 4]), randn([5, 4], false)], { eps: 1e-2 });
    checkGrad((x, w) => F.linear(x, w, null, true), [randn([2, 3, 4]), randn([4, 5])], { eps: 1e-2 });
  });
  test('both layouts agree', () => {
    const x = randn([2, 3, 4], false);
    const w = randn([5, 4], false);
    const b = randn([5], false);
    assertClose(F.linear(x, w, b).toFloat32Array(), F.linear(x, F.transpose(w), b, true).toFloat32Array(), 1e-6, 'linear');
  });
});

// ---------------------------------------------------------------- row-wise ops

describe('gradcheck: softmax family', () => {
  test('softmax', () => {
    checkGrad(F.softmax, [randn([3, 6], true, 2)]);
    checkGrad(F.softmax, [randn([2, 2, 5], true, 2)]);
  });
  test('logSoftmax', () => {
    checkGrad(F.logSoftmax, [randn([3, 6], true, 2)]);
    checkGrad(F.logSoftmax, [randn([2, 2, 5], true, 2)]);
  });
  const targets = Int32Array.from([0, 4, -100, 2, 1, -100]);
  for (const reduction of ['mean', 'sum', 'none'] as const) {
    test(`crossEntropy reduction=${reduction}, ignore index -100`, () => {
      const logits = randn([2, 3, 5], true, 2);
      checkGrad((x) => F.crossEntropy(x, targets, { reduction }), [logits]);
      // ignored rows: zero gradient
      const g = logits.grad!.toFloat32Array();
      for (const row of [2, 5]) for (let j = 0; j < 5; j++) assert.equal(g[row * 5 + j], 0);
    });
  }
  test('crossEntropy with a custom ignore index', () => {
    const t = Int32Array.from([0, 1, 3, 1]);
    const logits = randn([4, 5], true, 2);
    checkGrad((x) => F.crossEntropy(x, t, { ignoreIndex: 1 }), [logits]);
    const g = logits.grad!.toFloat32Array();
    for (const row of [1, 3]) for (let j = 0; j < 5; j++) assert.equal(g[row * 5 + j], 0);
    // mean is over the counted rows only
    const ref = F.crossEntropy(logits, t, { ignoreIndex: 1, reduction: 'sum' }).item() / 2;
    assert.ok(Math.abs(F.crossEntropy(logits, t, { ignoreIndex: 1 }).item() - ref) < 1e-5);
  });
  test('crossEntropy equals -logSoftmax at the target', () => {
    const logits = randn([3, 4], false, 2);
    const t = Int32Array.from([3, 0, 2]);
    const ls = F.logSoftmax(logits).toFloat32Array();
    const none = F.crossEntropy(logits, t, { reduction: 'none' }).toFloat32Array();
    for (let r = 0; r < 3; r++) assert.ok(Math.abs(none[r] + ls[r * 4 + t[r]]) < 1e-5);
  });
});

describe('gradcheck: normalization', () => {
  for (const [w, b] of [[true, true], [true, false], [false, true], [false, false]] as const) {
    test(`layerNorm ${w ? 'with' : 'without'} weight, ${b ? 'with' : 'without'} bias`, () => {
      const inputs = [randn([2, 3, 6])];
      if (w) inputs.push(randu([6], 0.5, 1.5));
      if (b) inputs.push(randn([6]));
      checkGrad((x, ...rest) => F.layerNorm(x, w ? rest[0] : null, b ? rest[w ? 1 : 0] : null), inputs);
    });
  }
  test('layerNorm with frozen x, trainable weight and bias', () => {
    checkGrad((x, w, b) => F.layerNorm(x, w, b), [randn([4, 5], false), randn([5]), randn([5])]);
  });
  test('rmsNorm with weight', () => {
    checkGrad((x, w) => F.rmsNorm(x, w), [randn([2, 3, 6]), randu([6], 0.5, 1.5)]);
  });
  test('rmsNorm without weight', () => {
    checkGrad((x) => F.rmsNorm(x, null), [randn([3, 6])]);
  });
  test('rmsNorm with frozen weight', () => {
    checkGrad((x, w) => F.rmsNorm(x, w), [randn([3, 6]), randu([6], 0.5, 1.5, false)]);
  });
});

// ---------------------------------------------------------------- lookups, dropout

describe('gradcheck: embedding and dropout', () => {
  test('embedding with repeated ids', () => {
    const ids = Int32Array.from([1, 3, 1, 5, 1, 0]);
    const weight = randn([6, 4]);
    checkGrad((w) => F.embedding(w, ids, [2, 3]), [weight], { eps: 1e-2 });
    checkGrad((w) => F.square(F.embedding(w, ids)), [weight], { eps: 1e-3 });
    // an unused row gets exactly zero
    weight.zeroGrad();
    F.sum(F.embedding(weight, ids)).backward();
    const g = weight.grad!.toFloat32Array();
    for (let j = 0; j < 4; j++) {
      assert.equal(g[2 * 4 + j], 0);
      assert.equal(g[4 * 4 + j], 0);
      assert.equal(g[1 * 4 + j], 3, 'row 1 is used three times');
    }
  });
  test('dropout with a seeded Rng: gradient equals the mask', () => {
    const p = 0.3;
    const x = randn([4, 25]);
    const out = F.dropout(x, p, new Rng(99));
    out.backward(Tensor.ones(out.shape));
    const g = x.grad!.toFloat32Array();
    const o = out.toFloat32Array();
    const xd = x.toFloat32Array();
    const keep = 1 / (1 - p);
    let dropped = 0;
    for (let i = 0; i < g.length; i++) {
      assert.ok(g[i] === 0 || Math.abs(g[i] - keep) < 1e-6, `mask value ${g[i]}`);
      if (g[i] === 0) dropped++;
      assert.ok(Math.abs(o[i] - xd[i] * g[i]) < 1e-6, 'out = x · mask');
    }
    assert.ok(dropped > 10 && dropped < 50, `dropped ${dropped} of 100 at p=0.3`);
    // the same seed draws the same mask
    const again = F.dropout(x.detach(), p, new Rng(99)).toFloat32Array();
    assert.deepEqual(again, o);
    checkGrad((t) => F.dropout(t, p, new Rng(99)), [x], { eps: 1e-2 });
  });
  test('dropout is the identity when not training or p = 0', () => {
    const x = randn([5]);
    assert.equal(F.dropout(x, 0.5, new Rng(1), false), x);
    assert.equal(F.dropout(x, 0, new Rng(1)), x);
  });
});

// ---------------------------------------------------------------- attention

describe('gradcheck: attention', () => {
  test('causal', () => {
    checkGrad((q, k, v) => F.attention(q, k, v, { causal: true }), [randn([2, 2, 5, 3]), randn([2, 2, 5, 3]), randn([2, 2, 5, 3])]);
  });
  test('non-causal with a key mask', () => {
    const keyMask = Float32Array.from([1, 1, 1, 1, 1, 1, 0, 1, 1, 0]);
    const q = randn([2, 2, 4, 3]);
    const k = randn([2, 2, 5, 3]);
    const v = randn([2, 2, 5, 3]);
    checkGrad((a, b, c) => F.attention(a, b, c, { keyMask }), [q, k, v]);
    // masked keys and values get exactly zero gradient
    for (const t of [k, v]) {
      const g = t.grad!.toFloat32Array();
      for (let h = 0; h < 2; h++) {
        for (const j of [1, 4]) for (let c = 0; c < 3; c++) assert.equal(g[((1 * 2 + h) * 5 + j) * 3 + c], 0);
      }
    }
  });
  test('causal with a key mask and a custom scale', () => {
    const keyMask = Float32Array.from([0, 1, 1, 1, 1, 1, 1, 0]);
    checkGrad((q, k, v) => F.attention(q, k, v, { causal: true, keyMask, scale: 0.7 }), [randn([2, 2, 4, 3]), randn([2, 2, 4, 3]), randn([2, 2, 4, 3])]);
  });
  test('grouped-query: kvHeads < heads', () => {
    checkGrad((q, k, v) => F.attention(q, k, v, { causal: true }), [randn([2, 4, 4, 3]), randn([2, 2, 4, 3]), randn([2, 2, 4, 3])]);
    checkGrad((q, k, v) => F.attention(q, k, v), [randn([1, 6, 3, 2]), randn([1, 2, 5, 2]), randn([1, 2, 5, 2])]);
  });
  test('grouped-query equals repeated kv heads', () => {
    const q = randn([1, 4, 3, 2], false);
    const k = randn([1, 2, 3, 2], false);
    const v = randn([1, 2, 3, 2], false);
    const rep = (t: Tensor): Tensor => F.reshape(F.expand(F.reshape(t, [1, 2, 1, 3, 2]), [1, 2, 2, 3, 2]), [1, 4, 3, 2]);
    assertClose(F.attention(q, k, v, { causal: true }).toFloat32Array(), F.attention(q, rep(k), rep(v), { causal: true }).toFloat32Array(), 1e-6, 'gqa');
  });
  test('tq < tk, causal with the default offset (tk - tq)', () => {
    checkGrad((q, k, v) => F.attention(q, k, v, { causal: true }), [randn([2, 2, 3, 4]), randn([2, 2, 6, 4]), randn([2, 2, 6, 4])]);
  });
  test('tq < tk, causal with an explicit causalOffset', () => {
    checkGrad((q, k, v) => F.attention(q, k, v, { causal: true, causalOffset: 1 }), [randn([1, 2, 3, 4]), randn([1, 2, 6, 4]), randn([1, 2, 6, 4])]);
    // a query that sees no key outputs zeros and gets no gradient
    checkGrad((q, k, v) => F.attention(q, k, v, { causal: true, causalOffset: -1 }), [randn([1, 1, 3, 2]), randn([1, 1, 4, 2]), randn([1, 1, 4, 2])]);
  });
  test('causal attention matches softmax(q kᵀ·scale + mask) v built from ops', () => {
    const q = randn([1, 2, 4, 3], false);
    const k = randn([1, 2, 6, 3], false);
    const v = randn([1, 2, 6, 3], false);
    const maskData = new Float32Array(4 * 6);
    for (let i = 0; i < 4; i++) for (let j = 0; j < 6; j++) maskData[i * 6 + j] = j <= i + 2 ? 0 : -1e9;
    const s = F.add(F.scale(F.matmul(q, k, { transB: true }), 1 / Math.sqrt(3)), Tensor.fromArray(maskData, [4, 6]));
    const ref = F.matmul(F.softmax(s), v).toFloat32Array();
    assertClose(F.attention(q, k, v, { causal: true }).toFloat32Array(), ref, 1e-5, 'attention');
  });
});

// ---------------------------------------------------------------- images

describe('gradcheck: conv2d and maxPool2d', () => {
  for (const stride of [1, 2]) {
    for (const pad of [0, 2]) {
      for (const bias of [true, false]) {
        test(`conv2d stride ${stride}, padding ${pad}, ${bias ? 'with' : 'without'} bias`, () => {
          const inputs = [randn([2, 2, 6, 5]), randn([3, 2, 3, 3])];
          if (bias) inputs.push(randn([3]));
          checkGrad((x, w, b) => F.conv2d(x, w, b ?? null, stride, pad), inputs, { eps: 1e-2 });
        });
      }
    }
  }
  test('conv2d with a frozen weight, and with a frozen input', () => {
    checkGrad((x, w, b) => F.conv2d(x, w, b, 1, 1), [randn([1, 2, 5, 5]), randn([2, 2, 3, 3], false), randn([2])], { eps: 1e-2 });
    checkGrad((x, w, b) => F.conv2d(x, w, b, 2, 1), [randn([1, 2, 5, 5], false), randn([2, 2, 3, 3]), randn([2], false)], { eps: 1e-2 });
  });
  test('conv2d with a non-square kernel', () => {
    checkGrad((x, w) => F.conv2d(x, w, null, 1, 1), [randn([1, 2, 5, 4]), randn([2, 2, 3, 2])], { eps: 1e-2 });
  });
  test('maxPool2d 2×2 stride 2', () => {
    checkGrad((x) => F.maxPool2d(x, 2), [distinct([2, 2, 6, 6], 0.05)], { eps: 1e-3 });
  });
  test('maxPool2d 3×3 stride 2 (overlapping windows) and odd sizes', () => {
    checkGrad((x) => F.maxPool2d(x, 3, 2), [distinct([1, 2, 7, 6], 0.05)], { eps: 1e-3 });
    checkGrad((x) => F.maxPool2d(x, 2), [distinct([1, 1, 5, 5], 0.05)], { eps: 1e-3 });
  });
});

// ---------------------------------------------------------------- autograd engine

describe('autograd engine', () => {
  test('a frozen weight gets no .grad and its gradient is never computed (matmul)', () => {
    const x = randn([2, 3, 4]);
    const w = randn([4, 5], false);
    spyKernels(['matmul'], (calls) => {
      const y = F.matmul(x, w);
      assert.equal(calls.get('matmul')!.length, 1);
      y.backward(Tensor.ones(y.shape));
      assert.equal(calls.get('matmul')!.length, 2, 'backward runs one GEMM (for x only)');
    });
    assert.equal(w.grad, null);
    assert.ok(x.grad !== null);
    // and the other way round, through the general (batched) path
    const a = randn([2, 3, 4], false);
    const b = randn([2, 4, 5]);
    spyKernels(['matmul'], (calls) => {
      F.matmul(a, b).backward(Tensor.ones([2, 3, 5]));
      assert.equal(calls.get('matmul')!.length, 2);
    });
    assert.equal(a.grad, null);
    assert.ok(b.grad !== null);
  });
  test('frozen params are passed as null gradient buffers to fused backward kernels', () => {
    const x = randn([1, 2, 4, 4]);
    const w = randn([3, 2, 3, 3], false);
    const b = randn([3], false);
    spyKernels(['conv2dBackward', 'layerNormBackward', 'rmsNormBackward', 'attentionBackward'], (calls) => {
      F.sum(F.conv2d(x, w, b, 1, 1)).backward();
      const [conv] = calls.get('conv2dBackward')!;
      assert.ok(conv[4] !== null, 'gx');
      assert.equal(conv[5], null, 'gw');
      assert.equal(conv[6], null, 'gb');

      const h = randn([3, 4]);
      const lw = randn([4], false);
      const lb = randn([4], false);
      F.sum(F.square(F.layerNorm(h, lw, lb))).backward();
      const [ln] = calls.get('layerNormBackward')!;
      assert.ok(ln[7] !== null);
      assert.equal(ln[8], null);
      assert.equal(ln[9], null);
      assert.equal(lw.grad, null);
      assert.equal(lb.grad, null);

      const r = randn([3, 4], false);
      const rw = randn([4]);
      F.sum(F.square(F.rmsNorm(r, rw))).backward();
      const [rms] = calls.get('rmsNormBackward')!;
      assert.equal(rms[6], null, 'gx of a frozen input');
      assert.ok(rms[7] !== null);
      assert.equal(r.grad, null);

      const q = randn([1, 1, 3, 2]);
      const kk = randn([1, 1, 3, 2], false);
      const vv = randn([1, 1, 3, 2], false);
      F.sum(F.square(F.attention(q, kk, vv))).backward();
      const [att] = calls.get('attentionBackward')!;
      assert.ok(att[7] !== null);
      assert.equal(att[8], null);
      assert.equal(att[9], null);
    });
    assert.equal(w.grad, null);
    assert.equal(b.grad, null);
  });
  test('ops on frozen inputs only record nothing', () => {
    const w = randn([6, 4], false);
    const y = F.embedding(w, Int32Array.from([1, 2]));
    assert.equal(y.requiresGrad, false);
    assert.equal(y.gradFn, null);
    const z = F.matmul(randn([2, 3], false), randn([3, 2], false));
    assert.equal(z.requiresGrad, false);
    assert.throws(() => F.sum(z).backward(), /does not require grad/);
  });
  test('gradients accumulate across two backward calls', () => {
    const x = randn([3, 4]);
    const w = randn([4, 2]);
    const run = (): void => F.sum(F.tanh(F.matmul(x, w))).backward();
    run();
    const gx1 = x.grad!.toFloat32Array();
    const gw1 = w.grad!.toFloat32Array();
    run();
    assertClose(x.grad!.toFloat32Array(), gx1.map((v) => 2 * v), 1e-6, 'x.grad');
    assertClose(w.grad!.toFloat32Array(), gw1.map((v) => 2 * v), 1e-6, 'w.grad');
    x.zeroGrad();
    assert.equal(x.grad, null);
    run();
    assertClose(x.grad!.toFloat32Array(), gx1, 1e-6, 'x.grad after zeroGrad');
    // the first accumulated gradient was copied, not aliased to a temporary
    assertClose(gx1, x.grad!.toFloat32Array(), 1e-6, 'first gradient unchanged');
  });
  test('noGrad records no tape', () => {
    const x = randn([3]);
    assert.equal(isGradEnabled(), true);
    const y = noGrad(() => {
      assert.equal(isGradEnabled(), false);
      return F.mul(F.exp(x), x);
    });
    assert.equal(y.requiresGrad, false);
    assert.equal(y.gradFn, null);
    assert.equal(isGradEnabled(), true);
    // nested, and restored after a throw
    assert.throws(() => noGrad(() => noGrad(() => { throw new Error('boom'); })), /boom/);
    assert.equal(isGradEnabled(), true);
    const z = F.mul(x, x);
    assert.equal(z.requiresGrad, true);
  });
  test('diamond graph: x used twice gets the summed gradient', () => {
    const x = randn([5]);
    const fn = (t: Tensor): Tensor => F.mul(F.tanh(t), F.exp(t));
    checkGrad(fn, [x]);
    x.zeroGrad();
    F.sum(fn(x)).backward();
    const xd = x.toFloat32Array();
    const expected = xd.map((v) => (1 - Math.tanh(v) ** 2) * Math.exp(v) + Math.tanh(v) * Math.exp(v));
    assertClose(x.grad!.toFloat32Array(), expected, 1e-5, 'diamond');
    // a deeper diamond: shared interior node y feeds two branches that meet again
    checkGrad((t) => {
      const y = F.sigmoid(t);
      return F.add(F.mul(y, F.square(y)), F.sum(F.scale(y, 2), [0], true));
    }, [randn([3, 2])]);
  });
  test('the same tensor as both operands: mul(x, x)', () => {
    const x = randn([6]);
    checkGrad((t) => F.mul(t, t), [x]);
    x.zeroGrad();
    const g = randn([6], false);
    F.mul(x, x).backward(g);
    const xd = x.toFloat32Array();
    const gd = g.toFloat32Array();
    assertClose(x.grad!.toFloat32Array(), xd.map((v, i) => 2 * v * gd[i]), 1e-6, 'mul(x, x)');
    checkGrad((t) => F.matmul(t, t, { transB: true }), [randn([3, 4])], { eps: 1e-2 });
    checkGrad((t) => F.div(t, t), [awayFromZero([4], 0.5, 2)]);
  });
  test('backward of a leaf (or an op that returns its input) sets the leaf gradient', () => {
    const x = randn([2, 3]);
    const y = F.slice(x, 1, 0, 3); // full range: returns x itself
    assert.equal(y, x);
    const g = randn([2, 3], false);
    y.backward(g);
    assert.ok(x.grad !== null, 'x.grad is set');
    assertClose(x.grad.toFloat32Array(), g.toFloat32Array(), 0, 'x.grad');
  });
});

describe('gradcheck: rotary embedding', () => {
  // cos/sin of real angles with duplicated halves, as Llama's, and arbitrary ones (the transposed map must hold for both)
  const table = (rows: number, dim: number, real: boolean): [Tensor, Tensor] => {
    const a = randu([rows, dim], -3, 3, false).toFloat32Array();
    const cos = new Float32Array(rows * dim);
    const sin = new Float32Array(rows * dim);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < dim; i++) {
        const t = a[r * dim + (real ? i % (dim / 2) : i)];
        cos[r * dim + i] = Math.cos(t);
        sin[r * dim + i] = real ? Math.sin(t) : Math.cos(2 * t + 1);
      }
    }
    return [Tensor.fromArray(cos, [rows, dim]), Tensor.fromArray(sin, [rows, dim])];
  };
  for (const real of [true, false]) {
    test(`rotary, ${real ? 'rotation tables' : 'arbitrary tables'}`, () => {
      const [cos, sin] = table(6, 8, real);
      checkGrad((x) => F.rotary(x, cos, sin), [randn([2, 3, 3, 8])]);
    });
  }
});
