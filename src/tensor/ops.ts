// Differentiable ops. Each op: check shapes, run kernels, record a backward that computes only the
// gradients its inputs need. A backward closure captures only what it reads (shapes, the inputs'
// graph nodes, the storages its gradients need): whatever else a closure mentions is kept alive
// with the tape, so an op whose backward does not read an input must not name that input in it.
import { kernels } from './device.js';
import type { AttentionParams, BinaryOp, UnaryOp } from './kernels.js';
import { Tensor, contiguousStrides, isGradEnabled, record, sizeOf, unsetTensor, type Shape } from './tensor.js';
import type { Rng } from './rng.js';
import type { QuantizedData } from './quant.js';

const empty = (shape: Shape): Tensor => new Tensor(kernels().alloc(sizeOf(shape)), shape);
/** An op's output that its kernel writes in full: not zero-filled where the backend can skip it. */
const unset = unsetTensor;
const shapeStr = (s: Shape): string => `[${s.join(', ')}]`;

function normAxis(axis: number, ndim: number): number {
  const a = axis < 0 ? axis + ndim : axis;
  if (!Number.isInteger(a) || a < 0 || a >= ndim) throw new Error(`axis ${axis} out of range for ${ndim}-d tensor`);
  return a;
}

// ---------------------------------------------------------------- layout

export function reshape(x: Tensor, shape: Shape): Tensor {
  let infer = -1;
  let known = 1;
  const s = [...shape];
  s.forEach((d, i) => {
    if (d === -1) {
      if (infer >= 0) throw new Error('reshape: only one -1 allowed');
      infer = i;
    } else known *= d;
  });
  if (infer >= 0) s[infer] = known === 0 ? 0 : x.size / known;
  if (sizeOf(s) !== x.size || !s.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new Error(`reshape: cannot view ${shapeStr(x.shape)} as ${shapeStr(shape)}`);
  }
  const out = new Tensor(x.storage, s); // shares storage: contiguous tensors reshape for free
  const xShape = x.shape;
  return record(out, 'reshape', [x], (g) => [new Tensor(g.storage, xShape)]);
}

/** out = x viewed through (shape, strides, offset); the adjoint scatters back. */
function strided(x: Tensor, shape: Shape, strides: readonly number[], offset: number, name: string): Tensor {
  const out = unset(shape);
  kernels().gather(x.storage, shape, strides, offset, out.storage);
  const xShape = x.shape;
  return record(out, name, [x], (g) => {
    const gx = empty(xShape);
    kernels().scatter(g.storage, shape, strides, offset, gx.storage, true);
    return [gx];
  });
}

export function permute(x: Tensor, dims: readonly number[]): Tensor {
  if (dims.length !== x.ndim) throw new Error(`permute: ${dims.length} dims for a ${x.ndim}-d tensor`);
  const src = contiguousStrides(x.shape);
  const d = dims.map((a) => normAxis(a, x.ndim));
  if (new Set(d).size !== d.length) throw new Error(`permute: repeated dims [${dims}]`);
  if (d.every((a, i) => a === i)) return x;
  return strided(x, d.map((a) => x.shape[a]), d.map((a) => src[a]), 0, 'permute');
}

export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  const dims = x.shape.map((_, i) => i);
  const i = normAxis(a, x.ndim);
  const j = normAxis(b, x.ndim);
  [dims[i], dims[j]] = [dims[j], dims[i]];
  return permute(x, dims);
}

/** x[..., start:end, ...] along one axis. */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  const a = normAxis(axis, x.ndim);
  if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= x.shape[a])) throw new Error(`slice: [${start}:${end}] out of range for axis ${a} of ${shapeStr(x.shape)}`);
  if (start === 0 && end === x.shape[a]) return x;
  const strides = contiguousStrides(x.shape);
  const shape = [...x.shape];
  shape[a] = end - start;
  return strided(x, shape, strides, start * strides[a], 'slice');
}

/** Broadcast to `shape` (numpy rules). */
export function expand(x: Tensor, shape: Shape): Tensor {
  if (shapesEqual(x.shape, shape)) return x;
  return strided(x, shape, broadcastStrides(x.shape, shape), 0, 'expand');
}

export function concat(xs: readonly Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new Error('concat: no tensors');
  const a = normAxis(axis, xs[0].ndim);
  const shape = [...xs[0].shape];
  shape[a] = 0;
  for (const x of xs) {
    if (x.ndim !== shape.length || x.shape.some((d, i) => i !== a && d !== xs[0].shape[i])) {
      throw new Error(`concat: shapes ${xs.map((t) => shapeStr(t.shape)).join(' and ')} differ off axis ${a}`);
    }
    shape[a] += x.shape[a];
  }
  const out = empty(shape);
  const strides = contiguousStrides(shape);
  const offsets: number[] = [];
  let at = 0;
  for (const x of xs) {
    offsets.push(at * strides[a]);
    kernels().scatter(x.storage, x.shape, strides, at * strides[a], out.storage, false);
    at += x.shape[a];
  }
  const nodes = xs.map((x) => x.node);
  return record(out, 'concat', xs, (g) =>
    nodes.map((x, i) => {
      if (!x.requiresGrad) return null;
      const gx = empty(x.shape);
      kernels().gather(g.storage, x.shape, strides, offsets[i], gx.storage);
      return gx;
    }),
  );
}

// ---------------------------------------------------------------- broadcasting helpers

export function shapesEqual(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function broadcastShapes(a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`cannot broadcast ${shapeStr(a)} with ${shapeStr(b)}`);
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Strides reading a tensor of shape `from` as if it had shape `to` (0 on broadcast dims). */
export function broadcastStrides(from: Shape, to: Shape): number[] {
  const src = contiguousStrides(from);
  const lead = to.length - from.length;
  if (lead < 0) throw new Error(`cannot broadcast ${shapeStr(from)} to ${shapeStr(to)}`);
  return to.map((d, i) => {
    if (i < lead) return 0;
    const f = from[i - lead];
    if (f === d) return src[i - lead];
    if (f === 1) return 0;
    throw new Error(`cannot broadcast ${shapeStr(from)} to ${shapeStr(to)}`);
  });
}

/** Sum a gradient of shape g.shape down to `shape` (adjoint of broadcasting). */
export function sumToShape(g: Tensor, shape: Shape): Tensor {
  if (shapesEqual(g.shape, shape)) return g;
  const k = kernels();
  const out = empty(shape);
  const lead = g.ndim - shape.length;
  const innerSame = shape.every((d, i) => d === g.shape[lead + i]);
  if (innerSame) {
    // common case (bias gradients): only leading dims were broadcast
    k.sumReduce(g.storage, 1, sizeOf(g.shape.slice(0, lead)), out.size, out.storage);
  } else {
    k.scatter(g.storage, g.shape, broadcastStrides(shape, g.shape), 0, out.storage, true);
  }
  return out;
}

// ---------------------------------------------------------------- elementwise

function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const shape = broadcastShapes(a.shape, b.shape);
  const out = unset(shape);
  kernels().binary(op, a.storage, broadcastStrides(a.shape, shape), b.storage, broadcastStrides(b.shape, shape), out.storage, shape);
  return out;
}

export function add(a: Tensor, b: Tensor): Tensor {
  const out = binary('add', a, b);
  const [an, bn] = [a.node, b.node];
  return record(out, 'add', [a, b], (g) => [an.requiresGrad ? sumToShape(g, an.shape) : null, bn.requiresGrad ? sumToShape(g, bn.shape) : null]);
}

export function sub(a: Tensor, b: Tensor): Tensor {
  const out = binary('sub', a, b);
  const [an, bn] = [a.node, b.node];
  return record(out, 'sub', [a, b], (g) => [an.requiresGrad ? sumToShape(g, an.shape) : null, bn.requiresGrad ? sumToShape(scale(g, -1), bn.shape) : null]);
}

export function mul(a: Tensor, b: Tensor): Tensor {
  const out = binary('mul', a, b);
  const [an, bn] = [a.node, b.node];
  // each factor is kept only for the other's gradient
  const aSaved = b.requiresGrad ? a : null;
  const bSaved = a.requiresGrad ? b : null;
  return record(out, 'mul', [a, b], (g) => [
    an.requiresGrad && bSaved ? sumToShape(binary('mul', g, bSaved), an.shape) : null,
    bn.requiresGrad && aSaved ? sumToShape(binary('mul', g, aSaved), bn.shape) : null,
  ]);
}

export function div(a: Tensor, b: Tensor): Tensor {
  const out = binary('div', a, b);
  const [an, bn, bSaved] = [a.node, b.node, b];
  const outSaved = b.requiresGrad ? out : null;
  return record(out, 'div', [a, b], (g) => {
    const ga = an.requiresGrad || bn.requiresGrad ? binary('div', g, bSaved) : null;
    return [
      an.requiresGrad && ga ? sumToShape(ga, an.shape) : null,
      // d(a/b)/db = -(a/b)/b, so gb = -(g/b)·(a/b) = -ga·out
      bn.requiresGrad && ga && outSaved ? sumToShape(scale(binary('mul', ga, outSaved), -1), bn.shape) : null,
    ];
  });
}

/** Elementwise max; the gradient goes to `a` where a >= b. */
export function maximum(a: Tensor, b: Tensor): Tensor {
  const out = binary('max', a, b);
  return record(out, 'maximum', [a, b], (g) => {
    const ad = kernels().read(expand(a, out.shape).storage);
    const od = kernels().read(out.storage);
    const mask = new Float32Array(out.size);
    for (let i = 0; i < mask.length; i++) mask[i] = ad[i] === od[i] ? 1 : 0;
    const m = Tensor.fromArray(mask, out.shape);
    const ga = binary('mul', g, m);
    return [a.requiresGrad ? sumToShape(ga, a.shape) : null, b.requiresGrad ? sumToShape(binary('sub', g, ga), b.shape) : null];
  });
}

/** x·s + t with scalars. */
export function affine(x: Tensor, s: number, t = 0): Tensor {
  const out = empty(x.shape);
  kernels().affine(x.storage, s, t, out.storage);
  return record(out, 'affine', [x], (g) => [scale(g, s)]);
}

export function scale(x: Tensor, s: number): Tensor {
  return affine(x, s, 0);
}

export function addScalar(x: Tensor, t: number): Tensor {
  return affine(x, 1, t);
}

export function pow(x: Tensor, p: number): Tensor {
  const out = empty(x.shape);
  kernels().powScalar(x.storage, p, out.storage);
  return record(out, 'pow', [x], (g) => {
    const d = empty(x.shape);
    kernels().powScalar(x.storage, p - 1, d.storage);
    kernels().affine(d.storage, p, 0, d.storage);
    return [binary('mul', g, d)];
  });
}

/** Unary ops whose derivative the kernels compute from y = f(x) alone (the rest read only x). */
const FROM_OUTPUT: ReadonlySet<UnaryOp> = new Set<UnaryOp>(['exp', 'tanh', 'sqrt', 'rsqrt', 'sigmoid']);

function unary(op: UnaryOp, x: Tensor): Tensor {
  const k = kernels();
  const out = unset(x.shape);
  k.unary(op, x.storage, out.storage);
  // backward keeps the one of x and y the derivative reads, and passes it for both
  const saved = (FROM_OUTPUT.has(op) ? out : x).storage;
  const shape = x.shape;
  return record(out, op, [x], (g) => {
    const gx = empty(shape);
    k.unaryBackward(op, saved, saved, g.storage, gx.storage);
    return [gx];
  });
}

export const neg = (x: Tensor): Tensor => unary('neg', x);
export const exp = (x: Tensor): Tensor => unary('exp', x);
export const log = (x: Tensor): Tensor => unary('log', x);
export const tanh = (x: Tensor): Tensor => unary('tanh', x);
export const sqrt = (x: Tensor): Tensor => unary('sqrt', x);
export const rsqrt = (x: Tensor): Tensor => unary('rsqrt', x);
export const sigmoid = (x: Tensor): Tensor => unary('sigmoid', x);
export const abs = (x: Tensor): Tensor => unary('abs', x);
export const square = (x: Tensor): Tensor => unary('square', x);
export const relu = (x: Tensor): Tensor => unary('relu', x);
export const silu = (x: Tensor): Tensor => unary('silu', x);
/** GELU; 'tanh' is GPT-2's gelu_new, 'erf' the exact form. */
export const gelu = (x: Tensor, approximate: 'tanh' | 'erf' = 'erf'): Tensor => unary(approximate === 'tanh' ? 'gelu_tanh' : 'gelu_erf', x);

// ---------------------------------------------------------------- reductions

function reduceAxes(x: Tensor, axes: readonly number[] | undefined): number[] {
  if (axes === undefined) return x.shape.map((_, i) => i);
  const a = [...new Set(axes.map((v) => normAxis(v, x.ndim)))].sort((p, q) => p - q);
  return a;
}

export function sum(x: Tensor, axes?: readonly number[], keepDims = false): Tensor {
  const ax = reduceAxes(x, axes);
  const keptShape = x.shape.map((d, i) => (ax.includes(i) ? 1 : d));
  const outShape = keepDims ? keptShape : x.shape.filter((_, i) => !ax.includes(i));
  let src = x.detach();
  let first = ax[0] ?? 0;
  let last = ax[ax.length - 1] ?? -1;
  if (ax.length > 0 && last - first + 1 !== ax.length) {
    // non-contiguous axes: move them to the end first
    const keep = x.shape.map((_, i) => i).filter((i) => !ax.includes(i));
    const { permuteNoGrad } = internal;
    src = permuteNoGrad(src, [...keep, ...ax]);
    first = keep.length;
    last = x.ndim - 1;
  }
  const outer = sizeOf(src.shape.slice(0, first));
  const red = sizeOf(src.shape.slice(first, last + 1));
  const inner = sizeOf(src.shape.slice(last + 1));
  const out = empty(outShape);
  kernels().sumReduce(src.storage, outer, red, inner, out.storage);
  const xShape = x.shape;
  return record(out, 'sum', [x], (g) => [expandNoGrad(new Tensor(g.storage, keptShape), xShape)]);
}

export function mean(x: Tensor, axes?: readonly number[], keepDims = false): Tensor {
  const ax = reduceAxes(x, axes);
  const n = sizeOf(ax.map((a) => x.shape[a]));
  return scale(sum(x, ax, keepDims), 1 / n);
}

/** Max over one axis (no gradient: used for metrics and numerics). */
export function maxAlong(x: Tensor, axis: number): Tensor {
  const a = normAxis(axis, x.ndim);
  const out = empty(x.shape.filter((_, i) => i !== a));
  kernels().maxReduce(x.storage, sizeOf(x.shape.slice(0, a)), x.shape[a], sizeOf(x.shape.slice(a + 1)), out.storage);
  return out;
}

/** Index of the largest entry of each row (last axis); no gradient. Ties go to the first. */
export function argmax(x: Tensor): Int32Array {
  const cols = x.shape[x.ndim - 1] ?? 1;
  const rows = cols === 0 ? 0 : x.size / cols;
  const d = kernels().read(x.storage);
  if (d.length < x.size) throw new Error(`argmax: storage holds ${d.length} elements, shape ${shapeStr(x.shape)} needs ${x.size}`);
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let best = 0;
    for (let c = 1; c < cols; c++) if (d[base + c] > d[base + best]) best = c;
    out[r] = best;
  }
  return out;
}

function expandNoGrad(x: Tensor, shape: Shape): Tensor {
  if (shapesEqual(x.shape, shape)) return x;
  const out = empty(shape);
  kernels().gather(x.storage, shape, broadcastStrides(x.shape, shape), 0, out.storage);
  return out;
}

const internal = {
  permuteNoGrad(x: Tensor, dims: number[]): Tensor {
    const src = contiguousStrides(x.shape);
    const out = empty(dims.map((a) => x.shape[a]));
    kernels().gather(x.storage, out.shape, dims.map((a) => src[a]), 0, out.storage);
    return out;
  },
};

// ---------------------------------------------------------------- matmul

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
}

/**
 * Batched matmul of the last two axes, either operand optionally transposed. A 2-D `b` against a
 * batched `a` folds the batch into rows (one big GEMM, and its weight gradient sums over the
 * batch for free); otherwise batch dims must match or one side must be 2-D.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  if (a.ndim < 2 || b.ndim < 2) throw new Error(`matmul: operands must be at least 2-d, got ${shapeStr(a.shape)} and ${shapeStr(b.shape)}`);
  const m = transA ? a.shape[a.ndim - 1] : a.shape[a.ndim - 2];
  const ka = transA ? a.shape[a.ndim - 2] : a.shape[a.ndim - 1];
  const kb = transB ? b.shape[b.ndim - 1] : b.shape[b.ndim - 2];
  const n = transB ? b.shape[b.ndim - 2] : b.shape[b.ndim - 1];
  if (ka !== kb) throw new Error(`matmul: inner sizes differ: ${shapeStr(a.shape)}${transA ? 'ᵀ' : ''} @ ${shapeStr(b.shape)}${transB ? 'ᵀ' : ''}`);
  const k = ka;
  const aBatch = a.shape.slice(0, -2);
  const bBatch = b.shape.slice(0, -2);
  const kern = kernels();

  if (bBatch.length === 0 && !transA) {
    // fold a's batch into m
    const rows = sizeOf(aBatch) * m;
    const out = k > 0 ? unset([...aBatch, m, n]) : empty([...aBatch, m, n]);
    kern.matmul(a.storage, b.storage, out.storage, { batch: 1, m: rows, n, k, transA: false, transB, strideA: 0, strideB: 0, accumulate: false });
    // each operand is kept only for the other's gradient: a frozen weight's input is not kept
    const [an, bn] = [a.node, b.node];
    const aSaved = b.requiresGrad ? a.storage : null;
    const bSaved = a.requiresGrad ? b.storage : null;
    return record(out, 'matmul', [a, b], (g) => {
      let ga: Tensor | null = null;
      let gb: Tensor | null = null;
      if (an.requiresGrad && bSaved) {
        ga = empty(an.shape);
        kern.matmul(g.storage, bSaved, ga.storage, { batch: 1, m: rows, n: k, k: n, transA: false, transB: !transB, strideA: 0, strideB: 0, accumulate: false });
      }
      if (bn.requiresGrad && aSaved) {
        gb = empty(bn.shape);
        if (transB) kern.matmul(g.storage, aSaved, gb.storage, { batch: 1, m: n, n: k, k: rows, transA: true, transB: false, strideA: 0, strideB: 0, accumulate: false });
        else kern.matmul(aSaved, g.storage, gb.storage, { batch: 1, m: k, n, k: rows, transA: true, transB: false, strideA: 0, strideB: 0, accumulate: false });
      }
      return [ga, gb];
    });
  }

  let batchShape: number[];
  if (aBatch.length === 0) batchShape = [...bBatch];
  else if (bBatch.length === 0) batchShape = [...aBatch];
  else if (shapesEqual(aBatch, bBatch)) batchShape = [...aBatch];
  else {
    const bs = broadcastShapes(aBatch, bBatch);
    return matmul(expand(a, [...bs, ...a.shape.slice(-2)]), expand(b, [...bs, ...b.shape.slice(-2)]), opts);
  }
  const batch = sizeOf(batchShape);
  const strideA = aBatch.length === 0 ? 0 : m * k;
  const strideB = bBatch.length === 0 ? 0 : k * n;
  const out = k > 0 ? unset([...batchShape, m, n]) : empty([...batchShape, m, n]);
  kern.matmul(a.storage, b.storage, out.storage, { batch, m, n, k, transA, transB, strideA, strideB, accumulate: false });
  const [an, bn] = [a.node, b.node];
  const aSaved = b.requiresGrad ? a.storage : null;
  const bSaved = a.requiresGrad ? b.storage : null;
  return record(out, 'matmul', [a, b], (g) => {
    let ga: Tensor | null = null;
    let gb: Tensor | null = null;
    if (an.requiresGrad && bSaved) {
      const full = empty(strideA === 0 ? [...batchShape, ...an.shape] : an.shape);
      if (transA) kern.matmul(bSaved, g.storage, full.storage, { batch, m: k, n: m, k: n, transA: transB, transB: true, strideA: strideB, strideB: m * n, accumulate: false });
      else kern.matmul(g.storage, bSaved, full.storage, { batch, m, n: k, k: n, transA: false, transB: !transB, strideA: m * n, strideB, accumulate: false });
      ga = strideA === 0 ? sumToShape(full, an.shape) : full;
    }
    if (bn.requiresGrad && aSaved) {
      const full = empty(strideB === 0 ? [...batchShape, ...bn.shape] : bn.shape);
      if (transB) kern.matmul(g.storage, aSaved, full.storage, { batch, m: n, n: k, k: m, transA: true, transB: transA, strideA: m * n, strideB: strideA, accumulate: false });
      else kern.matmul(aSaved, g.storage, full.storage, { batch, m: k, n, k: m, transA: !transA, transB: false, strideA, strideB: m * n, accumulate: false });
      gb = strideB === 0 ? sumToShape(full, bn.shape) : full;
    }
    return [ga, gb];
  });
}

/**
 * y = x·Wᵀ + bias with W a frozen compact weight (out, in) (bf16 / int8 / nf4): the kernel
 * dequantizes tiles of W as it goes. Backward gives x its gradient only (W is frozen), and bias its own.
 */
export function linearQuantized(x: Tensor, w: QuantizedData, bias: Tensor | null): Tensor {
  const k = w.cols;
  if (x.ndim < 1 || x.shape[x.ndim - 1] !== k) throw new Error(`linear: input ${shapeStr(x.shape)} does not end in in_features ${k}`);
  const rows = x.size / k;
  const outShape = [...x.shape.slice(0, -1), w.rows];
  const out = empty(outShape);
  const kern = kernels();
  kern.quantMatmul(x.storage, w, rows, out.storage);
  const xShape = x.shape; // backward reads W only, not x
  const y = record(out, 'linearQuantized', [x], (g) => {
    const gx = empty(xShape);
    kern.quantMatmulInputGrad(g.storage, w, rows, gx.storage);
    return [gx];
  });
  return bias === null ? y : add(y, bias);
}

/** y = x·Wᵀ + bias for W stored (out, in) as torch.nn.Linear; (in, out) with `weightInOut` as GPT-2's Conv1D. */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null, weightInOut = false): Tensor {
  const y = matmul(x, weight, { transB: !weightInOut });
  return bias === null ? y : add(y, bias);
}

// ---------------------------------------------------------------- row-wise ops

function rowsCols(x: Tensor): [number, number] {
  const cols = x.shape[x.ndim - 1] ?? 1;
  return [cols === 0 ? 0 : x.size / cols, cols];
}

export function softmax(x: Tensor): Tensor {
  const [rows, cols] = rowsCols(x);
  const out = empty(x.shape);
  kernels().softmax(x.storage, rows, cols, out.storage);
  const shape = x.shape; // backward reads y only
  return record(out, 'softmax', [x], (g) => {
    const gx = empty(shape);
    kernels().softmaxBackward(out.storage, g.storage, rows, cols, gx.storage);
    return [gx];
  });
}

export function logSoftmax(x: Tensor): Tensor {
  const [rows, cols] = rowsCols(x);
  const out = empty(x.shape);
  kernels().logSoftmax(x.storage, rows, cols, out.storage);
  const shape = x.shape; // backward reads y only
  return record(out, 'logSoftmax', [x], (g) => {
    const gx = empty(shape);
    kernels().logSoftmaxBackward(out.storage, g.storage, rows, cols, gx.storage);
    return [gx];
  });
}

/** The targets a mean averages over (those not ignoreIndex), each checked to be a class in [0, classes). */
function countTargets(op: string, targets: Int32Array, classes: number, ignoreIndex: number): number {
  let counted = 0;
  for (const t of targets) {
    if (t === ignoreIndex) continue;
    if (t < 0 || t >= classes) throw new Error(`${op}: target ${t} out of range [0, ${classes})`);
    counted++;
  }
  return counted;
}

export interface CrossEntropyOptions {
  ignoreIndex?: number;
  reduction?: 'mean' | 'sum' | 'none';
}

/**
 * Cross-entropy of logits (..., C) against integer targets (one per row). 'mean' averages over
 * rows whose target is not ignoreIndex (as torch does).
 */
export function crossEntropy(logits: Tensor, targets: Int32Array, opts: CrossEntropyOptions = {}): Tensor {
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const reduction = opts.reduction ?? 'mean';
  const [rows, cols] = rowsCols(logits);
  if (targets.length !== rows) throw new Error(`crossEntropy: ${targets.length} targets for ${rows} rows of logits ${shapeStr(logits.shape)}`);
  const counted = countTargets('crossEntropy', targets, cols, ignoreIndex);
  const k = kernels();
  const losses = empty([rows]);
  const lse = empty([rows]);
  k.crossEntropy(logits.storage, targets, rows, cols, ignoreIndex, losses.storage, lse.storage);
  let out: Tensor;
  if (reduction === 'none') out = new Tensor(losses.storage, logits.shape.slice(0, -1));
  else {
    out = empty([]);
    k.sumReduce(losses.storage, 1, rows, 1, out.storage);
    if (reduction === 'mean') k.affine(out.storage, counted === 0 ? NaN : 1 / counted, 0, out.storage);
  }
  return record(out, 'crossEntropy', [logits], (g) => {
    let gRows: Tensor;
    if (reduction === 'none') gRows = g;
    else {
      gRows = empty([rows]);
      k.gather(g.storage, [rows], [0], 0, gRows.storage);
      if (reduction === 'mean') k.affine(gRows.storage, counted === 0 ? 0 : 1 / counted, 0, gRows.storage);
    }
    const gx = empty(logits.shape);
    k.crossEntropyBackward(logits.storage, lse.storage, targets, gRows.storage, rows, cols, ignoreIndex, gx.storage);
    return [gx];
  });
}

/** Logit elements per chunk of linearCrossEntropy (16 MiB of float32): GPT-2's 50257-word head takes 83 rows at a time. */
const LM_CHUNK_ELEMENTS = 1 << 22;

export interface LinearCrossEntropyOptions {
  ignoreIndex?: number;
  /** Rows per chunk (default: as many as fit 4M logits). */
  chunkRows?: number;
}

/**
 * crossEntropy(linear(x, weight, null), targets) with 'mean' reduction, for a frozen head weight
 * (V, d) (nn.Linear's layout): the (rows, V) logits are never whole. Rows go in chunks: a chunk's
 * logits, its per-row loss and log-sum-exp, and (when x needs a gradient) its softmax − onehot and
 * that times W, x's gradient for those rows, are computed and the chunk's buffers freed, so what
 * stays is x's (rows, d) gradient for one g = 1, which backward scales by the incoming g. The same
 * kernels as the unfused path, on row slices, so loss and gradient agree with it to float
 * rounding (the GEMMs' row blocking). The weight gets no gradient: a trainable head uses linear +
 * crossEntropy.
 */
export function linearCrossEntropy(x: Tensor, weight: Tensor, targets: Int32Array, opts: LinearCrossEntropyOptions = {}): Tensor {
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const [rows, d] = rowsCols(x);
  if (weight.ndim !== 2 || weight.shape[1] !== d) throw new Error(`linearCrossEntropy: weight ${shapeStr(weight.shape)} is not (vocab, ${d}) for x ${shapeStr(x.shape)}`);
  const vocab = weight.shape[0];
  if (targets.length !== rows) throw new Error(`linearCrossEntropy: ${targets.length} targets for ${rows} rows of x ${shapeStr(x.shape)}`);
  if (isGradEnabled() && weight.requiresGrad) throw new Error('linearCrossEntropy: the weight takes no gradient here; use linear + crossEntropy for a trainable head');
  const chunk = opts.chunkRows ?? Math.max(1, Math.floor(LM_CHUNK_ELEMENTS / Math.max(1, vocab)));
  if (!Number.isSafeInteger(chunk) || chunk < 1) throw new Error(`linearCrossEntropy: chunkRows must be a positive integer, got ${chunk}`);
  const counted = countTargets('linearCrossEntropy', targets, vocab, ignoreIndex);
  const k = kernels();
  const wantGrad = isGradEnabled() && x.requiresGrad;
  const losses = empty([rows]);
  const gxUnit = wantGrad ? empty(x.shape) : null;
  const release = (...ss: Tensor[]): void => {
    for (const t of ss) k.free?.(t.storage);
  };
  // the gradient of the mean for g = 1, as crossEntropy's backward gives it: the same for every row
  let gRows: Tensor | null = null;
  if (gxUnit) {
    gRows = empty([Math.min(chunk, rows)]);
    k.fill(gRows.storage, counted === 0 ? 0 : 1 / counted);
  }
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const c = Math.min(chunk, rows - r0);
    const t = targets.subarray(r0, r0 + c);
    const xs = empty([c, d]);
    k.gather(x.storage, [c * d], [1], r0 * d, xs.storage);
    const logits = empty([c, vocab]);
    k.matmul(xs.storage, weight.storage, logits.storage, { batch: 1, m: c, n: vocab, k: d, transA: false, transB: true, strideA: 0, strideB: 0, accumulate: false });
    const ls = empty([c]);
    const lse = empty([c]);
    k.crossEntropy(logits.storage, t, c, vocab, ignoreIndex, ls.storage, lse.storage);
    k.scatter(ls.storage, [c], [1], r0, losses.storage, false);
    if (gxUnit && gRows) {
      const gl = empty([c, vocab]);
      k.crossEntropyBackward(logits.storage, lse.storage, t, gRows.storage, c, vocab, ignoreIndex, gl.storage);
      const gxs = empty([c, d]);
      k.matmul(gl.storage, weight.storage, gxs.storage, { batch: 1, m: c, n: d, k: vocab, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: false });
      k.scatter(gxs.storage, [c * d], [1], r0 * d, gxUnit.storage, false);
      release(gl, gxs);
    }
    release(xs, logits, ls, lse);
  }
  if (gRows) release(gRows);
  const out = empty([]);
  k.sumReduce(losses.storage, 1, rows, 1, out.storage);
  k.affine(out.storage, counted === 0 ? NaN : 1 / counted, 0, out.storage);
  release(losses);
  if (!gxUnit) return out;
  const shape = x.shape;
  return record(out, 'linearCrossEntropy', [x], (g) => {
    const gx = empty(shape);
    k.binary('mul', gxUnit.storage, contiguousStrides(shape), g.storage, shape.map(() => 0), gx.storage, shape);
    k.free?.(gxUnit.storage); // backward runs once
    return [gx];
  });
}

export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  const [rows, cols] = rowsCols(x);
  if (weight && weight.size !== cols) throw new Error(`layerNorm: weight of ${weight.size} for rows of ${cols}`);
  if (bias && bias.size !== cols) throw new Error(`layerNorm: bias of ${bias.size} for rows of ${cols}`);
  const k = kernels();
  const out = unset(x.shape);
  const mu = unset([rows]);
  const rstd = unset([rows]);
  k.layerNorm(x.storage, weight?.storage ?? null, bias?.storage ?? null, rows, cols, eps, out.storage, mu.storage, rstd.storage);
  const inputs = [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])];
  return record(out, 'layerNorm', inputs, (g) => {
    const gx = x.requiresGrad ? empty(x.shape) : null;
    const gw = weight?.requiresGrad ? empty(weight.shape) : null;
    const gb = bias?.requiresGrad ? empty(bias.shape) : null;
    k.layerNormBackward(x.storage, weight?.storage ?? null, mu.storage, rstd.storage, g.storage, rows, cols, gx?.storage ?? null, gw?.storage ?? null, gb?.storage ?? null);
    return [gx, ...(weight ? [gw] : []), ...(bias ? [gb] : [])];
  });
}

/** RMSNorm as Llama: x·rsqrt(mean(x²)+eps)·weight. */
export function rmsNorm(x: Tensor, weight: Tensor | null, eps = 1e-6): Tensor {
  const [rows, cols] = rowsCols(x);
  if (weight && weight.size !== cols) throw new Error(`rmsNorm: weight of ${weight.size} for rows of ${cols}`);
  const k = kernels();
  const out = unset(x.shape);
  const rstd = unset([rows]);
  k.rmsNorm(x.storage, weight?.storage ?? null, rows, cols, eps, out.storage, rstd.storage);
  return record(out, 'rmsNorm', weight ? [x, weight] : [x], (g) => {
    const gx = x.requiresGrad ? empty(x.shape) : null;
    const gw = weight?.requiresGrad ? empty(weight.shape) : null;
    k.rmsNormBackward(x.storage, weight?.storage ?? null, rstd.storage, g.storage, rows, cols, gx?.storage ?? null, gw?.storage ?? null);
    return weight ? [gx, gw] : [gx];
  });
}

/**
 * Rotary position embedding, x·cos + rotate_half(x)·sin in one kernel: x (..., heads, dim), cos and
 * sin one row of dim per position (rows = x.size / (heads·dim)), shared by the heads. cos and sin
 * are constants (no gradient flows to them).
 */
export function rotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  if (x.ndim < 2) throw new Error(`rotary: x must be (..., heads, dim), got ${shapeStr(x.shape)}`);
  const dim = x.shape[x.ndim - 1];
  const heads = x.shape[x.ndim - 2];
  const rows = heads * dim === 0 ? 0 : x.size / (heads * dim);
  if (dim % 2 !== 0) throw new Error(`rotary: the last dim must be even, got ${dim}`);
  for (const [name, t] of [['cos', cos], ['sin', sin]] as const) {
    if (t.size !== rows * dim) throw new Error(`rotary: ${name} ${shapeStr(t.shape)} does not hold ${rows} rows of ${dim}`);
    if (t.requiresGrad) throw new Error(`rotary: ${name} is a constant; no gradient flows to it`);
  }
  const k = kernels();
  const p = { rows, heads, dim, transpose: false };
  const out = unset(x.shape);
  k.rotary(x.storage, cos.storage, sin.storage, p, out.storage);
  return record(out, 'rotary', [x], (g) => {
    const gx = empty(x.shape);
    k.rotary(g.storage, cos.storage, sin.storage, { ...p, transpose: true }, gx.storage);
    return [gx];
  });
}

// ---------------------------------------------------------------- lookups, dropout

/** Rows of `weight` (V, D) picked by ids; output shape [...idsShape, D]. */
export function embedding(weight: Tensor, ids: Int32Array, idsShape: Shape = [ids.length]): Tensor {
  if (weight.ndim !== 2) throw new Error(`embedding: weight must be 2-d, got ${shapeStr(weight.shape)}`);
  const [vocab, dim] = weight.shape;
  for (const id of ids) if (!(id >= 0 && id < vocab)) throw new Error(`embedding: id ${id} out of range [0, ${vocab})`);
  if (sizeOf(idsShape) !== ids.length) throw new Error(`embedding: ids shape ${shapeStr(idsShape)} does not hold ${ids.length} ids`);
  const out = unset([...idsShape, dim]);
  kernels().embedding(weight.storage, ids, dim, out.storage);
  const wShape = weight.shape;
  return record(out, 'embedding', [weight], (g) => {
    const gw = empty(wShape);
    kernels().embeddingBackward(g.storage, ids, dim, gw.storage);
    return [gw];
  });
}

/** Inverted dropout: zero with probability p, scale the rest by 1/(1-p). */
export function dropout(x: Tensor, p: number, rng: Rng, training = true): Tensor {
  if (!training || p === 0) return x;
  if (!(p >= 0 && p < 1)) throw new Error(`dropout: p must be in [0, 1), got ${p}`);
  const mask = new Float32Array(x.size);
  const keep = 1 / (1 - p);
  for (let i = 0; i < mask.length; i++) mask[i] = rng.random() >= p ? keep : 0;
  return mul(x, Tensor.fromArray(mask, x.shape));
}

// ---------------------------------------------------------------- attention

export interface AttentionOptions {
  causal?: boolean;
  /** (batch, tk): 1 attends, 0 masked (padding). */
  keyMask?: Float32Array | null;
  scale?: number;
  /** Query i sits at absolute position i + causalOffset; default tk − tq. */
  causalOffset?: number;
  /**
   * Valid positions of k/v (a preallocated KV cache): k/v are (B, Hkv, capacity, D) and only the
   * first kvLength ≤ capacity positions are read, in place (tk = kvLength; keyMask is (B, kvLength)).
   * Default: capacity. Inference only: with kvLength < capacity no input may require gradients.
   */
  kvLength?: number;
}

/**
 * Fused scaled dot-product attention; q (B, H, Tq, D), k/v (B, Hkv, Tk, D), H % Hkv == 0. With
 * `kvLength`, k/v are (B, Hkv, capacity, D) and the first kvLength positions are the keys.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4) throw new Error('attention: q, k, v must be (batch, heads, time, headDim)');
  const [batch, heads, tq, headDim] = q.shape;
  const [kb, kvHeads, capacity, kd] = k.shape;
  if (kb !== batch || kd !== headDim || !shapesEqual(k.shape, v.shape) || heads % kvHeads !== 0) {
    throw new Error(`attention: incompatible shapes q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)}, v ${shapeStr(v.shape)}`);
  }
  const tk = opts.kvLength ?? capacity;
  if (!Number.isInteger(tk) || tk < 0 || tk > capacity) {
    throw new Error(`attention: kvLength ${tk} must be an integer in [0, ${capacity}] (the k/v capacity of ${shapeStr(k.shape)})`);
  }
  if (tk !== capacity && isGradEnabled() && (q.requiresGrad || k.requiresGrad || v.requiresGrad)) {
    throw new Error(`attention: kvLength ${tk} < capacity ${capacity} is for inference; no input may require gradients (use noGrad)`);
  }
  const keyMask = opts.keyMask ?? null;
  if (keyMask && keyMask.length !== batch * tk) throw new Error(`attention: key mask of ${keyMask.length} for batch ${batch} × ${tk} keys`);
  const p: AttentionParams = {
    batch, heads, kvHeads, tq, tk, headDim,
    scale: opts.scale ?? 1 / Math.sqrt(headDim),
    causal: opts.causal ?? false,
    causalOffset: opts.causalOffset ?? tk - tq,
    keyMask,
    kvStride: capacity,
  };
  const kern = kernels();
  const out = empty(q.shape);
  const lse = empty([batch * heads * tq]);
  kern.attention(q.storage, k.storage, v.storage, p, out.storage, lse.storage);
  return record(out, 'attention', [q, k, v], (g) => {
    const gq = q.requiresGrad ? empty(q.shape) : null;
    const gk = k.requiresGrad ? empty(k.shape) : null;
    const gv = v.requiresGrad ? empty(v.shape) : null;
    kern.attentionBackward(q.storage, k.storage, v.storage, out.storage, lse.storage, g.storage, p, gq?.storage ?? null, gk?.storage ?? null, gv?.storage ?? null);
    return [gq, gk, gv];
  });
}

/**
 * Ragged attention for inference: q (…, T, heads, headDim) and this step's k, v (…, T, kvHeads,
 * headDim), position-major, for several sequences of `tokens[s]` consecutive tokens each; sequence
 * s's keys and values are appended to its caches (capacity, kvHeads, headDim) at position past[s]
 * and its tokens attend causally over them. Returns (…, T, heads, headDim). No tape.
 */
export function raggedAttention(q: Tensor, k: Tensor, v: Tensor, kCaches: readonly Tensor[], vCaches: readonly Tensor[], tokens: Int32Array, past: Int32Array, scale: number): Tensor {
  const [heads, headDim] = q.shape.slice(-2);
  const [kvHeads, kd] = k.shape.slice(-2);
  const total = q.size / (heads * headDim);
  if (!shapesEqual(k.shape, v.shape) || kd !== headDim || heads % kvHeads !== 0 || k.size !== total * kvHeads * headDim) {
    throw new Error(`raggedAttention: q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)}, v ${shapeStr(v.shape)} do not fit`);
  }
  if (tokens.length !== past.length || kCaches.length !== tokens.length || vCaches.length !== tokens.length) throw new Error('raggedAttention: one token count, past length and cache pair per sequence');
  let sum = 0;
  tokens.forEach((n, s) => {
    const need = (past[s] + n) * kvHeads * headDim;
    if (!(n >= 1 && past[s] >= 0) || kCaches[s].size < need || vCaches[s].size < need) throw new Error(`raggedAttention: sequence ${s} needs ${past[s] + n} cached positions`);
    sum += n;
  });
  if (sum !== total) throw new Error(`raggedAttention: ${sum} tokens in the sequences, ${total} in q`);
  if (isGradEnabled() && [q, k, v].some((t) => t.requiresGrad)) throw new Error('raggedAttention is for inference (run under noGrad)');
  const out = unset(q.shape);
  kernels().raggedAttention(q.storage, k.storage, v.storage, kCaches.map((c) => c.storage), vCaches.map((c) => c.storage), { heads, kvHeads, headDim, scale, tokens, past }, out.storage);
  return out;
}

// ---------------------------------------------------------------- VeRA

/**
 * The VeRA branch λb ⊙ (B[:out, :] · (λd ⊙ (A[:, :in] · x))) over the last axis of x, fused into
 * one kernel each way. A (r, maxIn) and B (maxOut, r) are the shared frozen projections, read in
 * place; `in` is x's last size, `out` is λb's length. Gradients flow to x, λd and λb.
 */
export function veraBranch(x: Tensor, A: Tensor, B: Tensor, lambdaD: Tensor, lambdaB: Tensor): Tensor {
  const inFeatures = x.shape[x.ndim - 1] ?? 1;
  const outFeatures = lambdaB.size;
  if (A.ndim !== 2 || B.ndim !== 2 || B.shape[1] !== A.shape[0] || lambdaD.size !== A.shape[0]) {
    throw new Error(`veraBranch: need A (r, maxIn), B (maxOut, r), λd (r); got A ${shapeStr(A.shape)}, B ${shapeStr(B.shape)}, λd ${shapeStr(lambdaD.shape)}`);
  }
  if (inFeatures > A.shape[1] || outFeatures > B.shape[0]) {
    throw new Error(`veraBranch: a ${inFeatures} → ${outFeatures} layer does not fit projections A ${shapeStr(A.shape)}, B ${shapeStr(B.shape)}`);
  }
  if (A.requiresGrad || B.requiresGrad) throw new Error('veraBranch: the projections A and B are frozen and take no gradient');
  const rank = A.shape[0];
  const p = { rows: inFeatures === 0 ? 0 : x.size / inFeatures, inFeatures, outFeatures, rank, lda: A.shape[1] };
  const k = kernels();
  const out = empty([...x.shape.slice(0, -1), outFeatures]);
  const ax = empty([p.rows, rank]);
  k.veraForward(x.storage, A.storage, B.storage, lambdaD.storage, lambdaB.storage, p, out.storage, ax.storage);
  const xn = x.node; // backward reads x·Aᵀ (ax), not x
  return record(out, 'veraBranch', [x, lambdaD, lambdaB], (g) => {
    const gx = xn.requiresGrad ? empty(xn.shape) : null;
    const gd = lambdaD.requiresGrad ? empty(lambdaD.shape) : null;
    const gb = lambdaB.requiresGrad ? empty(lambdaB.shape) : null;
    k.veraBackward(A.storage, B.storage, lambdaD.storage, lambdaB.storage, ax.storage, g.storage, p, gx?.storage ?? null, false, gd?.storage ?? null, gb?.storage ?? null);
    return [gx, gd, gb];
  });
}

/** Refuse inputs that would need a gradient: inference ops record no tape (under noGrad nothing does, so any input is fine). */
function inferenceOnly(op: string, inputs: Record<string, Tensor | undefined>): void {
  if (!isGradEnabled()) return;
  for (const [name, t] of Object.entries(inputs)) {
    if (t?.requiresGrad) throw new Error(`${op}: inference only, but ${name} requires grad (run it under noGrad, or pass detached tensors)`);
  }
}

/**
 * The VeRA branch with one adapter per row, for inference over a shared pair: row i of x (any
 * leading shape, flattened to rows) takes λd = lambdaDSlab[slots[i]] and λb = lambdaBSlab[slots[i]],
 * so y[i] = λb ⊙ (B[:out, :] · (λd ⊙ (A[:, :in] · x[i]))); a negative slot gives the row no adapter
 * (0, or `into` left as it is). A (r, maxIn), B (maxOut, r) as in veraBranch; lambdaDSlab is
 * (slots, r), lambdaBSlab (slots, out). Returns (..., out), or adds into `into` (that shape) and
 * returns it. x·A[:, :in]ᵀ is one GEMM for the whole batch whatever the slots; with `shared` it is
 * written to shared.ax (unless `ready`) and read from there, so layers fed the same x (q, k and v;
 * gate and up) compute it once. Records no tape.
 */
export function veraRouted(x: Tensor, A: Tensor, B: Tensor, lambdaDSlab: Tensor, lambdaBSlab: Tensor, slots: Int32Array, into?: Tensor, shared?: { ax: Tensor; ready: boolean }): Tensor {
  if (x.ndim < 1) throw new Error(`veraRouted: x must have a feature axis, got ${shapeStr(x.shape)}`);
  const inFeatures = x.shape[x.ndim - 1];
  if (A.ndim !== 2 || B.ndim !== 2 || B.shape[1] !== A.shape[0]) {
    throw new Error(`veraRouted: need A (r, maxIn), B (maxOut, r); got A ${shapeStr(A.shape)}, B ${shapeStr(B.shape)}`);
  }
  const rank = A.shape[0];
  if (lambdaDSlab.ndim !== 2 || lambdaBSlab.ndim !== 2 || lambdaDSlab.shape[1] !== rank || lambdaBSlab.shape[0] !== lambdaDSlab.shape[0]) {
    throw new Error(`veraRouted: need λd slab (slots, ${rank}) and λb slab (slots, out) with the same slot count; got λd ${shapeStr(lambdaDSlab.shape)}, λb ${shapeStr(lambdaBSlab.shape)}`);
  }
  const numSlots = lambdaDSlab.shape[0];
  const outFeatures = lambdaBSlab.shape[1];
  if (inFeatures > A.shape[1] || outFeatures > B.shape[0]) {
    throw new Error(`veraRouted: a ${inFeatures} → ${outFeatures} layer does not fit projections A ${shapeStr(A.shape)}, B ${shapeStr(B.shape)}`);
  }
  const rows = inFeatures === 0 ? sizeOf(x.shape.slice(0, -1)) : x.size / inFeatures;
  if (slots.length !== rows) throw new Error(`veraRouted: ${slots.length} slots for ${rows} rows of x ${shapeStr(x.shape)}`);
  for (let i = 0; i < rows; i++) {
    if (slots[i] >= numSlots) throw new Error(`veraRouted: slot ${slots[i]} (row ${i}) out of range: the slabs hold ${numSlots} adapters`);
  }
  const outShape = [...x.shape.slice(0, -1), outFeatures];
  if (into && !shapesEqual(into.shape, outShape)) throw new Error(`veraRouted: into is ${shapeStr(into.shape)}, the branch gives ${shapeStr(outShape)}`);
  inferenceOnly('veraRouted', { x, A, B, lambdaDSlab, lambdaBSlab, into });
  const out = into ?? empty(outShape);
  const p = { rows, inFeatures, outFeatures, rank, lda: A.shape[1], numSlots };
  if (shared && shared.ax.size < rows * rank) throw new Error(`veraRouted: the shared x·Aᵀ has ${shared.ax.size} values, ${rows} rows × r ${rank} needed`);
  kernels().veraRoutedForward(x.storage, A.storage, B.storage, lambdaDSlab.storage, lambdaBSlab.storage, slots, p, out.storage, into !== undefined,
    shared ? { ax: shared.ax.storage, ready: shared.ready } : undefined);
  return out;
}

/**
 * Routed LoRA for inference: into[t] += scaling·(x[t]·Aᵀ)·Bᵀ for every token t (row of x's leading
 * axes) of every group, A (r, in) and B (out, r) per group; a token is in at most one group.
 * One kernel call where the backend has Kernels.loraRoutedForward, else each group's rows
 * gathered, multiplied and scattered back. Returns `into`. Records no tape.
 */
export function loraRouted(x: Tensor, into: Tensor, groups: readonly { A: Tensor; B: Tensor; scaling: number; rows: Int32Array }[]): Tensor {
  const inFeatures = x.shape[x.ndim - 1];
  const outFeatures = into.shape[into.ndim - 1];
  const tokens = x.size / inFeatures;
  if (x.ndim < 1 || into.ndim < 1 || into.size !== tokens * outFeatures) {
    throw new Error(`loraRouted: x ${shapeStr(x.shape)} and into ${shapeStr(into.shape)} need the same rows`);
  }
  const seen = new Uint8Array(tokens);
  groups.forEach((g, i) => {
    if (g.A.ndim !== 2 || g.B.ndim !== 2 || g.A.shape[0] < 1 || g.A.shape[1] !== inFeatures || g.B.shape[0] !== outFeatures || g.B.shape[1] !== g.A.shape[0]) {
      throw new Error(`loraRouted: group ${i}: need A (r, ${inFeatures}) and B (${outFeatures}, r), got A ${shapeStr(g.A.shape)}, B ${shapeStr(g.B.shape)}`);
    }
    for (const r of g.rows) {
      if (!(r >= 0 && r < tokens)) throw new Error(`loraRouted: group ${i}: row ${r} is outside x's ${tokens} rows`);
      if (seen[r]) throw new Error(`loraRouted: group ${i}: row ${r} is already in a group`);
      seen[r] = 1;
    }
  });
  inferenceOnly('loraRouted', { x, into, ...Object.fromEntries(groups.flatMap((g, i) => [[`groups[${i}].A`, g.A], [`groups[${i}].B`, g.B]])) });
  if (groups.length === 0) return into;
  const k = kernels();
  if (k.loraRoutedForward) {
    k.loraRoutedForward(x.storage, into.storage, inFeatures, outFeatures,
      groups.map((g) => ({ a: g.A.storage, b: g.B.storage, rank: g.A.shape[0], scaling: g.scaling, rows: g.rows })));
    return into;
  }
  const x2 = reshape(x, [tokens, inFeatures]);
  const y2 = reshape(into, [tokens, outFeatures]); // shares into's storage: rows are added in place
  for (const g of groups) {
    const rows = embedding(x2, g.rows);
    scatterAddRows(y2, g.rows, scale(matmul(matmul(rows, g.A, { transB: true }), g.B, { transB: true }), g.scaling));
  }
  return into;
}

/** target[rows[i]] += src[i] in place (target (n, d), src (rows.length, d); rows may repeat); returns target. Records no tape. */
export function scatterAddRows(target: Tensor, rows: Int32Array, src: Tensor): Tensor {
  if (target.ndim !== 2) throw new Error(`scatterAddRows: target must be (n, d), got ${shapeStr(target.shape)}`);
  const [n, d] = target.shape;
  if (src.ndim !== 2 || src.shape[0] !== rows.length || src.shape[1] !== d) {
    throw new Error(`scatterAddRows: need src (${rows.length}, ${d}) for ${rows.length} rows of target ${shapeStr(target.shape)}, got ${shapeStr(src.shape)}`);
  }
  for (let i = 0; i < rows.length; i++) {
    if (!(rows[i] >= 0 && rows[i] < n)) throw new Error(`scatterAddRows: row ${rows[i]} (index ${i}) out of range [0, ${n})`);
  }
  if (src.storage === target.storage) throw new Error('scatterAddRows: src and target share storage');
  inferenceOnly('scatterAddRows', { target, src });
  if (rows.length > 0 && d > 0) kernels().embeddingBackward(src.storage, rows, d, target.storage);
  return target;
}

// ---------------------------------------------------------------- images

export function conv2d(x: Tensor, w: Tensor, bias: Tensor | null, stride = 1, pad = 0): Tensor {
  if (x.ndim !== 4 || w.ndim !== 4) throw new Error(`conv2d: need x (N,C,H,W) and w (Cout,Cin,kh,kw), got ${shapeStr(x.shape)} and ${shapeStr(w.shape)}`);
  const [n, cin, h, wd] = x.shape;
  const [cout, wcin, kh, kw] = w.shape;
  if (wcin !== cin) throw new Error(`conv2d: input has ${cin} channels, weight expects ${wcin}`);
  if (bias !== null && (bias.ndim !== 1 || bias.size !== cout)) throw new Error(`conv2d: bias must be (${cout}) for ${cout} output channels, got ${shapeStr(bias.shape)}`);
  if (!Number.isSafeInteger(stride) || stride < 1) throw new Error(`conv2d: stride must be a positive integer, got ${stride}`);
  if (!Number.isSafeInteger(pad) || pad < 0) throw new Error(`conv2d: pad must be a non-negative integer, got ${pad}`);
  if (kh < 1 || kw < 1) throw new Error(`conv2d: kernel ${kh}×${kw} must be at least 1×1`);
  const oh = Math.floor((h + 2 * pad - kh) / stride) + 1;
  const ow = Math.floor((wd + 2 * pad - kw) / stride) + 1;
  if (oh <= 0 || ow <= 0) throw new Error(`conv2d: kernel ${kh}×${kw} larger than padded input ${h}×${wd}`);
  const p = { n, cin, h, w: wd, cout, kh, kw, stride, pad, oh, ow };
  const k = kernels();
  const out = empty([n, cout, oh, ow]);
  k.conv2d(x.storage, w.storage, bias?.storage ?? null, p, out.storage);
  return record(out, 'conv2d', bias ? [x, w, bias] : [x, w], (g) => {
    const gx = x.requiresGrad ? empty(x.shape) : null;
    const gw = w.requiresGrad ? empty(w.shape) : null;
    const gb = bias?.requiresGrad ? empty(bias.shape) : null;
    k.conv2dBackward(x.storage, w.storage, g.storage, p, gx?.storage ?? null, gw?.storage ?? null, gb?.storage ?? null);
    return bias ? [gx, gw, gb] : [gx, gw];
  });
}

export function maxPool2d(x: Tensor, kernelSize: number, stride = kernelSize): Tensor {
  if (x.ndim !== 4) throw new Error(`maxPool2d: need (N,C,H,W), got ${shapeStr(x.shape)}`);
  const [n, c, h, w] = x.shape;
  if (!Number.isSafeInteger(kernelSize) || kernelSize < 1) throw new Error(`maxPool2d: kernel size must be a positive integer, got ${kernelSize}`);
  if (!Number.isSafeInteger(stride) || stride < 1) throw new Error(`maxPool2d: stride must be a positive integer, got ${stride}`);
  if (kernelSize > h || kernelSize > w) throw new Error(`maxPool2d: kernel ${kernelSize} larger than input ${h}×${w}`);
  const oh = Math.floor((h - kernelSize) / stride) + 1;
  const ow = Math.floor((w - kernelSize) / stride) + 1;
  const p = { n, c, h, w, k: kernelSize, stride, oh, ow };
  const out = empty([n, c, oh, ow]);
  const argmax = new Int32Array(out.size);
  kernels().maxPool2d(x.storage, p, out.storage, argmax);
  const xShape = x.shape;
  return record(out, 'maxPool2d', [x], (g) => {
    const gx = empty(xShape);
    kernels().maxPool2dBackward(g.storage, argmax, p, gx.storage);
    return [gx];
  });
}
