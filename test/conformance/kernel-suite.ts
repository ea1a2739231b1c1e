// The kernel conformance suite: every kernel of a backend against a reference backend (the
// TypeScript one) on random inputs of awkward sizes: odd m/n/k, tails that are not multiples of a
// micro-tile or of the vector width, sizes that cross GEMM cache blocks, transposes, batch strides
// (0 = broadcast), accumulation, masked and all-masked attention rows, GQA, KV caches read in place,
// ragged attention, quantized weights, VeRA. Backend-agnostic and asynchronous, with no Node
// imports, so one copy runs under node:test (native, wasm) and bundled in a browser page (wasm,
// WebGPU). Storages are opaque: inputs go in through fromArray, outputs come back through
// readAsync (GPU backends) or read; host arrays (ids, targets, masks, slots, argmax) stay host arrays.
import { Rng } from '../../src/tensor/rng.js';
import { quantize } from '../../src/tensor/quant.js';
import type { AttentionParams, BinaryOp, Conv2dParams, Kernels, MatmulParams, Storage, UnaryOp } from '../../src/tensor/kernels.js';

export interface SuiteResult {
  name: string;
  ok: boolean;
  /** The first mismatch (or error) of a failed case. */
  message?: string;
  ms: number;
}

export interface SuiteOptions {
  /** Run only the cases whose name this accepts. */
  filter?: (name: string) => boolean;
  /** Multiplies every tolerance (a backend with other summation orders or fast math may need > 1). */
  tolScale?: number;
  /** Called after each case (progress in a browser page or a long run). */
  onResult?: (r: SuiteResult) => void;
}

/** A case's inputs: Float32Arrays become storages of the backend, Int32Arrays stay host arrays. */
type Bufs = Record<string, Float32Array | Int32Array>;
/** The same, on a backend. */
type Dev = Record<string, Storage | Int32Array>;

const S = (b: Storage | Int32Array): Storage => b as Storage;
const I32 = (b: Storage | Int32Array): Int32Array => b as Int32Array;

class Mismatch extends Error {}
function check(ok: boolean, message: () => string): void {
  if (!ok) throw new Mismatch(message());
}

async function readBack(k: Kernels, s: Storage): Promise<Float32Array> {
  // a copy: a backend's read may return a view that a later allocation invalidates
  return (k.readAsync ? await k.readAsync(s) : k.read(s)).slice();
}

/** The case context: the backend under test, the reference, the tolerance scale and the generators. */
class Ctx {
  constructor(readonly k: Kernels, readonly ref: Kernels, readonly tolScale: number) {}
  readonly rng = new Rng(20240601);
  // the few-row matmul cases draw from their own generator, so the other cases' inputs do not depend on them
  readonly smallRng = new Rng(20250117);
  randn = (n: number, std = 1): Float32Array => this.rng.fillNormal(new Float32Array(n), 0, std);
  srandn = (n: number): Float32Array => this.smallRng.fillNormal(new Float32Array(n), 0, 1);
  randu = (n: number, lo: number, hi: number): Float32Array => Float32Array.from({ length: n }, () => this.rng.uniform(lo, hi));
  ints = (n: number, hi: number): Int32Array => Int32Array.from({ length: n }, () => Math.floor(this.rng.uniform(0, hi)));

  /**
   * Runs `run` on both backends with their own copy of `inputs` and compares the buffers named in
   * `outputs` (and the return value) elementwise: |a − b| ≤ tol·(1 + |b|), non-finite values equal.
   */
  async compare(inputs: Bufs, outputs: string[], run: (k: Kernels, b: Dev) => number | void, tol = 1e-5): Promise<void> {
    const t = tol * this.tolScale;
    const upload = (k: Kernels): Dev =>
      Object.fromEntries(Object.entries(inputs).map(([n, v]) => [n, v instanceof Int32Array ? v.slice() : k.fromArray(v)]));
    const ref = upload(this.ref);
    const got = upload(this.k);
    try {
      const r0 = run(this.ref, ref);
      const r1 = run(this.k, got);
      if (typeof r0 === 'number') check(typeof r1 === 'number' && Math.abs(r1 - r0) <= t * (1 + Math.abs(r0)), () => `return value ${r1} vs ${r0}`);
      for (const name of outputs) {
        const a = got[name] instanceof Int32Array ? I32(got[name]) : await readBack(this.k, S(got[name]));
        const b = ref[name] instanceof Int32Array ? I32(ref[name]) : await readBack(this.ref, S(ref[name]));
        check(a.length === b.length, () => `${name}: length ${a.length} vs ${b.length}`);
        for (let i = 0; i < a.length; i++) {
          if (!Number.isFinite(b[i]) || !Number.isFinite(a[i])) {
            check(Object.is(a[i], b[i]) || (Number.isNaN(a[i]) && Number.isNaN(b[i])), () => `${name}[${i}]: ${a[i]} vs reference ${b[i]}`);
            continue;
          }
          check(Math.abs(a[i] - b[i]) <= t * (1 + Math.abs(b[i])), () => `${name}[${i}]: ${a[i]} vs reference ${b[i]} (tolerance ${t})`);
        }
      }
    } finally {
      for (const [k, dev] of [[this.ref, ref], [this.k, got]] as const) {
        for (const v of Object.values(dev)) if (!(v instanceof Int32Array)) k.free?.(v);
      }
    }
  }

  /** Every layout of one matmul shape (A and B transposed or not, a batch operand broadcast or not, accumulate or not). */
  async matmulLayouts(batch: number, m: number, n: number, k: number, rand: (n: number) => Float32Array): Promise<void> {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        for (const [bcastA, bcastB] of [[false, false], [true, false], [false, true]]) {
          if (batch === 1 && (bcastA || bcastB)) continue;
          for (const accumulate of [false, true]) {
            const p: MatmulParams = { batch, m, n, k, transA, transB, strideA: bcastA ? 0 : m * k, strideB: bcastB ? 0 : k * n, accumulate };
            await this.compare(
              { a: rand((bcastA ? 1 : batch) * m * k), b: rand((bcastB ? 1 : batch) * k * n), c: rand(batch * m * n) },
              ['c'],
              (kern, x) => kern.matmul(S(x.a), S(x.b), S(x.c), p),
              2e-5 * Math.sqrt(k),
            ).catch((e: unknown) => {
              throw e instanceof Mismatch ? new Mismatch(`matmul batch ${batch} ${m}×${n}×${k} transA ${transA} transB ${transB} strides ${p.strideA}/${p.strideB} accumulate ${accumulate}: ${e.message}`) : e;
            });
          }
        }
      }
    }
  }
}


/** Attention forward and backward on both backends for each configuration (a keyMask entry asks for a mask). */
async function attentionCases(c: Ctx, configs: Partial<AttentionParams>[]): Promise<void> {
  for (const cfg of configs) {
    const p: AttentionParams = {
      batch: cfg.batch!, heads: cfg.heads!, kvHeads: cfg.kvHeads!, tq: cfg.tq!, tk: cfg.tk!, headDim: cfg.headDim!,
      scale: 1 / Math.sqrt(cfg.headDim!), causal: cfg.causal!, causalOffset: cfg.causalOffset ?? cfg.tk! - cfg.tq!, keyMask: null,
      ...(cfg.kvStride ? { kvStride: cfg.kvStride } : {}),
    };
    if (cfg.keyMask) {
      // batch 0 pads its first keys, batch 1 masks every key (rows output 0), batch 2 sees all
      const mask = new Float32Array(p.batch * p.tk).fill(1);
      for (let j = 0; j < 4; j++) mask[j] = 0;
      if (p.batch > 1) mask.fill(0, p.tk, 2 * p.tk);
      p.keyMask = mask;
    }
    const qn = p.batch * p.heads * p.tq * p.headDim;
    const kn = p.batch * p.kvHeads * (p.kvStride ?? p.tk) * p.headDim;
    const rows = p.batch * p.heads * p.tq;
    await c.compare(
      {
        q: c.randn(qn), k: c.randn(kn), v: c.randn(kn), gOut: c.randn(qn), out: new Float32Array(qn), lse: new Float32Array(rows),
        gq: c.randn(qn), gk: c.randn(kn), gv: c.randn(kn),
      },
      ['out', 'lse', 'gq', 'gk', 'gv'],
      (kern, b) => {
        kern.attention(S(b.q), S(b.k), S(b.v), p, S(b.out), S(b.lse));
        kern.attentionBackward(S(b.q), S(b.k), S(b.v), S(b.out), S(b.lse), S(b.gOut), p, S(b.gq), S(b.gk), S(b.gv));
      },
      2e-5,
    );
  }
}

type Case = [name: string, run: (c: Ctx) => Promise<void>];

const cases: Case[] = [
  ['fill, affine, powScalar, axpy, sumSquares', async (c) => {
    const n = 1237;
    await c.compare({ out: new Float32Array(n) }, ['out'], (k, b) => k.fill(S(b.out), -2.5));
    await c.compare({ x: c.randn(n), out: new Float32Array(n) }, ['out'], (k, b) => k.affine(S(b.x), 1.7, -0.3, S(b.out)));
    await c.compare({ x: c.randu(n, 0.1, 3), out: new Float32Array(n) }, ['out'], (k, b) => k.powScalar(S(b.x), 1.5, S(b.out)));
    await c.compare({ x: c.randn(n), out: new Float32Array(n) }, ['out'], (k, b) => k.powScalar(S(b.x), 2, S(b.out)));
    await c.compare({ a: c.randn(n), b: c.randn(n) }, ['a'], (k, b) => k.axpy(S(b.a), -0.75, S(b.b), S(b.a)));
    await c.compare({ x: c.randn(70001) }, [], (k, b) => k.sumSquares(S(b.x)), 1e-9);
  }],

  ['gather and scatter (permutes, slices, broadcast adjoints)', async (c) => {
    const x = c.randn(105);
    // transpose of the last two axes, a slice with an offset, a broadcast (stride 0)
    const views: [number[], number[], number, number][] = [
      [[3, 7, 5], [35, 1, 7], 0, 105],
      [[3, 2, 7], [35, 7, 1], 14, 42],
      [[4, 3, 5, 7], [0, 35, 7, 1], 0, 420],
      [[5, 3], [7, 35], 2, 15],
      [[], [], 17, 1],
    ];
    for (const [s, st, off, size] of views) {
      await c.compare({ x, out: new Float32Array(size) }, ['out'], (k, b) => k.gather(S(b.x), s, st, off, S(b.out)));
      for (const accumulate of [false, true]) {
        await c.compare({ g: c.randn(size), out: c.randn(105) }, ['out'], (k, b) => k.scatter(S(b.g), s, st, off, S(b.out), accumulate));
      }
    }
    // accumulate into a broadcast last axis (sums a row into one element)
    await c.compare({ g: c.randn(27), out: c.randn(3) }, ['out'], (k, b) => k.scatter(S(b.g), [3, 9], [1, 0], 0, S(b.out), true));
  }],

  ['unary ops and their backward', async (c) => {
    const ops: UnaryOp[] = ['neg', 'exp', 'log', 'tanh', 'sqrt', 'rsqrt', 'sigmoid', 'abs', 'square', 'relu', 'silu', 'gelu_tanh', 'gelu_erf'];
    const n = 1031;
    for (const op of ops) {
      const positive = op === 'log' || op === 'sqrt' || op === 'rsqrt';
      const x = positive ? c.randu(n, 0.05, 4) : c.randn(n, 2);
      await c.compare({ x, y: new Float32Array(n) }, ['y'], (k, b) => k.unary(op, S(b.x), S(b.y)), 2e-6);
      await c.compare({ x, y: new Float32Array(n), gy: c.randn(n), gx: new Float32Array(n) }, ['gx'], (k, b) => {
        k.unary(op, S(b.x), S(b.y));
        k.unaryBackward(op, S(b.x), S(b.y), S(b.gy), S(b.gx));
      }, 2e-6);
    }
  }],

  ['tanh, GELU and SiLU across their piecewise branches (series, exp form, saturation) and vector tails', async (c) => {
    const edges = [0, 1e-7, 1e-3, 0.1, 0.2999, 0.3, 0.3001, 0.37, 0.5, 1, 2.5, 9, 20, 44, 86.9, 87.1, 90, 1e4];
    const values = [...edges, ...edges.map((v) => -v)];
    for (const n of [values.length, 13, 8, 5]) {
      const x = Float32Array.from({ length: n }, (_, i) => values[i % values.length]! * (1 + (i >= values.length ? 0.5 : 0)));
      for (const op of ['tanh', 'gelu_tanh', 'silu'] as const) {
        await c.compare({ x, y: new Float32Array(n) }, ['y'], (k, b) => k.unary(op, S(b.x), S(b.y)), 2e-6);
        await c.compare({ x, y: new Float32Array(n), gy: c.randn(n), gx: new Float32Array(n) }, ['gx'], (k, b) => {
          k.unary(op, S(b.x), S(b.y));
          k.unaryBackward(op, S(b.x), S(b.y), S(b.gy), S(b.gx));
        }, 2e-6);
      }
    }
  }],

  ['binary ops with broadcasting, out aliasing a', async (c) => {
    const ops: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'max', 'min'];
    const shapes: [number[], number[], number[], number, number][] = [
      // outShape, aStrides, bStrides, aSize, bSize
      [[4, 5, 19], [95, 19, 1], [95, 19, 1], 380, 380],
      [[4, 5, 19], [95, 19, 1], [0, 0, 1], 380, 19],
      [[4, 5, 19], [0, 1, 0], [95, 19, 1], 5, 380],
      [[7, 3], [1, 7], [3, 1], 21, 21],
      [[], [], [], 1, 1],
    ];
    for (const op of ops) {
      for (const [shape, sa, sb, na, nb] of shapes) {
        const size = shape.reduce((p, d) => p * d, 1);
        const b = op === 'div' ? c.randu(nb, 0.5, 2) : c.randn(nb);
        await c.compare({ a: c.randn(na), b, out: new Float32Array(size) }, ['out'], (k, x) => k.binary(op, S(x.a), sa, S(x.b), sb, S(x.out), shape));
      }
      await c.compare({ a: c.randn(380), b: c.randn(19) }, ['a'], (k, x) => k.binary(op, S(x.a), [95, 19, 1], S(x.b), [0, 0, 1], S(x.a), [4, 5, 19]));
    }
  }],

  ['sum and max reductions', async (c) => {
    for (const [outer, reduce, inner] of [[3, 17, 1], [1, 1000, 1], [2, 9, 301], [5, 1, 7], [1, 3, 1]]) {
      const x = c.randn(outer * reduce * inner);
      await c.compare({ x, out: new Float32Array(outer * inner) }, ['out'], (k, b) => k.sumReduce(S(b.x), outer, reduce, inner, S(b.out)));
      await c.compare({ x, out: new Float32Array(outer * inner) }, ['out'], (k, b) => k.maxReduce(S(b.x), outer, reduce, inner, S(b.out)));
    }
  }],

  ['quantized matmuls (bf16, int8, nf4, nf4 double-quantized): forward and input gradient, decode and prefill sizes', async (c) => {
    for (const [m, n, k] of [[1, 33, 70], [4, 130, 257], [65, 70, 300]]) {
      for (const [fmt, dq] of [['bf16', false], ['int8', false], ['nf4', false], ['nf4', true]] as const) {
        const w = quantize(c.randn(n * k, 0.1), n, k, fmt, { doubleQuant: dq });
        // 1e-4: the bf16 decode path on AVX-512 BF16 CPUs splits activations into two bf16 halves
        await c.compare({ x: c.randn(m * k), out: new Float32Array(m * n) }, ['out'], (kk, b) => kk.quantMatmul(S(b.x), w, m, S(b.out)), 1e-4);
        await c.compare({ gy: c.randn(m * n), gx: new Float32Array(m * k) }, ['gx'], (kk, b) => kk.quantMatmulInputGrad(S(b.gy), w, m, S(b.gx)), 1e-4);
      }
    }
  }],

  ['matmul: odd sizes, transposes, batch strides, accumulate', async (c) => {
    const shapes: [number, number, number, number][] = [
      // batch, m, n, k
      [1, 1, 1, 1], [1, 7, 5, 3], [1, 13, 17, 11], [3, 6, 16, 9], [2, 31, 33, 35], [1, 150, 37, 300], [1, 5, 3100, 7], [1, 97, 130, 520],
    ];
    for (const [batch, m, n, k] of shapes) await c.matmulLayouts(batch, m, n, k, c.randn);
    // k = 0: overwrite gives zeros, accumulate leaves C alone
    for (const accumulate of [false, true]) {
      const p: MatmulParams = { batch: 1, m: 3, n: 4, k: 0, transA: false, transB: false, strideA: 0, strideB: 0, accumulate };
      await c.compare({ a: new Float32Array(0), b: new Float32Array(0), c: c.randn(12) }, ['c'], (kern, x) => kern.matmul(S(x.a), S(x.b), S(x.c), p));
    }
  }],

  ['matmul with few rows (B streamed in place): m = 1..24, both layouts of A and B, k and n tails, accumulate', async (c) => {
    // n crosses the 4-column (nt) and 16-column (nn) groups and the 128-column blocks, k the 8-lane
    // tail and the 128-row slabs of the nn kernel
    const nks: [number, number][] = [[1, 1], [5, 7], [17, 9], [33, 130], [130, 17], [300, 300], [3, 1], [16, 8], [4, 257]];
    for (let m = 1; m <= 24; m++) {
      for (const [n, k] of [nks[m % nks.length], nks[(m * 5 + 3) % nks.length]]) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            for (const accumulate of [false, true]) {
              const p: MatmulParams = { batch: 1, m, n, k, transA, transB, strideA: 0, strideB: 0, accumulate };
              await c.compare({ a: c.srandn(m * k), b: c.srandn(k * n), c: c.srandn(m * n) }, ['c'], (kern, x) => kern.matmul(S(x.a), S(x.b), S(x.c), p), 2e-5 * Math.sqrt(k));
            }
          }
        }
      }
    }
  }],

  ['matmul with few rows: batches with their own or broadcast operands; sizes around the small-m limits', async (c) => {
    for (const [batch, m, n, k] of [[3, 1, 21, 19], [2, 4, 130, 33], [4, 13, 37, 64], [3, 2, 1, 9]]) await c.matmulLayouts(batch, m, n, k, c.srandn);
    // the native streamed path stops at 64 rows and at 2^19 floats of A; either side of both must agree
    for (const [m, n, k] of [[64, 70, 40], [65, 70, 40], [40, 21, 13107], [41, 21, 12800]]) {
      for (const transB of [false, true]) {
        const p: MatmulParams = { batch: 1, m, n, k, transA: false, transB, strideA: 0, strideB: 0, accumulate: false };
        await c.compare({ a: c.srandn(m * k), b: c.srandn(k * n), c: new Float32Array(m * n) }, ['c'], (kern, x) => kern.matmul(S(x.a), S(x.b), S(x.c), p), 2e-5 * Math.sqrt(k));
      }
    }
  }],

  ['softmax, logSoftmax and cross-entropy with their backward', async (c) => {
    for (const [rows, cols] of [[5, 1], [7, 13], [3, 1001]]) {
      const x = c.randn(rows * cols, 3);
      const gy = c.randn(rows * cols);
      await c.compare({ x, gy, y: new Float32Array(rows * cols), gx: new Float32Array(rows * cols) }, ['y', 'gx'], (k, b) => {
        k.softmax(S(b.x), rows, cols, S(b.y));
        k.softmaxBackward(S(b.y), S(b.gy), rows, cols, S(b.gx));
      });
      await c.compare({ x, gy, y: new Float32Array(rows * cols), gx: new Float32Array(rows * cols) }, ['y', 'gx'], (k, b) => {
        k.logSoftmax(S(b.x), rows, cols, S(b.y));
        k.logSoftmaxBackward(S(b.y), S(b.gy), rows, cols, S(b.gx));
      });
      const targets = c.ints(rows, cols);
      targets[rows - 1] = -100;
      await c.compare(
        { x, targets, gl: c.randn(rows), loss: new Float32Array(rows), lse: new Float32Array(rows), gx: new Float32Array(rows * cols) },
        ['loss', 'lse', 'gx'],
        (k, b) => {
          k.crossEntropy(S(b.x), I32(b.targets), rows, cols, -100, S(b.loss), S(b.lse));
          k.crossEntropyBackward(S(b.x), S(b.lse), I32(b.targets), S(b.gl), rows, cols, -100, S(b.gx));
        },
      );
    }
  }],

  ['layer norm and RMS norm with their backward (weights accumulate)', async (c) => {
    for (const [rows, cols] of [[1, 3], [9, 37], [4, 1029]]) {
      for (const affine of [false, true]) {
        const bufs = {
          x: c.randn(rows * cols, 2), w: c.randn(cols), bias: c.randn(cols), gy: c.randn(rows * cols),
          y: new Float32Array(rows * cols), mean: new Float32Array(rows), rstd: new Float32Array(rows),
          gx: new Float32Array(rows * cols), gw: c.randn(cols), gb: c.randn(cols),
        };
        await c.compare(bufs, ['y', 'mean', 'rstd', 'gx', 'gw', 'gb'], (k, b) => {
          const w = affine ? S(b.w) : null;
          k.layerNorm(S(b.x), w, affine ? S(b.bias) : null, rows, cols, 1e-5, S(b.y), S(b.mean), S(b.rstd));
          k.layerNormBackward(S(b.x), w, S(b.mean), S(b.rstd), S(b.gy), rows, cols, S(b.gx), affine ? S(b.gw) : null, affine ? S(b.gb) : null);
        }, 2e-5);
        await c.compare(bufs, ['y', 'rstd', 'gx', 'gw'], (k, b) => {
          const w = affine ? S(b.w) : null;
          k.rmsNorm(S(b.x), w, rows, cols, 1e-6, S(b.y), S(b.rstd));
          k.rmsNormBackward(S(b.x), w, S(b.rstd), S(b.gy), rows, cols, S(b.gx), affine ? S(b.gw) : null);
        }, 2e-5);
      }
    }
  }],

  ['embedding and its backward (repeated ids)', async (c) => {
    const vocab = 11;
    const dim = 19;
    const ids = c.ints(23, vocab);
    ids[3] = ids[7] = ids[20];
    await c.compare({ w: c.randn(vocab * dim), ids, out: new Float32Array(23 * dim), gy: c.randn(23 * dim), gw: c.randn(vocab * dim) }, ['out', 'gw'], (k, b) => {
      k.embedding(S(b.w), I32(b.ids), dim, S(b.out));
      k.embeddingBackward(S(b.gy), I32(b.ids), dim, S(b.gw));
    });
  }],

  ['attention forward and backward: causal, offsets, key masks, GQA, all-masked rows', async (c) => {
    const configs: Partial<AttentionParams>[] = [
      { batch: 2, heads: 3, kvHeads: 3, tq: 5, tk: 5, headDim: 7, causal: false },
      { batch: 2, heads: 4, kvHeads: 2, tq: 37, tk: 37, headDim: 16, causal: true },
      { batch: 1, heads: 2, kvHeads: 1, tq: 3, tk: 41, headDim: 5, causal: true },
      { batch: 2, heads: 2, kvHeads: 2, tq: 6, tk: 6, headDim: 4, causal: true, causalOffset: -2 },
      { batch: 3, heads: 2, kvHeads: 2, tq: 33, tk: 33, headDim: 9, causal: true, keyMask: new Float32Array(0) },
    ];
    await attentionCases(c, configs);
  }],
  ['conv2d and maxPool2d with their backward', async (c) => {
    const convs: Conv2dParams[] = [
      { n: 2, cin: 3, h: 9, w: 7, cout: 5, kh: 3, kw: 3, stride: 1, pad: 1, oh: 9, ow: 7 },
      { n: 1, cin: 2, h: 10, w: 11, cout: 3, kh: 3, kw: 2, stride: 2, pad: 0, oh: 4, ow: 5 },
    ];
    for (const p of convs) {
      const xn = p.n * p.cin * p.h * p.w;
      const wn = p.cout * p.cin * p.kh * p.kw;
      const yn = p.n * p.cout * p.oh * p.ow;
      await c.compare(
        { x: c.randn(xn), w: c.randn(wn), bias: c.randn(p.cout), y: new Float32Array(yn), gy: c.randn(yn), gx: c.randn(xn), gw: c.randn(wn), gb: c.randn(p.cout) },
        ['y', 'gx', 'gw', 'gb'],
        (k, b) => {
          k.conv2d(S(b.x), S(b.w), S(b.bias), p, S(b.y));
          k.conv2dBackward(S(b.x), S(b.w), S(b.gy), p, S(b.gx), S(b.gw), S(b.gb));
        },
        2e-5,
      );
    }
    const pool = { n: 2, c: 3, h: 9, w: 8, k: 2, stride: 2, oh: 4, ow: 4 };
    const size = pool.n * pool.c * pool.oh * pool.ow;
    await c.compare(
      { x: c.randn(2 * 3 * 9 * 8), y: new Float32Array(size), argmax: new Int32Array(size), gy: c.randn(size), gx: c.randn(2 * 3 * 9 * 8) },
      ['y', 'argmax', 'gx'],
      (k, b) => {
        k.maxPool2d(S(b.x), pool, S(b.y), I32(b.argmax));
        k.maxPool2dBackward(S(b.gy), I32(b.argmax), pool, S(b.gx));
      },
    );
  }],

  ['adamw', async (c) => {
    const n = 1001;
    await c.compare({ p: c.randn(n), g: c.randn(n), m: c.randn(n, 0.1), v: c.randu(n, 0, 0.1) }, ['p', 'm', 'v'], (k, b) =>
      k.adamw(S(b.p), S(b.g), S(b.m), S(b.v), { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 3 }),
    );
  }],

  ['fused VeRA branch: slices of larger projections, gx overwrite or accumulate', async (c) => {
    for (const [rows, inF, outF, rank, maxIn, maxOut] of [[1, 1, 1, 1, 1, 1], [7, 13, 9, 4, 20, 11], [37, 64, 48, 16, 64, 50]]) {
      for (const accumulateGx of [false, true]) {
        const p = { rows, inFeatures: inF, outFeatures: outF, rank, lda: maxIn };
        await c.compare(
          {
            x: c.randn(rows * inF), a: c.randn(rank * maxIn), b: c.randn(maxOut * rank), ld: c.randn(rank), lb: c.randn(outF),
            y: new Float32Array(rows * outF), ax: new Float32Array(rows * rank), gy: c.randn(rows * outF),
            gx: c.randn(rows * inF), gld: c.randn(rank), glb: c.randn(outF),
          },
          ['y', 'ax', 'gx', 'gld', 'glb'],
          (k, b) => {
            k.veraForward(S(b.x), S(b.a), S(b.b), S(b.ld), S(b.lb), p, S(b.y), S(b.ax));
            k.veraBackward(S(b.a), S(b.b), S(b.ld), S(b.lb), S(b.ax), S(b.gy), p, S(b.gx), accumulateGx, S(b.gld), S(b.glb));
          },
          3e-5,
        );
      }
    }
  }],

  // (cases added after the native test's: appended so the earlier cases keep their random inputs)
  ['ragged attention: sequences of several tokens and of one, GQA, caches filled in place', async (c) => {
    for (const [heads, kvHeads, headDim, tokens, past] of [
      [4, 2, 8, [3, 1, 5], [0, 7, 2]],
      [3, 3, 5, [1, 1], [4, 0]],
      [2, 1, 16, [6], [9]],
    ] as [number, number, number, number[], number[]][]) {
      const T = tokens.reduce((s, t) => s + t, 0);
      const caps = tokens.map((t, i) => t + past[i]! + 2);
      const bufs: Bufs = { q: c.randn(T * heads * headDim), kn: c.randn(T * kvHeads * headDim), vn: c.randn(T * kvHeads * headDim), out: new Float32Array(T * heads * headDim) };
      caps.forEach((cap, i) => {
        bufs[`kc${i}`] = c.randn(cap * kvHeads * headDim);
        bufs[`vc${i}`] = c.randn(cap * kvHeads * headDim);
      });
      const p = { heads, kvHeads, headDim, scale: 1 / Math.sqrt(headDim), tokens: Int32Array.from(tokens), past: Int32Array.from(past) };
      await c.compare(bufs, ['out', ...caps.flatMap((_, i) => [`kc${i}`, `vc${i}`])], (k, b) =>
        k.raggedAttention(S(b.q), S(b.kn), S(b.vn), caps.map((_, i) => S(b[`kc${i}`]!)), caps.map((_, i) => S(b[`vc${i}`]!)), p, S(b.out)), 2e-5);
    }
  }],

  ['routed VeRA (inference): per-row slots, unrouted rows, accumulate, shared x·Aᵀ written then read', async (c) => {
    for (const [rows, inF, outF, rank, lda, numSlots] of [[5, 13, 9, 4, 20, 3], [33, 64, 48, 16, 64, 2]]) {
      const slots = Int32Array.from({ length: rows }, (_, i) => (i % 4 === 3 ? -1 : i % numSlots));
      const p = { rows, inFeatures: inF, outFeatures: outF, rank, lda, numSlots };
      for (const accumulate of [false, true]) {
        await c.compare(
          {
            x: c.randn(rows * inF), a: c.randn(rank * lda), b: c.randn((outF + 2) * rank), ld: c.randn(numSlots * rank), lb: c.randn(numSlots * outF),
            slots, y: c.randn(rows * outF), y2: c.randn(rows * outF), ax: new Float32Array(rows * rank),
          },
          ['y', 'y2', 'ax'],
          (k, b) => {
            k.veraRoutedForward(S(b.x), S(b.a), S(b.b), S(b.ld), S(b.lb), I32(b.slots), p, S(b.y), accumulate, { ax: S(b.ax), ready: false });
            k.veraRoutedForward(S(b.x), S(b.a), S(b.b), S(b.ld), S(b.lb), I32(b.slots), p, S(b.y2), accumulate, { ax: S(b.ax), ready: true });
          },
          3e-5,
        );
      }
    }
  }],

  ['routed LoRA (inference, backends that have it): groups of different ranks, tokens in no group, an empty group', async (c) => {
    if (!c.k.loraRoutedForward) return; // optional: the engine composes gathers and products instead
    for (const [tokens, inF, outF] of [[7, 13, 9], [40, 70, 33]]) {
      const ranks = [4, 1, 8, 3];
      // token t goes to group t % 5; group 4 does not exist, so those tokens keep their y
      const rows = ranks.map((_, g) => Int32Array.from({ length: tokens }, (_, t) => t).filter((t) => t % 5 === g && !(g === 3 && tokens < 10)));
      const inputs: Bufs = { x: c.randn(tokens * inF), y: c.randn(tokens * outF) };
      ranks.forEach((r, g) => {
        inputs[`a${g}`] = c.randn(r * inF);
        inputs[`b${g}`] = c.randn(outF * r);
      });
      await c.compare(inputs, ['y'], (k, b) => k.loraRoutedForward!(S(b.x), S(b.y), inF, outF,
        ranks.map((r, g) => ({ a: S(b[`a${g}`]), b: S(b[`b${g}`]), rank: r, scaling: 0.5 + g, rows: rows[g] }))), 3e-5);
    }
  }],

  ['attention reading a preallocated KV cache in place (kvStride > tk): forward and backward, masks, GQA', async (c) => {
    await attentionCases(c, [
      // 9 of 13 positions used, one new token, grouped heads
      { batch: 2, heads: 4, kvHeads: 2, tq: 1, tk: 9, headDim: 8, causal: true, kvStride: 13 },
      { batch: 1, heads: 3, kvHeads: 1, tq: 4, tk: 12, headDim: 5, causal: true, kvStride: 20, keyMask: new Float32Array(0) },
    ]);
  }],

  ['argmaxRows: ties, NaNs, rows of −∞ or no number, odd widths', async (c) => {
    for (const [rows, cols] of [[1, 1], [3, 7], [5, 1031], [2, 49152]]) {
      const x = c.randn(rows * cols);
      if (cols >= 7) {
        const at = (r: number, i: number): number => r * cols + i;
        x[at(0, 3)] = 50; // a tie: the first one wins
        x[at(0, cols - 1)] = 50;
        x[at(0, 1)] = NaN; // skipped, before and after the max
        x[at(0, 5)] = NaN;
        for (let i = 0; i < cols; i++) x[at(1, i)] = -Infinity; // no finite value: index 0
        x[at(1, 2)] = NaN;
        for (let i = 0; i < cols; i++) x[at(2, i)] = NaN; // no number: index 0
      }
      await c.compare({ x, out: new Float32Array(rows) }, ['out'], (k, b) => k.argmaxRows(S(b.x), rows, cols, S(b.out)), 0);
    }
  }],

  ['rotary embedding and its transpose: odd rows and heads, head dims 2 to 130', async (c) => {
    for (const [rows, heads, dim] of [[1, 1, 2], [7, 3, 10], [5, 9, 64], [3, 2, 130]]) {
      // cos/sin of real angles, halves duplicated as Llama's; the kernel reads each half on its own, so also random ones
      for (const real of [true, false]) {
        const cos = new Float32Array(rows * dim);
        const sin = new Float32Array(rows * dim);
        const angles = c.randu(rows * dim, -20, 20);
        for (let r = 0; r < rows; r++) {
          for (let i = 0; i < dim; i++) {
            const a = angles[r * dim + (real ? i % (dim / 2) : i)];
            cos[r * dim + i] = Math.cos(a);
            sin[r * dim + i] = real ? Math.sin(a) : Math.sin(1.7 * a + 0.3);
          }
        }
        const n = rows * heads * dim;
        await c.compare({ x: c.randn(n, 2), cos, sin, y: new Float32Array(n), g: c.randn(n), gx: new Float32Array(n) }, ['y', 'gx'], (k, b) => {
          k.rotary(S(b.x), S(b.cos), S(b.sin), { rows, heads, dim, transpose: false }, S(b.y));
          k.rotary(S(b.g), S(b.cos), S(b.sin), { rows, heads, dim, transpose: true }, S(b.gx));
        });
      }
    }
  }],
];

/** The suite's case names, in order. */
export const kernelSuiteCases: readonly string[] = cases.map(([name]) => name);

/**
 * Runs every case (or those `opts.filter` accepts) of `k` against `ref` and returns one result per
 * case; a case stops at its first mismatch or error, the others still run.
 */
export async function runKernelSuite(k: Kernels, ref: Kernels, opts: SuiteOptions = {}): Promise<SuiteResult[]> {
  const out: SuiteResult[] = [];
  const ctx = new Ctx(k, ref, opts.tolScale ?? 1);
  for (const [name, run] of cases) {
    if (opts.filter && !opts.filter(name)) continue;
    const t0 = Date.now();
    let r: SuiteResult;
    try {
      await run(ctx);
      r = { name, ok: true, ms: Date.now() - t0 };
    } catch (e) {
      r = { name, ok: false, message: e instanceof Error ? e.message : String(e), ms: Date.now() - t0 };
    }
    out.push(r);
    opts.onResult?.(r);
  }
  return out;
}
