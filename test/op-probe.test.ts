// Malformed arguments against every exported op (F.*) and every kernel of every registered backend
// (and the native addon called directly, without the TypeScript checks in front of it): each must
// end in a thrown Error with a one-line message, never a crash, an out-of-bounds read or a silent
// result. The kernel probes are data-driven: one valid call per kernel, then every argument is
// mutated in turn (a short buffer, a huge, negative, fractional or NaN size, an unknown op, an index
// array pointing outside its table), so a new kernel needs only its valid call here and a new backend
// is covered by registering it.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { backendNames, useBackend } from '../src/backends/index.js';
import { loadAddon, nativeKernels } from '../src/backends/native/index.js';
import { F, Rng, Tensor, kernels, noGrad, quantize } from '../src/tensor/index.js';
import type { Kernels, Storage } from '../src/tensor/index.js';

/** `fn` throws an Error whose message is one non-empty line. */
function throwsOneLine(fn: () => unknown, what: string): void {
  let thrown: unknown = null;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  assert.ok(thrown !== null, `${what}: did not throw`);
  assert.ok(thrown instanceof Error, `${what}: threw a non-Error ${String(thrown)}`);
  assert.ok(thrown.message.length > 0 && !thrown.message.includes('\n'), `${what}: message is not one line: ${JSON.stringify(thrown.message)}`);
}

// ---------------------------------------------------------------- kernels

type Arg = unknown;
/** Builds a valid call's arguments on a backend (fresh buffers each time). */
type ValidCall = (k: Kernels) => Arg[];

const st = (k: Kernels, n: number, fill = 0.5): Storage => k.fromArray(new Float32Array(n).fill(fill));
const i32 = (...v: number[]): Int32Array => Int32Array.from(v);

/** Params fields that are real-valued, or integers allowed to be negative: their mutations may be valid calls. */
const FREE_FIELDS = new Set(['scale', 'causalOffset', 'lr', 'beta1', 'beta2', 'eps', 'weightDecay', 'step']);
/** Positional numbers that are real-valued (or may be negative), per kernel. */
const FREE_POSITIONS: Record<string, number[]> = {
  fill: [1], affine: [1, 2], powScalar: [1], axpy: [1], crossEntropy: [4], crossEntropyBackward: [6], layerNorm: [5], rmsNorm: [4],
};
/** Int32Array outputs (written, not read as indices): a short one must be refused. */
const INT_OUTPUTS: Record<string, number[]> = { maxPool2d: [3] };
/** Kernels whose buffers' own lengths are the size (an empty buffer is a valid, empty call). */
const LENGTH_IS_SIZE = new Set(['fill', 'sumSquares', 'unary', 'unaryBackward', 'affine', 'powScalar', 'axpy', 'adamw']);

const attnP = { batch: 1, heads: 2, kvHeads: 1, tq: 3, tk: 4, headDim: 2, scale: 0.5, causal: true, causalOffset: 1, keyMask: new Float32Array([1, 1, 0, 1]), kvStride: 5 };
const convP = { n: 1, cin: 2, h: 4, w: 4, cout: 3, kh: 2, kw: 2, stride: 2, pad: 1, oh: 3, ow: 3 };
const poolP = { n: 1, c: 2, h: 4, w: 4, k: 2, stride: 2, oh: 2, ow: 2 };
const veraP = { rows: 3, inFeatures: 4, outFeatures: 5, rank: 2, lda: 6 };

/** One valid call per kernel (arguments in the interface's order). Every kernel must appear here. */
const KERNEL_CALLS: Record<string, ValidCall> = {
  fill: (k) => [st(k, 4), 1.5],
  gather: (k) => [st(k, 12), [2, 3], [1, 4], 1, st(k, 6)],
  scatter: (k) => [st(k, 6), [2, 3], [1, 4], 1, st(k, 12), true],
  unary: (k) => ['exp', st(k, 5), st(k, 5)],
  argmaxRows: (k) => [st(k, 6), 2, 3, st(k, 2)],
  rotary: (k) => [st(k, 2 * 3 * 4), st(k, 2 * 4), st(k, 2 * 4), { rows: 2, heads: 3, dim: 4, transpose: false }, st(k, 2 * 3 * 4)],
  unaryBackward: (k) => ['tanh', st(k, 5), st(k, 5), st(k, 5), st(k, 5)],
  binary: (k) => ['add', st(k, 6), [3, 1], st(k, 3), [0, 1], st(k, 6), [2, 3]],
  affine: (k) => [st(k, 4), 2, 1, st(k, 4)],
  powScalar: (k) => [st(k, 4), 3, st(k, 4)],
  axpy: (k) => [st(k, 4), 2, st(k, 4), st(k, 4)],
  sumReduce: (k) => [st(k, 24), 2, 3, 4, st(k, 8)],
  maxReduce: (k) => [st(k, 24), 2, 3, 4, st(k, 8)],
  sumSquares: (k) => [st(k, 7)],
  quantMatmul: (k) => [st(k, 2 * 32), quantize(new Float32Array(160).fill(0.25), 5, 32, 'nf4'), 2, st(k, 2 * 5)],
  quantMatmulInputGrad: (k) => [st(k, 2 * 5), quantize(new Float32Array(160).fill(0.25), 5, 32, 'nf4'), 2, st(k, 2 * 32)],
  matmul: (k) => [st(k, 2 * 3 * 4), st(k, 4 * 5), st(k, 2 * 3 * 5), { batch: 2, m: 3, n: 5, k: 4, transA: false, transB: true, strideA: 12, strideB: 0, accumulate: false }],
  softmax: (k) => [st(k, 6), 2, 3, st(k, 6)],
  softmaxBackward: (k) => [st(k, 6), st(k, 6), 2, 3, st(k, 6)],
  logSoftmax: (k) => [st(k, 6), 2, 3, st(k, 6)],
  logSoftmaxBackward: (k) => [st(k, 6), st(k, 6), 2, 3, st(k, 6)],
  crossEntropy: (k) => [st(k, 6), i32(2, -100), 2, 3, -100, st(k, 2), st(k, 2)],
  crossEntropyBackward: (k) => [st(k, 6), st(k, 2), i32(1, 0), st(k, 2), 2, 3, -100, st(k, 6)],
  layerNorm: (k) => [st(k, 6), st(k, 3), st(k, 3), 2, 3, 1e-5, st(k, 6), st(k, 2), st(k, 2)],
  layerNormBackward: (k) => [st(k, 6), st(k, 3), st(k, 2), st(k, 2), st(k, 6), 2, 3, st(k, 6), st(k, 3), st(k, 3)],
  rmsNorm: (k) => [st(k, 6), st(k, 3), 2, 3, 1e-6, st(k, 6), st(k, 2)],
  rmsNormBackward: (k) => [st(k, 6), st(k, 3), st(k, 2), st(k, 6), 2, 3, st(k, 6), st(k, 3)],
  embedding: (k) => [st(k, 4 * 3), i32(3, 0, 2), 3, st(k, 9)],
  embeddingBackward: (k) => [st(k, 9), i32(3, 0, 3), 3, st(k, 4 * 3)],
  attention: (k) => [st(k, 1 * 2 * 3 * 2), st(k, 1 * 1 * 5 * 2), st(k, 1 * 1 * 5 * 2), { ...attnP }, st(k, 12), st(k, 6)],
  attentionBackward: (k) => [st(k, 12), st(k, 10), st(k, 10), st(k, 12), st(k, 6), st(k, 12), { ...attnP }, st(k, 12), st(k, 10), st(k, 10)],
  raggedAttention: (k) => [st(k, 3 * 2 * 8), st(k, 3 * 1 * 8), st(k, 3 * 1 * 8), [st(k, 4 * 8), st(k, 2 * 8)], [st(k, 4 * 8), st(k, 2 * 8)],
    { heads: 2, kvHeads: 1, headDim: 8, scale: 0.3, tokens: i32(2, 1), past: i32(1, 1) }, st(k, 3 * 2 * 8)],
  conv2d: (k) => [st(k, 32), st(k, 3 * 2 * 2 * 2), st(k, 3), { ...convP }, st(k, 27)],
  conv2dBackward: (k) => [st(k, 32), st(k, 24), st(k, 27), { ...convP }, st(k, 32), st(k, 24), st(k, 3)],
  maxPool2d: (k) => [st(k, 32), { ...poolP }, st(k, 8), new Int32Array(8)],
  maxPool2dBackward: (k) => [st(k, 8), i32(0, 3, 8, 10, 17, 19, 26, 31), { ...poolP }, st(k, 32)],
  adamw: (k) => [st(k, 4), st(k, 4), st(k, 4), st(k, 4), { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 1 }],
  veraForward: (k) => [st(k, 12), st(k, 12), st(k, 10), st(k, 2), st(k, 5), { ...veraP }, st(k, 15), st(k, 6)],
  veraBackward: (k) => [st(k, 12), st(k, 10), st(k, 2), st(k, 5), st(k, 6), st(k, 15), { ...veraP }, st(k, 12), false, st(k, 2), st(k, 5)],
  veraRoutedForward: (k) => [st(k, 12), st(k, 12), st(k, 10), st(k, 4), st(k, 10), i32(0, -1, 1), { ...veraP, numSlots: 2 }, st(k, 15), false,
    { ax: st(k, 6), ready: false }],
  loraRoutedForward: (k) => [st(k, 3 * 4), st(k, 3 * 5), 4, 5,
    [{ a: st(k, 2 * 4), b: st(k, 5 * 2), rank: 2, scaling: 0.5, rows: i32(0, 2) }, { a: st(k, 4), b: st(k, 5), rank: 1, scaling: 1, rows: i32(1) }]],
};

/** Memory functions: not kernels over sizes (alloc/fromArray/read/write/free are probed by the ops). */
const NOT_KERNELS = new Set(['name', 'alloc', 'allocUnset', 'fromArray', 'read', 'write', 'free']);

interface Mutation {
  label: string;
  args: Arg[];
  /** false: the mutated call may be valid (it must still not crash); true: it must throw. */
  mustThrow: boolean;
}

const isStorage = (v: unknown): v is Storage => v !== null && typeof v === 'object' && !Array.isArray(v) && typeof (v as Storage).length === 'number';

/**
 * Every single-argument mutation of a valid call. `ignored`: argument positions whose params
 * object this backend does not read (the addon's maxPool2dBackward takes no sizes), so their
 * mutations may pass.
 */
function mutations(kernel: string, k: Kernels, make: ValidCall, ignored: readonly number[]): Mutation[] {
  const out: Mutation[] = [];
  const at = (i: number, v: Arg, label: string, mustThrow: boolean): void => {
    const args = make(k);
    args[i] = v;
    out.push({ label: `arg ${i} ${label}`, args, mustThrow });
  };
  make(k).forEach((a, i) => {
    if (typeof a === 'string') at(i, 'no_such_op', 'unknown op', true);
    else if (typeof a === 'number') {
      const free = FREE_POSITIONS[kernel]?.includes(i) ?? false;
      for (const v of [1e9, -1, 0.5, NaN]) at(i, v, `= ${v}`, !free);
    } else if (a instanceof Int32Array) {
      if (INT_OUTPUTS[kernel]?.includes(i)) at(i, new Int32Array(0), 'empty', true);
      else if (a.length > 0) at(i, new Int32Array(a.length).fill(1e9), 'indices 1e9', true);
    } else if (Array.isArray(a) && a.every((e) => typeof e === 'number')) {
      for (let j = 0; j < a.length; j++) {
        for (const v of [1e9, 0.5]) {
          const arr = [...(a as number[])];
          arr[j] = v;
          at(i, arr, `[${j}] = ${v}`, true);
        }
      }
    } else if (Array.isArray(a)) {
      const arr = [...(a as Storage[])];
      arr[0] = k.alloc(1); // one cache of a list too short
      at(i, arr, '[0] short', true);
    } else if (isStorage(a)) {
      at(i, k.alloc(0), 'empty buffer', !LENGTH_IS_SIZE.has(kernel) && a.length > 0);
    } else if (a !== null && typeof a === 'object') {
      // a params object: each numeric field mutated, each buffer or index field made malformed
      const reads = !ignored.includes(i);
      const field = (name: string, v: unknown, label: string, mustThrow: boolean): void => {
        const args = make(k);
        args[i] = { ...(args[i] as object), [name]: v };
        out.push({ label: `${name} ${label}`, args, mustThrow: reads && mustThrow });
      };
      for (const [name, v] of Object.entries(a as Record<string, unknown>)) {
        if (typeof v === 'number') for (const bad of [1e9, -1, 0.5, NaN]) field(name, bad, `= ${bad}`, !FREE_FIELDS.has(name));
        else if (v instanceof Float32Array) field(name, new Float32Array(1), 'short', true);
        else if (v instanceof Uint8Array) field(name, new Uint8Array(1), 'short', true);
        else if (v instanceof Int32Array) field(name, new Int32Array(v.length).fill(1e9), 'indices 1e9', true);
        else if (isStorage(v)) field(name, k.alloc(0), 'empty', true);
      }
    }
  });
  return out;
}

function call(k: Kernels, name: string, args: Arg[]): unknown {
  const fn = (k as unknown as Record<string, (...a: Arg[]) => unknown>)[name];
  return fn.apply(k, args);
}

function probeKernels(label: string, k: Kernels, ignored: Record<string, number[]> = {}): void {
  test(`${label}: every kernel has a probe`, () => {
    const missing = Object.keys(k).filter((n) => !NOT_KERNELS.has(n) && typeof (k as unknown as Record<string, unknown>)[n] === 'function' && !(n in KERNEL_CALLS));
    assert.deepEqual(missing, [], 'kernels without a valid call in KERNEL_CALLS');
  });
  for (const [name, make] of Object.entries(KERNEL_CALLS)) {
    test(`${label}: ${name} refuses malformed arguments`, () => {
      call(k, name, make(k)); // the valid call runs
      let refused = 0;
      for (const m of mutations(name, k, make, ignored[name] ?? [])) {
        if (m.mustThrow) {
          throwsOneLine(() => call(k, name, m.args), `${name} ${m.label}`);
          refused++;
        } else {
          try {
            call(k, name, m.args);
          } catch (e) {
            assert.ok(e instanceof Error && !e.message.includes('\n'), `${name} ${m.label}: ${String(e)}`);
          }
        }
      }
      if (!LENGTH_IS_SIZE.has(name)) assert.ok(refused > 0, `${name}: no mutation was required to throw`);
    });
  }
}

// ---------------------------------------------------------------- ops

const t = (shape: number[], requiresGrad = false): Tensor => Tensor.fromArray(new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.25), shape, requiresGrad);

/** A tensor-like object (not a Tensor) whose 4-element storage is far shorter than its shape. */
const fake = (shape: number[]): Tensor =>
  ({ shape, size: shape.reduce((a, b) => a * b, 1), ndim: shape.length, storage: kernels().alloc(4), requiresGrad: false, gradFn: null, grad: null }) as unknown as Tensor;

/** Malformed calls per exported op; each must throw one line. Every F export must appear (an empty list only for pure helpers). */
const OP_PROBES: Record<string, (() => unknown)[]> = {
  // elementwise ops take one tensor: a tensor-like object whose storage is shorter than its shape
  ...Object.fromEntries(['abs', 'exp', 'gelu', 'log', 'neg', 'relu', 'rsqrt', 'sigmoid', 'silu', 'sqrt', 'square', 'tanh'].map((n) => [n, [
    () => (F as unknown as Record<string, (x: Tensor) => Tensor>)[n](fake([32, 32])),
    () => (F as unknown as Record<string, (x: Tensor) => Tensor>)[n](null as unknown as Tensor),
  ]])),
  reshape: [() => F.reshape(t([2, 3]), [4, 2]), () => F.reshape(t([2, 3]), [1.5, 4]), () => F.reshape(t([2, 3]), [-1, -1])],
  permute: [() => F.permute(t([2, 3]), [0, 0]), () => F.permute(t([2, 3]), [0, 2]), () => F.permute(t([2, 3]), [0.5, 1])],
  transpose: [() => F.transpose(t([2, 3]), 0, 5), () => F.transpose(t([2, 3]), 0.5, 1)],
  slice: [() => F.slice(t([2, 3]), 1, 2, 5), () => F.slice(t([2, 3]), 1, 0.5, 2), () => F.slice(t([2, 3]), 1, 2, 1), () => F.slice(t([2, 3]), 3, 0, 1)],
  expand: [() => F.expand(t([2, 3]), [4, 3]), () => F.expand(t([2, 3]), [3])],
  concat: [() => F.concat([], 0), () => F.concat([t([2, 3]), t([2, 4])], 0), () => F.concat([t([2, 3])], 2)],
  shapesEqual: [], // pure: compares two arrays
  broadcastShapes: [() => F.broadcastShapes([2, 3], [4, 3])],
  broadcastStrides: [() => F.broadcastStrides([2, 3], [3])],
  sumToShape: [() => F.sumToShape(t([2, 3]), [4])],
  add: [() => F.add(t([2, 3]), t([4])), () => F.add(fake([16, 16]), t([16]))],
  sub: [() => F.sub(t([2, 3]), t([2, 2]))],
  mul: [() => F.mul(t([2, 3]), t([3, 3]))],
  div: [() => F.div(t([2, 3]), t([5]))],
  maximum: [() => F.maximum(t([2, 3]), t([2]))],
  affine: [() => F.affine(t([2]), Symbol('s') as unknown as number)],
  scale: [() => F.scale(t([2]), 'x' as unknown as number)],
  addScalar: [() => F.addScalar(t([2]), {} as unknown as number)],
  pow: [() => F.pow(t([2]), 'x' as unknown as number)],
  sum: [() => F.sum(t([2, 3]), [2]), () => F.sum(t([2, 3]), [0.5])],
  mean: [() => F.mean(t([2, 3]), [-3]), () => F.mean(t([2, 3]), [1.5])],
  maxAlong: [() => F.maxAlong(t([2, 3]), 2), () => F.maxAlong(t([2, 3]), 0.5)],
  argmax: [() => F.argmax(fake([64, 64])), () => F.argmax(null as unknown as Tensor)],
  matmul: [() => F.matmul(fake([64, 64]), t([64, 64])), () => F.matmul(t([2, 3]), t([4, 5])), () => F.matmul(t([3]), t([3, 2])), () => F.matmul(t([2, 2, 3]), t([3, 3, 4]))],
  linearQuantized: [() => F.linearQuantized(t([2, 3]), quantize(new Float32Array(8), 2, 4, 'int8'), null), () => F.linearQuantized(fake([64, 64]), quantize(new Float32Array(64 * 64), 64, 64, 'bf16'), null)],
  linear: [() => F.linear(t([2, 3]), t([4, 5]), null), () => F.linear(t([2, 3]), t([4, 3]), t([5]))],
  softmax: [() => F.softmax('x' as unknown as Tensor), () => F.softmax(fake([8, 8]))],
  logSoftmax: [() => F.logSoftmax(null as unknown as Tensor), () => F.logSoftmax(fake([8, 8]))],
  crossEntropy: [() => F.crossEntropy(t([2, 3]), i32(0)), () => F.crossEntropy(t([2, 3]), i32(0, 3)), () => F.crossEntropy(t([2, 3]), i32(0, -5))],
  linearCrossEntropy: [
    () => F.linearCrossEntropy(t([2, 3]), t([4, 5]), i32(0, 1)), () => F.linearCrossEntropy(t([2, 3]), t([4, 3]), i32(0)),
    () => F.linearCrossEntropy(t([2, 3]), t([4, 3]), i32(0, 4)), () => F.linearCrossEntropy(t([2, 3]), t([4, 3], true), i32(0, 1)),
    () => F.linearCrossEntropy(t([2, 3]), t([4, 3]), i32(0, 1), { chunkRows: 1.5 }), () => F.linearCrossEntropy(fake([64, 64]), t([4, 64]), new Int32Array(64)),
  ],
  layerNorm: [() => F.layerNorm(t([2, 3]), t([2]), null), () => F.layerNorm(t([2, 3]), null, t([4]))],
  rmsNorm: [() => F.rmsNorm(t([2, 3]), t([4]))],
  rotary: [
    () => F.rotary(t([2, 3, 5]), t([2, 5]), t([2, 5])),
    () => F.rotary(t([2, 3, 4]), t([3, 4]), t([2, 4])),
    () => F.rotary(t([4]), t([1, 4]), t([1, 4])),
    () => F.rotary(t([2, 3, 4]), t([2, 4]), Tensor.zeros([2, 4], true)),
  ],
  embedding: [() => F.embedding(t([4, 3]), i32(4)), () => F.embedding(t([4, 3]), i32(-1)), () => F.embedding(t([12]), i32(0)), () => F.embedding(t([4, 3]), i32(0, 1), [3])],
  dropout: [() => F.dropout(t([4]), 1, new Rng(1)), () => F.dropout(t([4]), NaN, new Rng(1)), () => F.dropout(t([4]), -0.5, new Rng(1))],
  attention: [
    () => F.attention(t([1, 2, 3, 4]), t([1, 2, 3, 5]), t([1, 2, 3, 5])),
    () => F.attention(t([1, 3, 3, 4]), t([1, 2, 3, 4]), t([1, 2, 3, 4])),
    () => F.attention(t([1, 2, 3, 4]), t([1, 0, 3, 4]), t([1, 0, 3, 4])),
    () => F.attention(t([1, 2, 3, 4]), t([1, 1, 3, 4]), t([1, 1, 3, 4]), { keyMask: new Float32Array(2) }),
    () => F.attention(t([1, 2, 3, 4]), t([1, 1, 3, 4]), t([1, 1, 3, 4]), { kvLength: 4 }),
    () => F.attention(t([1, 2, 3, 4]), t([1, 1, 3, 4]), t([1, 1, 3, 4]), { kvLength: 1.5 }),
    () => F.attention(t([1, 2, 3, 4]), t([1, 1, 3, 4]), t([1, 1, 3, 4]), { causalOffset: 0.5 }),
    () => F.attention(t([2, 3, 4]), t([1, 1, 3, 4]), t([1, 1, 3, 4])),
  ],
  raggedAttention: [
    () => noGrad(() => F.raggedAttention(t([2, 2, 8]), t([2, 1, 8]), t([2, 1, 8]), [t([1, 1, 8])], [t([4, 1, 8])], i32(2), i32(0), 1)),
    () => noGrad(() => F.raggedAttention(t([2, 2, 8]), t([2, 1, 8]), t([2, 1, 8]), [t([4, 1, 8])], [t([4, 1, 8])], i32(3), i32(0), 1)),
    () => noGrad(() => F.raggedAttention(t([2, 2, 8]), t([2, 1, 8]), t([2, 1, 8]), [t([4, 1, 8])], [t([4, 1, 8])], i32(2), i32(-1), 1)),
    () => noGrad(() => F.raggedAttention(t([2, 2, 8]), t([2, 1, 8]), t([2, 1, 8]), [t([4, 1, 8])], [], i32(2), i32(0), 1)),
    () => noGrad(() => F.raggedAttention(t([2, 2, 8]), t([2, 1, 7]), t([2, 1, 7]), [t([4, 1, 8])], [t([4, 1, 8])], i32(2), i32(0), 1)),
  ],
  veraBranch: [
    () => F.veraBranch(t([2, 4]), t([3, 6]), t([5, 3]), t([2]), t([5])),
    () => F.veraBranch(t([2, 7]), t([3, 6]), t([5, 3]), t([3]), t([5])),
    () => F.veraBranch(t([2, 4]), t([3, 6]), t([5, 3]), t([3]), t([6])),
  ],
  loraRouted: [
    () => noGrad(() => F.loraRouted(t([2, 4]), t([2, 5]), [{ A: t([2, 3]), B: t([5, 2]), scaling: 1, rows: i32(0) }])),
    () => noGrad(() => F.loraRouted(t([2, 4]), t([3, 5]), [{ A: t([2, 4]), B: t([5, 2]), scaling: 1, rows: i32(0) }])),
    () => noGrad(() => F.loraRouted(t([2, 4]), t([2, 5]), [{ A: t([2, 4]), B: t([5, 3]), scaling: 1, rows: i32(0) }])),
    () => noGrad(() => F.loraRouted(t([2, 4]), t([2, 5]), [{ A: t([2, 4]), B: t([5, 2]), scaling: 1, rows: i32(2) }])),
    () => noGrad(() => F.loraRouted(t([2, 4]), t([2, 5]), [{ A: t([2, 4]), B: t([5, 2]), scaling: 1, rows: i32(0) }, { A: t([1, 4]), B: t([5, 1]), scaling: 1, rows: i32(1, 0) }])),
    () => F.loraRouted(t([2, 4], true), t([2, 5]), [{ A: t([2, 4]), B: t([5, 2]), scaling: 1, rows: i32(0) }]),
  ],
  veraRouted: [
    () => noGrad(() => F.veraRouted(t([2, 4]), t([3, 6]), t([5, 3]), t([2, 3]), t([2, 5]), i32(0, 2))),
    () => noGrad(() => F.veraRouted(t([2, 4]), t([3, 6]), t([5, 3]), t([2, 3]), t([2, 5]), i32(0))),
    () => noGrad(() => F.veraRouted(t([2, 4]), t([3, 6]), t([5, 3]), t([2, 2]), t([2, 5]), i32(0, 1))),
    () => noGrad(() => F.veraRouted(t([2, 4]), t([3, 6]), t([5, 3]), t([2, 3]), t([2, 5]), i32(0, 1), t([2, 4]))),
    () => noGrad(() => F.veraRouted(t([2, 4]), t([3, 6]), t([5, 3]), t([2, 3]), t([2, 5]), i32(0, 1), undefined, { ax: t([1]), ready: true })),
  ],
  scatterAddRows: [
    () => noGrad(() => F.scatterAddRows(t([3, 2]), i32(3), t([1, 2]))),
    () => noGrad(() => F.scatterAddRows(t([3, 2]), i32(0, 1), t([1, 2]))),
    () => noGrad(() => F.scatterAddRows(t([3, 2]), i32(-1), t([1, 2]))),
  ],
  conv2d: [
    // the reproduction: a 1-element bias for 64 output channels (then backward corrupted the heap)
    () => F.conv2d(t([1, 3, 8, 8], true), t([64, 3, 3, 3], true), t([1], true)),
    () => F.conv2d(t([1, 3, 8, 8]), t([4, 3, 3, 3]), null, 1.5),
    () => F.conv2d(t([1, 3, 8, 8]), t([4, 3, 3, 3]), null, 1, 0.5),
    () => F.conv2d(t([1, 3, 8, 8]), t([4, 3, 3, 3]), null, 0),
    () => F.conv2d(t([1, 3, 8, 8]), t([4, 3, 3, 3]), null, 1, -1),
    () => F.conv2d(t([1, 3, 8, 8]), t([4, 2, 3, 3]), null),
    () => F.conv2d(t([1, 3, 2, 2]), t([4, 3, 3, 3]), null),
  ],
  maxPool2d: [
    () => F.maxPool2d(t([1, 2, 4, 4]), 0, 1), // the reproduction (kernel 0 corrupted the heap)
    () => F.maxPool2d(t([1, 2, 4, 4]), 2, 0),
    () => F.maxPool2d(t([1, 2, 4, 4]), 1.5),
    () => F.maxPool2d(t([1, 2, 4, 4]), 2, 0.5),
    () => F.maxPool2d(t([1, 2, 4, 4]), 5),
    () => F.maxPool2d(t([1, 2, 4, 4]), -2),
  ],
};

for (const backend of backendNames()) {
  describe(`op probes (${backend})`, () => {
    const prev = kernels();
    test('every exported op has probes', () => {
      const missing = Object.keys(F).filter((n) => typeof (F as Record<string, unknown>)[n] === 'function' && !(n in OP_PROBES));
      assert.deepEqual(missing, [], 'ops without an entry in OP_PROBES');
    });
    for (const [name, probes] of Object.entries(OP_PROBES)) {
      if (probes.length === 0) continue;
      test(`F.${name} refuses malformed arguments`, () => {
        useBackend(backend);
        try {
          probes.forEach((p, i) => throwsOneLine(p, `F.${name} probe ${i}`));
        } finally {
          useBackend(prev.name);
        }
      });
    }

    test('a tensor\'s storage cannot be swapped under it', () => {
      useBackend(backend);
      try {
        const a = Tensor.zeros([64, 64]);
        // the reproduction: a 4-element buffer under a 1024×1024 shape let matmul read the heap
        assert.throws(() => {
          (a as unknown as { storage: Storage }).storage = kernels().alloc(4);
        }, TypeError);
        assert.equal(a.storage.length, 64 * 64);
        assert.equal(F.matmul(a, a).size, 64 * 64);
      } finally {
        useBackend(prev.name);
      }
    });

    test('conv2d backward with a good bias still runs (the checks refuse only what is malformed)', () => {
      useBackend(backend);
      try {
        const x = t([1, 3, 6, 6], true);
        const w = t([4, 3, 3, 3], true);
        const b = t([4], true);
        F.sum(F.conv2d(x, w, b, 2, 1)).backward();
        assert.equal(b.grad?.size, 4);
        assert.equal(F.maxPool2d(x, 2).size, 27);
      } finally {
        useBackend(prev.name);
      }
    });

    probeKernels(`kernels(${backend})`, (useBackend(backend), kernels()));
    useBackend(prev.name);
  });
}

const load = loadAddon();
describe('native addon called directly (no TypeScript checks in front)', { skip: load.addon === null ? 'native addon not built' : false }, () => {
  // the addon's maxPool2dBackward takes no sizes (it bounds argmax by gx itself)
  if (load.addon !== null) probeKernels('addon', nativeKernels(load.addon), { maxPool2dBackward: [2] });
});
