// Every kernel of the native addon against the TypeScript reference on random inputs of awkward
// sizes: odd m/n/k, tails that are not multiples of the 6×16 micro-tile or of the vector width,
// sizes that cross the GEMM cache blocks, transposes, batch strides (0 = broadcast), accumulation,
// masked attention rows. Skipped (with the reason) when the addon was not built.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

import { tsKernels } from '../src/backends/index.js';
import { loadAddon, nativeKernels } from '../src/backends/native/index.js';
import { Rng, quantize } from '../src/tensor/index.js';
import type { AttentionParams, BinaryOp, Conv2dParams, Kernels, MatmulParams, UnaryOp } from '../src/tensor/index.js';

const load = loadAddon();
const skip = load.addon === null ? `native addon not built (${load.reason})` : false;
const native: Kernels | null = load.addon ? nativeKernels(load.addon) : null;

type Buf = Float32Array | Int32Array;
type Bufs = Record<string, Buf>;

const rng = new Rng(20240601);
const randn = (n: number, std = 1): Float32Array => rng.fillNormal(new Float32Array(n), 0, std);
// the few-row matmul tests draw from their own generator, so the other tests' inputs do not depend on them
const smallRng = new Rng(20250117);
const srandn = (n: number): Float32Array => smallRng.fillNormal(new Float32Array(n), 0, 1);
const randu = (n: number, lo: number, hi: number): Float32Array => Float32Array.from({ length: n }, () => rng.uniform(lo, hi));
const ints = (n: number, hi: number): Int32Array => Int32Array.from({ length: n }, () => Math.floor(rng.uniform(0, hi)));

function clone(bufs: Bufs): Bufs {
  return Object.fromEntries(Object.entries(bufs).map(([k, v]) => [k, v.slice()]));
}

/**
 * Runs `run` on each backend with its own copy of `inputs` and compares the buffers named in
 * `outputs` (and the return value) elementwise: |a − b| ≤ tol·(1 + |b|), non-finite values equal.
 */
function compare(inputs: Bufs, outputs: string[], run: (k: Kernels, b: Bufs) => number | void, tol = 1e-5): void {
  const ref = clone(inputs);
  const got = clone(inputs);
  const r0 = run(tsKernels, ref);
  const r1 = run(native!, got);
  if (typeof r0 === 'number') assert.ok(Math.abs((r1 as number) - r0) <= tol * (1 + Math.abs(r0)), `return value ${r1} vs ${r0}`);
  for (const name of outputs) {
    const a = got[name];
    const b = ref[name];
    assert.equal(a.length, b.length, `${name}: length`);
    for (let i = 0; i < a.length; i++) {
      if (!Number.isFinite(b[i]) || !Number.isFinite(a[i])) {
        assert.ok(Object.is(a[i], b[i]) || (Number.isNaN(a[i]) && Number.isNaN(b[i])), `${name}[${i}]: ${a[i]} vs ${b[i]}`);
        continue;
      }
      assert.ok(Math.abs(a[i] - b[i]) <= tol * (1 + Math.abs(b[i])), `${name}[${i}]: native ${a[i]} vs ts ${b[i]}`);
    }
  }
}

/** Every layout of one matmul shape (A and B transposed or not, a batch operand broadcast or not, accumulate or not) against the reference. */
function compareMatmulLayouts(batch: number, m: number, n: number, k: number, rand: (n: number) => Float32Array): void {
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      for (const [bcastA, bcastB] of [[false, false], [true, false], [false, true]]) {
        if (batch === 1 && (bcastA || bcastB)) continue;
        for (const accumulate of [false, true]) {
          const p: MatmulParams = { batch, m, n, k, transA, transB, strideA: bcastA ? 0 : m * k, strideB: bcastB ? 0 : k * n, accumulate };
          compare(
            { a: rand((bcastA ? 1 : batch) * m * k), b: rand((bcastB ? 1 : batch) * k * n), c: rand(batch * m * n) },
            ['c'],
            (kern, x) => kern.matmul(F32(x.a), F32(x.b), F32(x.c), p),
            2e-5 * Math.sqrt(k),
          );
        }
      }
    }
  }
}

const F32 = (b: Buf): Float32Array => b as Float32Array;
const I32 = (b: Buf): Int32Array => b as Int32Array;

describe('native kernels match the TypeScript reference', { skip }, () => {
  test('fill, affine, powScalar, axpy, sumSquares', () => {
    const n = 1237;
    compare({ out: new Float32Array(n) }, ['out'], (k, b) => k.fill(F32(b.out), -2.5));
    compare({ x: randn(n), out: new Float32Array(n) }, ['out'], (k, b) => k.affine(F32(b.x), 1.7, -0.3, F32(b.out)));
    compare({ x: randu(n, 0.1, 3), out: new Float32Array(n) }, ['out'], (k, b) => k.powScalar(F32(b.x), 1.5, F32(b.out)));
    compare({ x: randn(n), out: new Float32Array(n) }, ['out'], (k, b) => k.powScalar(F32(b.x), 2, F32(b.out)));
    compare({ a: randn(n), b: randn(n) }, ['a'], (k, b) => k.axpy(F32(b.a), -0.75, F32(b.b), F32(b.a)));
    compare({ x: randn(70001) }, [], (k, b) => k.sumSquares(F32(b.x)), 1e-9);
  });

  test('gather and scatter (permutes, slices, broadcast adjoints)', () => {
    const shape = [3, 5, 7];
    const x = randn(105);
    // transpose of the last two axes, a slice with an offset, a broadcast (stride 0)
    const views: [number[], number[], number, number][] = [
      [[3, 7, 5], [35, 1, 7], 0, 105],
      [[3, 2, 7], [35, 7, 1], 14, 42],
      [[4, 3, 5, 7], [0, 35, 7, 1], 0, 420],
      [[5, 3], [7, 35], 2, 15],
      [[], [], 17, 1],
    ];
    for (const [s, st, off, size] of views) {
      compare({ x, out: new Float32Array(size) }, ['out'], (k, b) => k.gather(F32(b.x), s, st, off, F32(b.out)));
      for (const accumulate of [false, true]) {
        compare({ g: randn(size), out: randn(105) }, ['out'], (k, b) => k.scatter(F32(b.g), s, st, off, F32(b.out), accumulate));
      }
    }
    // accumulate into a broadcast last axis (sums a row into one element)
    compare({ g: randn(shape[0] * 9), out: randn(shape[0]) }, ['out'], (k, b) => k.scatter(F32(b.g), [3, 9], [1, 0], 0, F32(b.out), true));
  });

  test('unary ops and their backward', () => {
    const ops: UnaryOp[] = ['neg', 'exp', 'log', 'tanh', 'sqrt', 'rsqrt', 'sigmoid', 'abs', 'square', 'relu', 'silu', 'gelu_tanh', 'gelu_erf'];
    const n = 1031;
    for (const op of ops) {
      const positive = op === 'log' || op === 'sqrt' || op === 'rsqrt';
      const x = positive ? randu(n, 0.05, 4) : randn(n, 2);
      compare({ x, y: new Float32Array(n) }, ['y'], (k, b) => k.unary(op, F32(b.x), F32(b.y)), 2e-6);
      compare({ x, y: new Float32Array(n), gy: randn(n), gx: new Float32Array(n) }, ['gx'], (k, b) => {
        k.unary(op, F32(b.x), F32(b.y));
        k.unaryBackward(op, F32(b.x), F32(b.y), F32(b.gy), F32(b.gx));
      }, 2e-6);
    }
  });

  test('tanh and GELU across their piecewise branches (series, exp form, saturation) and vector tails', () => {
    const edges = [0, 1e-7, 1e-3, 0.1, 0.2999, 0.3, 0.3001, 0.37, 0.5, 1, 2.5, 9, 20, 44, 90, 1e4];
    const values = [...edges, ...edges.map((v) => -v)];
    for (const n of [values.length, 13, 8, 5]) {
      const x = Float32Array.from({ length: n }, (_, i) => values[i % values.length]! * (1 + (i >= values.length ? 0.5 : 0)));
      for (const op of ['tanh', 'gelu_tanh'] as const) {
        compare({ x, y: new Float32Array(n) }, ['y'], (k, b) => k.unary(op, F32(b.x), F32(b.y)), 2e-6);
        compare({ x, y: new Float32Array(n), gy: randn(n), gx: new Float32Array(n) }, ['gx'], (k, b) => {
          k.unary(op, F32(b.x), F32(b.y));
          k.unaryBackward(op, F32(b.x), F32(b.y), F32(b.gy), F32(b.gx));
        }, 2e-6);
      }
    }
  });

  test('binary ops with broadcasting, out aliasing a', () => {
    const ops: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'max', 'min'];
    const cases: [number[], number[], number[], number, number][] = [
      // outShape, aStrides, bStrides, aSize, bSize
      [[4, 5, 19], [95, 19, 1], [95, 19, 1], 380, 380],
      [[4, 5, 19], [95, 19, 1], [0, 0, 1], 380, 19],
      [[4, 5, 19], [0, 1, 0], [95, 19, 1], 5, 380],
      [[7, 3], [1, 7], [3, 1], 21, 21],
      [[], [], [], 1, 1],
    ];
    for (const op of ops) {
      for (const [shape, sa, sb, na, nb] of cases) {
        const size = shape.reduce((p, d) => p * d, 1);
        const b = op === 'div' ? randu(nb, 0.5, 2) : randn(nb);
        compare({ a: randn(na), b, out: new Float32Array(size) }, ['out'], (k, x) => k.binary(op, F32(x.a), sa, F32(x.b), sb, F32(x.out), shape));
      }
      compare({ a: randn(380), b: randn(19) }, ['a'], (k, x) => k.binary(op, F32(x.a), [95, 19, 1], F32(x.b), [0, 0, 1], F32(x.a), [4, 5, 19]));
    }
  });

  test('sum and max reductions', () => {
    for (const [outer, reduce, inner] of [[3, 17, 1], [1, 1000, 1], [2, 9, 301], [5, 1, 7], [1, 3, 1]]) {
      const x = randn(outer * reduce * inner);
      compare({ x, out: new Float32Array(outer * inner) }, ['out'], (k, b) => k.sumReduce(F32(b.x), outer, reduce, inner, F32(b.out)));
      compare({ x, out: new Float32Array(outer * inner) }, ['out'], (k, b) => k.maxReduce(F32(b.x), outer, reduce, inner, F32(b.out)));
    }
  });

  test('quantized matmuls (bf16, int8, nf4, nf4 double-quantized): forward and input gradient, decode and prefill sizes', () => {
    for (const [m, n, k] of [[1, 33, 70], [4, 130, 257], [65, 70, 300]]) {
      for (const [fmt, dq] of [['bf16', false], ['int8', false], ['nf4', false], ['nf4', true]] as const) {
        const w = quantize(randn(n * k, 0.1), n, k, fmt, { doubleQuant: dq });
        // 1e-4: the bf16 decode path on AVX-512 BF16 CPUs splits activations into two bf16 halves
        compare({ x: randn(m * k), out: new Float32Array(m * n) }, ['out'], (kk, b) => kk.quantMatmul(b.x as Float32Array, w, m, b.out as Float32Array), 1e-4);
        compare({ gy: randn(m * n), gx: new Float32Array(m * k) }, ['gx'], (kk, b) => kk.quantMatmulInputGrad(b.gy as Float32Array, w, m, b.gx as Float32Array), 1e-4);
      }
    }
  });

  test('matmul: odd sizes, transposes, batch strides, accumulate', () => {
    const shapes: [number, number, number, number][] = [
      // batch, m, n, k
      [1, 1, 1, 1], [1, 7, 5, 3], [1, 13, 17, 11], [3, 6, 16, 9], [2, 31, 33, 35], [1, 150, 37, 300], [1, 5, 3100, 7], [1, 97, 130, 520],
    ];
    for (const [batch, m, n, k] of shapes) compareMatmulLayouts(batch, m, n, k, randn);
    // k = 0: overwrite gives zeros, accumulate leaves C alone
    for (const accumulate of [false, true]) {
      const p: MatmulParams = { batch: 1, m: 3, n: 4, k: 0, transA: false, transB: false, strideA: 0, strideB: 0, accumulate };
      compare({ a: new Float32Array(0), b: new Float32Array(0), c: randn(12) }, ['c'], (kern, x) => kern.matmul(F32(x.a), F32(x.b), F32(x.c), p));
    }
  });

  test('matmul with few rows (B streamed in place): m = 1..24, both layouts of A and B, k and n tails, accumulate', () => {
    // n crosses the 4-column (nt) and 16-column (nn) groups and the 128-column blocks, k the 8-lane
    // tail and the 128-row slabs of the nn kernel
    const nks: [number, number][] = [[1, 1], [5, 7], [17, 9], [33, 130], [130, 17], [300, 300], [3, 1], [16, 8], [4, 257]];
    for (let m = 1; m <= 24; m++) {
      for (const [n, k] of [nks[m % nks.length], nks[(m * 5 + 3) % nks.length]]) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            for (const accumulate of [false, true]) {
              const p: MatmulParams = { batch: 1, m, n, k, transA, transB, strideA: 0, strideB: 0, accumulate };
              compare({ a: srandn(m * k), b: srandn(k * n), c: srandn(m * n) }, ['c'], (kern, x) => kern.matmul(F32(x.a), F32(x.b), F32(x.c), p), 2e-5 * Math.sqrt(k));
            }
          }
        }
      }
    }
  });

  test('matmul with few rows: batches with their own or broadcast operands; sizes around the small-m limits', () => {
    for (const [batch, m, n, k] of [[3, 1, 21, 19], [2, 4, 130, 33], [4, 13, 37, 64], [3, 2, 1, 9]]) compareMatmulLayouts(batch, m, n, k, srandn);
    // the streamed path stops at 64 rows and at 2^19 floats of A; either side of both must agree
    for (const [m, n, k] of [[64, 70, 40], [65, 70, 40], [40, 21, 13107], [41, 21, 12800]]) {
      for (const transB of [false, true]) {
        const p: MatmulParams = { batch: 1, m, n, k, transA: false, transB, strideA: 0, strideB: 0, accumulate: false };
        compare({ a: srandn(m * k), b: srandn(k * n), c: new Float32Array(m * n) }, ['c'], (kern, x) => kern.matmul(F32(x.a), F32(x.b), F32(x.c), p), 2e-5 * Math.sqrt(k));
      }
    }
  });

  test('softmax, logSoftmax and cross-entropy with their backward', () => {
    for (const [rows, cols] of [[5, 1], [7, 13], [3, 1001]]) {
      const x = randn(rows * cols, 3);
      const gy = randn(rows * cols);
      compare({ x, gy, y: new Float32Array(rows * cols), gx: new Float32Array(rows * cols) }, ['y', 'gx'], (k, b) => {
        k.softmax(F32(b.x), rows, cols, F32(b.y));
        k.softmaxBackward(F32(b.y), F32(b.gy), rows, cols, F32(b.gx));
      });
      compare({ x, gy, y: new Float32Array(rows * cols), gx: new Float32Array(rows * cols) }, ['y', 'gx'], (k, b) => {
        k.logSoftmax(F32(b.x), rows, cols, F32(b.y));
        k.logSoftmaxBackward(F32(b.y), F32(b.gy), rows, cols, F32(b.gx));
      });
      const targets = ints(rows, cols);
      targets[rows - 1] = -100;
      compare(
        { x, targets, gl: randn(rows), loss: new Float32Array(rows), lse: new Float32Array(rows), gx: new Float32Array(rows * cols) },
        ['loss', 'lse', 'gx'],
        (k, b) => {
          k.crossEntropy(F32(b.x), I32(b.targets), rows, cols, -100, F32(b.loss), F32(b.lse));
          k.crossEntropyBackward(F32(b.x), F32(b.lse), I32(b.targets), F32(b.gl), rows, cols, -100, F32(b.gx));
        },
      );
    }
  });

  test('layer norm and RMS norm with their backward (weights accumulate)', () => {
    for (const [rows, cols] of [[1, 3], [9, 37], [4, 1029]]) {
      for (const affine of [false, true]) {
        const bufs = {
          x: randn(rows * cols, 2), w: randn(cols), bias: randn(cols), gy: randn(rows * cols),
          y: new Float32Array(rows * cols), mean: new Float32Array(rows), rstd: new Float32Array(rows),
          gx: new Float32Array(rows * cols), gw: randn(cols), gb: randn(cols),
        };
        compare(bufs, ['y', 'mean', 'rstd', 'gx', 'gw', 'gb'], (k, b) => {
          const w = affine ? F32(b.w) : null;
          k.layerNorm(F32(b.x), w, affine ? F32(b.bias) : null, rows, cols, 1e-5, F32(b.y), F32(b.mean), F32(b.rstd));
          k.layerNormBackward(F32(b.x), w, F32(b.mean), F32(b.rstd), F32(b.gy), rows, cols, F32(b.gx), affine ? F32(b.gw) : null, affine ? F32(b.gb) : null);
        }, 2e-5);
        compare(bufs, ['y', 'rstd', 'gx', 'gw'], (k, b) => {
          const w = affine ? F32(b.w) : null;
          k.rmsNorm(F32(b.x), w, rows, cols, 1e-6, F32(b.y), F32(b.rstd));
          k.rmsNormBackward(F32(b.x), w, F32(b.rstd), F32(b.gy), rows, cols, F32(b.gx), affine ? F32(b.gw) : null);
        }, 2e-5);
      }
    }
  });

  test('embedding and its backward (repeated ids)', () => {
    const vocab = 11;
    const dim = 19;
    const ids = ints(23, vocab);
    ids[3] = ids[7] = ids[20];
    compare({ w: randn(vocab * dim), ids, out: new Float32Array(23 * dim), gy: randn(23 * dim), gw: randn(vocab * dim) }, ['out', 'gw'], (k, b) => {
      k.embedding(F32(b.w), I32(b.ids), dim, F32(b.out));
      k.embeddingBackward(F32(b.gy), I32(b.ids), dim, F32(b.gw));
    });
  });

  test('attention forward and backward: causal, offsets, key masks, GQA, all-masked rows', () => {
    const configs: Partial<AttentionParams>[] = [
      { batch: 2, heads: 3, kvHeads: 3, tq: 5, tk: 5, headDim: 7, causal: false },
      { batch: 2, heads: 4, kvHeads: 2, tq: 37, tk: 37, headDim: 16, causal: true },
      { batch: 1, heads: 2, kvHeads: 1, tq: 3, tk: 41, headDim: 5, causal: true },
      { batch: 2, heads: 2, kvHeads: 2, tq: 6, tk: 6, headDim: 4, causal: true, causalOffset: -2 },
      { batch: 3, heads: 2, kvHeads: 2, tq: 33, tk: 33, headDim: 9, causal: true, keyMask: new Float32Array(0) },
    ];
    for (const c of configs) {
      const p: AttentionParams = {
        batch: c.batch!, heads: c.heads!, kvHeads: c.kvHeads!, tq: c.tq!, tk: c.tk!, headDim: c.headDim!,
        scale: 1 / Math.sqrt(c.headDim!), causal: c.causal!, causalOffset: c.causalOffset ?? c.tk! - c.tq!, keyMask: null,
      };
      if (c.keyMask) {
        // batch 0 pads its first keys, batch 1 masks every key (rows output 0), batch 2 sees all
        const mask = new Float32Array(p.batch * p.tk).fill(1);
        for (let j = 0; j < 4; j++) mask[j] = 0;
        mask.fill(0, p.tk, 2 * p.tk);
        p.keyMask = mask;
      }
      const qn = p.batch * p.heads * p.tq * p.headDim;
      const kn = p.batch * p.kvHeads * p.tk * p.headDim;
      const rows = p.batch * p.heads * p.tq;
      compare(
        {
          q: randn(qn), k: randn(kn), v: randn(kn), gOut: randn(qn), out: new Float32Array(qn), lse: new Float32Array(rows),
          gq: randn(qn), gk: randn(kn), gv: randn(kn),
        },
        ['out', 'lse', 'gq', 'gk', 'gv'],
        (kern, b) => {
          kern.attention(F32(b.q), F32(b.k), F32(b.v), p, F32(b.out), F32(b.lse));
          kern.attentionBackward(F32(b.q), F32(b.k), F32(b.v), F32(b.out), F32(b.lse), F32(b.gOut), p, F32(b.gq), F32(b.gk), F32(b.gv));
        },
        2e-5,
      );
    }
  });

  test('conv2d and maxPool2d with their backward', () => {
    const convs: Conv2dParams[] = [
      { n: 2, cin: 3, h: 9, w: 7, cout: 5, kh: 3, kw: 3, stride: 1, pad: 1, oh: 9, ow: 7 },
      { n: 1, cin: 2, h: 10, w: 11, cout: 3, kh: 3, kw: 2, stride: 2, pad: 0, oh: 4, ow: 5 },
    ];
    for (const p of convs) {
      const xn = p.n * p.cin * p.h * p.w;
      const wn = p.cout * p.cin * p.kh * p.kw;
      const yn = p.n * p.cout * p.oh * p.ow;
      compare(
        { x: randn(xn), w: randn(wn), bias: randn(p.cout), y: new Float32Array(yn), gy: randn(yn), gx: randn(xn), gw: randn(wn), gb: randn(p.cout) },
        ['y', 'gx', 'gw', 'gb'],
        (k, b) => {
          k.conv2d(F32(b.x), F32(b.w), F32(b.bias), p, F32(b.y));
          k.conv2dBackward(F32(b.x), F32(b.w), F32(b.gy), p, F32(b.gx), F32(b.gw), F32(b.gb));
        },
        2e-5,
      );
    }
    const pool = { n: 2, c: 3, h: 9, w: 8, k: 2, stride: 2, oh: 4, ow: 4 };
    const size = pool.n * pool.c * pool.oh * pool.ow;
    compare(
      { x: randn(2 * 3 * 9 * 8), y: new Float32Array(size), argmax: new Int32Array(size), gy: randn(size), gx: randn(2 * 3 * 9 * 8) },
      ['y', 'argmax', 'gx'],
      (k, b) => {
        k.maxPool2d(F32(b.x), pool, F32(b.y), I32(b.argmax));
        k.maxPool2dBackward(F32(b.gy), I32(b.argmax), pool, F32(b.gx));
      },
    );
  });

  test('adamw', () => {
    const n = 1001;
    compare({ p: randn(n), g: randn(n), m: randn(n, 0.1), v: randu(n, 0, 0.1) }, ['p', 'm', 'v'], (k, b) =>
      k.adamw(F32(b.p), F32(b.g), F32(b.m), F32(b.v), { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 3 }),
    );
  });

  test('fused VeRA branch: slices of larger projections, gx overwrite or accumulate', () => {
    for (const [rows, inF, outF, rank, maxIn, maxOut] of [[1, 1, 1, 1, 1, 1], [7, 13, 9, 4, 20, 11], [37, 64, 48, 16, 64, 50]]) {
      for (const accumulateGx of [false, true]) {
        const p = { rows, inFeatures: inF, outFeatures: outF, rank, lda: maxIn };
        compare(
          {
            x: randn(rows * inF), a: randn(rank * maxIn), b: randn(maxOut * rank), ld: randn(rank), lb: randn(outF),
            y: new Float32Array(rows * outF), ax: new Float32Array(rows * rank), gy: randn(rows * outF),
            gx: randn(rows * inF), gld: randn(rank), glb: randn(outF),
          },
          ['y', 'ax', 'gx', 'gld', 'glb'],
          (k, b) => {
            k.veraForward(F32(b.x), F32(b.a), F32(b.b), F32(b.ld), F32(b.lb), p, F32(b.y), F32(b.ax));
            k.veraBackward(F32(b.a), F32(b.b), F32(b.ld), F32(b.lb), F32(b.ax), F32(b.gy), p, F32(b.gx), accumulateGx, F32(b.gld), F32(b.glb));
          },
          3e-5,
        );
      }
    }
  });
});

test('the addon reports its thread pool and GEMM micro-kernel', { skip }, () => {
  assert.ok(load.addon!.numThreads() >= 1);
  assert.match(load.addon!.gemmKernel(), /^(avx512|avx2-fma|portable)$/);
  if (process.env.VERA_NO_AVX512) assert.notEqual(load.addon!.gemmKernel(), 'avx512');
  if (process.env.VERA_NO_AVX2) assert.equal(load.addon!.gemmKernel(), 'portable');
});

test('the AVX-512 and AVX2 GEMM kernels give the same bits (one FMA chain per element per slab)', { skip: skip || load.addon?.gemmKernel() !== 'avx512' }, () => {
  // the AVX2 path runs in a child with VERA_NO_AVX512=1; shapes with edge tiles, several slabs, transposes, accumulation
  const script = `
    const { loadAddon, nativeKernels } = await import(${JSON.stringify(new URL('../src/backends/native/index.js', import.meta.url).href)});
    const k = nativeKernels(loadAddon().addon);
    const out = [];
    for (const [m, n, kk, tA, tB, acc] of [[203, 190, 530, false, true, false], [97, 301, 257, true, false, true], [300, 300, 300, false, false, false], [13, 70, 1100, false, false, true]]) {
      const a = Float32Array.from({ length: m * kk }, (_, i) => Math.sin(i * 0.37));
      const b = Float32Array.from({ length: kk * n }, (_, i) => Math.cos(i * 0.11));
      const c = Float32Array.from({ length: m * n }, (_, i) => (i % 7) * 0.25);
      k.matmul(a, b, c, { batch: 1, m, n, k: kk, transA: tA, transB: tB, strideA: 0, strideB: 0, accumulate: acc });
      out.push(Buffer.from(c.buffer).toString('base64'));
    }
    process.stdout.write(JSON.stringify(out));`;
  const run = (env: NodeJS.ProcessEnv): string[] => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, ...env }, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as string[];
  };
  const wide = run({});
  const avx2 = run({ VERA_NO_AVX512: '1' });
  for (let i = 0; i < wide.length; i++) assert.ok(wide[i] === avx2[i], `case ${i}: AVX-512 and AVX2 results differ`);
});

test('machinePeak measures a register-only FMA loop on every thread', { skip: skip || load.addon?.gemmKernel() === 'portable' }, () => {
  const g = load.addon!.machinePeak(0.05);
  assert.ok(Number.isFinite(g) && g > 0, `${g}`);
});

test('results do not depend on the thread count (bit for bit)', { skip }, () => {
  const addon = load.addon!;
  const before = addon.numThreads();
  const [m, n, k] = [203, 190, 410];
  const a = randn(m * k);
  const b = randn(k * n);
  const x = randn(64 * 3000);
  const run = (threads: number): [Float32Array, Float32Array, number] => {
    addon.setNumThreads(threads);
    assert.equal(addon.numThreads(), threads);
    const c = new Float32Array(m * n);
    native!.matmul(a, b, c, { batch: 1, m, n, k, transA: false, transB: true, strideA: 0, strideB: 0, accumulate: false });
    const sums = new Float32Array(3000);
    native!.sumReduce(x, 1, 64, 3000, sums);
    return [c, sums, native!.sumSquares(x)];
  };
  try {
    const one = run(1);
    const three = run(3);
    assert.deepEqual(three, one);
  } finally {
    addon.setNumThreads(before);
  }
});

test('few-row matmuls do not depend on the thread count or on the other rows (bit for bit)', { skip }, () => {
  const addon = load.addon!;
  const before = addon.numThreads();
  // large enough to be split between threads; n and k leave tails
  const [n, k] = [1003, 301];
  const run = (threads: number, p: MatmulParams, a: Float32Array, b: Float32Array, c0: Float32Array): Float32Array => {
    addon.setNumThreads(threads);
    const c = c0.slice();
    native!.matmul(a, b, c, p);
    return c;
  };
  try {
    for (const transB of [false, true]) {
      for (const m of [1, 3, 7, 16, 24]) {
        for (const accumulate of [false, true]) {
          for (const batch of [1, 2]) {
            const p: MatmulParams = { batch, m, n, k, transA: false, transB, strideA: m * k, strideB: batch === 1 ? 0 : k * n, accumulate };
            const a = srandn(batch * m * k);
            const b = srandn((batch === 1 ? 1 : batch) * k * n);
            const c0 = srandn(batch * m * n);
            const one = run(1, p, a, b, c0);
            assert.deepEqual(run(3, p, a, b, c0), one, `transB ${transB}, m ${m}, accumulate ${accumulate}, batch ${batch}`);
            assert.deepEqual(run(2, p, a, b, c0), one);
          }
        }
      }
      // each row of a 16-row product is the 1-row product of that row alone (decoding batched or
      // not), also when k is long enough to be cut into slabs
      addon.setNumThreads(before);
      for (const kk of [k, 1001]) {
        const m = 16;
        const a = srandn(m * kk);
        const b = srandn(kk * n);
        const all = new Float32Array(m * n);
        native!.matmul(a, b, all, { batch: 1, m, n, k: kk, transA: false, transB, strideA: 0, strideB: 0, accumulate: false });
        for (const i of [0, 5, 15]) {
          const row = new Float32Array(n);
          native!.matmul(a.subarray(i * kk, (i + 1) * kk), b, row, { batch: 1, m: 1, n, k: kk, transA: false, transB, strideA: 0, strideB: 0, accumulate: false });
          assert.deepEqual(row, all.subarray(i * n, (i + 1) * n), `row ${i}, k ${kk}, transB ${transB}`);
        }
      }
    }
  } finally {
    addon.setNumThreads(before);
  }
});

test('a freed storage (and any view sharing it) is refused with an error, not dereferenced', { skip }, () => {
  const k = native!;
  const s = k.fromArray(Float32Array.from([1, 2, 3, 4]));
  const view = s; // a reshape shares its storage
  const out = k.alloc(4);
  k.free!(s);
  assert.throws(() => k.unary('neg', view, out), /freed/);
  assert.throws(() => k.matmul(view, view, out, { batch: 1, m: 2, n: 2, k: 2, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: false }), /freed/);
});
