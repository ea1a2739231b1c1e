// Argument checks in front of any backend's kernels. A kernel indexes its buffers with the sizes,
// strides and offsets it is given; a wrong one reads or writes past a buffer (heap corruption in
// the native addon, silent NaN or dropped writes in TypeScript). Every call is checked here against
// the buffers' lengths before it runs, so each backend (ts, native, any added later) gets the same
// one-line errors. The checks cost O(ndim), or O(n) for index arrays the kernel reads anyway.
import type {
  AdamWParams, AttentionParams, BinaryOp, Conv2dParams, Kernels, MatmulParams, Pool2dParams, RaggedAttentionParams, Storage, UnaryOp,
  VeraParams, VeraRoutedParams, LoraRoutedGroup,
} from './kernels.js';
import type { QuantizedData } from './quant.js';

const UNARY: ReadonlySet<string> = new Set<UnaryOp>(['neg', 'exp', 'log', 'tanh', 'sqrt', 'rsqrt', 'sigmoid', 'abs', 'square', 'relu', 'silu', 'gelu_tanh', 'gelu_erf']);
const BINARY: ReadonlySet<string> = new Set<BinaryOp>(['add', 'sub', 'mul', 'div', 'max', 'min']);

function fail(kernel: string, msg: string): never {
  throw new RangeError(`kernel ${kernel}: ${msg}`);
}

/** A non-negative (or ≥ min) safe integer. */
function int(kernel: string, name: string, v: unknown, min = 0): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) fail(kernel, `${name} must be an integer ≥ ${min}, got ${String(v)}`);
  return v;
}

function num(kernel: string, name: string, v: unknown): number {
  if (typeof v !== 'number') fail(kernel, `${name} must be a number, got ${typeof v}`);
  return v;
}

function flag(kernel: string, name: string, v: unknown): boolean {
  if (typeof v !== 'boolean') fail(kernel, `${name} must be a boolean, got ${typeof v}`);
  return v;
}

function storage(kernel: string, name: string, s: unknown): Storage {
  if (typeof s !== 'object' || s === null || typeof (s as Storage).length !== 'number') fail(kernel, `${name} must be a storage`);
  return s as Storage;
}

/** `s` holds at least `need` elements. */
function holds(kernel: string, name: string, s: unknown, need: number): void {
  const have = storage(kernel, name, s).length;
  if (!(have >= need)) fail(kernel, `${name} holds ${have} elements, ${need} needed`);
}

function holdsOpt(kernel: string, name: string, s: unknown, need: number): void {
  if (s !== null && s !== undefined) holds(kernel, name, s, need);
}

function same(kernel: string, names: string[], ss: unknown[]): number {
  const n = storage(kernel, names[0], ss[0]).length;
  for (let i = 1; i < ss.length; i++) {
    const m = storage(kernel, names[i], ss[i]).length;
    if (m !== n) fail(kernel, `${names[i]} holds ${m} elements, ${names[0]} ${n}`);
  }
  return n;
}

function int32s(kernel: string, name: string, v: unknown): Int32Array {
  if (!(v instanceof Int32Array)) fail(kernel, `${name} must be an Int32Array`);
  return v;
}

function shapeOf(kernel: string, name: string, shape: unknown): number[] {
  if (!Array.isArray(shape)) fail(kernel, `${name} must be an array`);
  return shape.map((d, i) => int(kernel, `${name}[${i}]`, d));
}

/** Check that (shape, strides, offset) stays inside a buffer of `length`; returns the element count. */
function reach(kernel: string, name: string, shape: readonly number[], strides: unknown, offset: number, length: number): void {
  if (!Array.isArray(strides) || strides.length !== shape.length) fail(kernel, `${name} strides must be ${shape.length} integers`);
  let lo = offset;
  let hi = offset;
  let count = 1;
  for (let d = 0; d < shape.length; d++) {
    const s = strides[d] as unknown;
    if (typeof s !== 'number' || !Number.isSafeInteger(s)) fail(kernel, `${name} strides[${d}] must be an integer, got ${String(s)}`);
    count *= shape[d];
    const span = (shape[d] - 1) * s;
    if (span < 0) lo += span;
    else hi += span;
  }
  if (count === 0) return;
  if (lo < 0 || hi >= length) fail(kernel, `${name} reaches elements ${lo}..${hi}, the buffer holds ${length}`);
}

const prod = (xs: readonly number[]): number => xs.reduce((a, b) => a * b, 1);

function rowsCols(kernel: string, rows: unknown, cols: unknown): number {
  return int(kernel, 'rows', rows) * int(kernel, 'cols', cols);
}

/**
 * A row-normalization's buffers: `full` hold rows × cols, `perCol` (optional: weight, bias and
 * their gradients) cols, `perRow` (saved statistics) rows, `fullOpt` (an optional gradient) rows × cols.
 */
function normCheck(kernel: string, rows: unknown, cols: unknown, full: Record<string, unknown>, perCol: Record<string, unknown>,
  perRow: Record<string, unknown>, fullOpt: Record<string, unknown> = {}): void {
  const n = rowsCols(kernel, rows, cols);
  for (const [name, s] of Object.entries(full)) holds(kernel, name, s, n);
  for (const [name, s] of Object.entries(fullOpt)) holdsOpt(kernel, name, s, n);
  for (const [name, s] of Object.entries(perCol)) holdsOpt(kernel, name, s, cols as number);
  for (const [name, s] of Object.entries(perRow)) holds(kernel, name, s, rows as number);
}

/** Every named buffer holds rows × cols values. */
function rowwise(kernel: string, rows: unknown, cols: unknown, buffers: Record<string, unknown>): void {
  const n = rowsCols(kernel, rows, cols);
  for (const [name, s] of Object.entries(buffers)) holds(kernel, name, s, n);
}

function matmulCheck(a: Storage, b: Storage, out: Storage, p: MatmulParams): void {
  const K = 'matmul';
  const batch = int(K, 'batch', p.batch);
  const m = int(K, 'm', p.m);
  const n = int(K, 'n', p.n);
  const k = int(K, 'k', p.k);
  flag(K, 'transA', p.transA);
  flag(K, 'transB', p.transB);
  flag(K, 'accumulate', p.accumulate);
  const sa = int(K, 'strideA', p.strideA);
  const sb = int(K, 'strideB', p.strideB);
  if (batch > 0 && m * k > 0) holds(K, 'a', a, (batch - 1) * sa + m * k);
  if (batch > 0 && k * n > 0) holds(K, 'b', b, (batch - 1) * sb + k * n);
  holds(K, 'out', out, batch * m * n);
}

/** A compact weight: its format, sizes and every array it carries agree, so a kernel can index them blindly. */
export function quantizedCheck(K: string, w: QuantizedData): { rows: number; cols: number } {
  if (typeof w !== 'object' || w === null) fail(K, 'w must be a quantized weight');
  const rows = int(K, 'w.rows', w.rows);
  const cols = int(K, 'w.cols', w.cols);
  const n = rows * cols;
  if (!(w.data instanceof Uint8Array)) fail(K, 'w.data must be a Uint8Array');
  if (!(w.scales instanceof Float32Array)) fail(K, 'w.scales must be a Float32Array');
  if (!(w.code instanceof Float32Array)) fail(K, 'w.code must be a Float32Array');
  const bytes = (what: string, have: number, need: number): void => {
    if (have < need) fail(K, `${what} holds ${have} elements, ${need} needed`);
  };
  if (w.format === 'bf16') bytes('w.data', w.data.length, 2 * n);
  else if (w.format === 'int8') {
    bytes('w.data', w.data.length, n);
    bytes('w.scales', w.scales.length, rows);
  } else if (w.format === 'nf4') {
    const bs = int(K, 'w.blockSize', w.blockSize, 1);
    // bitsandbytes' block sizes: powers of two from 16 to 4096 (64 here unless a checkpoint says otherwise)
    if (bs < 16 || bs > 4096 || (bs & (bs - 1)) !== 0) fail(K, `w.blockSize must be a power of two in [16, 4096], got ${bs}`);
    const blocks = Math.ceil(n / bs);
    bytes('w.data', w.data.length, Math.ceil(n / 2));
    if (w.code.length !== 16) fail(K, `w.code must hold 16 values, got ${w.code.length}`);
    if (w.nested) {
      const q = w.nested;
      if (!(q.qscales instanceof Uint8Array) || !(q.scales2 instanceof Float32Array) || !(q.code2 instanceof Float32Array)) fail(K, 'w.nested must hold Uint8Array qscales, Float32Array scales2 and code2');
      bytes('w.nested.qscales', q.qscales.length, blocks);
      bytes('w.nested.scales2', q.scales2.length, Math.ceil(blocks / 256));
      if (q.code2.length !== 256) fail(K, `w.nested.code2 must hold 256 values, got ${q.code2.length}`);
      num(K, 'w.nested.offset', q.offset);
    } else bytes('w.scales', w.scales.length, blocks);
  } else fail(K, `w.format must be bf16, int8 or nf4, got ${String((w as { format: unknown }).format)}`);
  return { rows, cols };
}

function attentionCheck(K: string, p: AttentionParams): { qSize: number; kvSize: number; rows: number } {
  const batch = int(K, 'batch', p.batch);
  const heads = int(K, 'heads', p.heads, 1);
  const kvHeads = int(K, 'kvHeads', p.kvHeads, 1);
  if (heads % kvHeads !== 0) fail(K, `heads ${heads} is not a multiple of kvHeads ${kvHeads}`);
  const tq = int(K, 'tq', p.tq);
  const tk = int(K, 'tk', p.tk);
  const d = int(K, 'headDim', p.headDim);
  num(K, 'scale', p.scale);
  flag(K, 'causal', p.causal);
  const off = p.causalOffset;
  if (typeof off !== 'number' || !Number.isSafeInteger(off)) fail(K, `causalOffset must be an integer, got ${String(off)}`);
  const kvStride = p.kvStride === undefined ? tk : int(K, 'kvStride', p.kvStride);
  if (kvStride < tk) fail(K, `kvStride ${kvStride} < tk ${tk}`);
  if (p.keyMask !== null && p.keyMask !== undefined) {
    if (!(p.keyMask instanceof Float32Array)) fail(K, 'keyMask must be a Float32Array or null');
    if (p.keyMask.length < batch * tk) fail(K, `keyMask holds ${p.keyMask.length} values, batch ${batch} × tk ${tk} needed`);
  }
  return { qSize: batch * heads * tq * d, kvSize: batch * kvHeads * kvStride * d, rows: batch * heads * tq };
}

function convCheck(K: string, p: Conv2dParams): { x: number; w: number; y: number } {
  const n = int(K, 'n', p.n);
  const cin = int(K, 'cin', p.cin);
  const h = int(K, 'h', p.h);
  const w = int(K, 'w', p.w);
  const cout = int(K, 'cout', p.cout);
  const kh = int(K, 'kh', p.kh, 1);
  const kw = int(K, 'kw', p.kw, 1);
  const stride = int(K, 'stride', p.stride, 1);
  const pad = int(K, 'pad', p.pad);
  const oh = int(K, 'oh', p.oh);
  const ow = int(K, 'ow', p.ow);
  if (oh !== Math.floor((h + 2 * pad - kh) / stride) + 1 || ow !== Math.floor((w + 2 * pad - kw) / stride) + 1) {
    fail(K, `output ${oh}×${ow} does not follow from input ${h}×${w}, kernel ${kh}×${kw}, stride ${stride}, pad ${pad}`);
  }
  return { x: n * cin * h * w, w: cout * cin * kh * kw, y: n * cout * oh * ow };
}

function poolCheck(K: string, p: Pool2dParams): { x: number; y: number } {
  const n = int(K, 'n', p.n);
  const c = int(K, 'c', p.c);
  const h = int(K, 'h', p.h);
  const w = int(K, 'w', p.w);
  const k = int(K, 'k', p.k, 1);
  const stride = int(K, 'stride', p.stride, 1);
  const oh = int(K, 'oh', p.oh);
  const ow = int(K, 'ow', p.ow);
  // every window lies inside the image
  if ((oh > 0 && (oh - 1) * stride + k > h) || (ow > 0 && (ow - 1) * stride + k > w)) fail(K, `output ${oh}×${ow} with kernel ${k}, stride ${stride} does not fit input ${h}×${w}`);
  return { x: n * c * h * w, y: n * c * oh * ow };
}

/** Elements of A (rank, lda) that A[:, :inFeatures] touches. */
const aExtent = (s: { rank: number; inF: number; lda: number }): number => (s.rank > 0 && s.inF > 0 ? (s.rank - 1) * s.lda + s.inF : 0);

function veraCheck(K: string, p: VeraParams | VeraRoutedParams): { rows: number; inF: number; outF: number; rank: number; lda: number } {
  const rows = int(K, 'rows', p.rows);
  const inF = int(K, 'inFeatures', p.inFeatures);
  const outF = int(K, 'outFeatures', p.outFeatures);
  const rank = int(K, 'rank', p.rank);
  const lda = int(K, 'lda', p.lda);
  if (inF > lda) fail(K, `inFeatures ${inF} > lda ${lda}`);
  return { rows, inF, outF, rank, lda };
}

/** `k` with every kernel's arguments checked first; memory functions and `name` pass through. */
export function checkedKernels(k: Kernels): Kernels {
  return {
    name: k.name,
    alloc: (length) => k.alloc(int('alloc', 'length', length)),
    ...(k.allocUnset ? { allocUnset: (length: number) => k.allocUnset!(int('allocUnset', 'length', length)) } : {}),
    fromArray: (data) => {
      if (!(data instanceof Float32Array)) fail('fromArray', 'data must be a Float32Array');
      return k.fromArray(data);
    },
    read: (s) => k.read(s),
    ...(k.readAsync ? { readAsync: (s: Storage) => k.readAsync!(s) } : {}),
    write: (s, data, offset) => {
      if (!(data instanceof Float32Array)) fail('write', 'data must be a Float32Array');
      holds('write', 's', s, int('write', 'offset', offset) + data.length);
      k.write(s, data, offset);
    },
    ...(k.free ? { free: (s: Storage) => k.free?.(s) } : {}),
    fill: (out, value) => {
      storage('fill', 'out', out);
      k.fill(out, num('fill', 'value', value));
    },

    gather: (src, shape, strides, offset, out) => {
      const s = shapeOf('gather', 'shape', shape);
      reach('gather', 'src', s, strides, int('gather', 'offset', offset), storage('gather', 'src', src).length);
      holds('gather', 'out', out, prod(s));
      k.gather(src, shape, strides, offset, out);
    },
    scatter: (src, shape, strides, offset, out, accumulate) => {
      const s = shapeOf('scatter', 'shape', shape);
      holds('scatter', 'src', src, prod(s));
      reach('scatter', 'out', s, strides, int('scatter', 'offset', offset), storage('scatter', 'out', out).length);
      flag('scatter', 'accumulate', accumulate);
      k.scatter(src, shape, strides, offset, out, accumulate);
    },

    unary: (op, x, out) => {
      if (!UNARY.has(op)) fail('unary', `unknown op ${String(op)}`);
      same('unary', ['x', 'out'], [x, out]);
      k.unary(op, x, out);
    },
    unaryBackward: (op, x, y, gy, gx) => {
      if (!UNARY.has(op)) fail('unaryBackward', `unknown op ${String(op)}`);
      same('unaryBackward', ['x', 'y', 'gy', 'gx'], [x, y, gy, gx]);
      k.unaryBackward(op, x, y, gy, gx);
    },
    binary: (op, a, aStrides, b, bStrides, out, outShape) => {
      if (!BINARY.has(op)) fail('binary', `unknown op ${String(op)}`);
      const s = shapeOf('binary', 'outShape', outShape);
      reach('binary', 'a', s, aStrides, 0, storage('binary', 'a', a).length);
      reach('binary', 'b', s, bStrides, 0, storage('binary', 'b', b).length);
      holds('binary', 'out', out, prod(s));
      k.binary(op, a, aStrides, b, bStrides, out, outShape);
    },
    affine: (x, mul, add, out) => {
      same('affine', ['x', 'out'], [x, out]);
      k.affine(x, num('affine', 'mul', mul), num('affine', 'add', add), out);
    },
    powScalar: (x, p, out) => {
      same('powScalar', ['x', 'out'], [x, out]);
      k.powScalar(x, num('powScalar', 'p', p), out);
    },
    axpy: (a, alpha, b, out) => {
      same('axpy', ['a', 'b', 'out'], [a, b, out]);
      k.axpy(a, num('axpy', 'alpha', alpha), b, out);
    },

    sumReduce: (x, outer, reduce, inner, out) => {
      const o = int('sumReduce', 'outer', outer);
      const i = int('sumReduce', 'inner', inner);
      holds('sumReduce', 'x', x, o * int('sumReduce', 'reduce', reduce) * i);
      holds('sumReduce', 'out', out, o * i);
      k.sumReduce(x, outer, reduce, inner, out);
    },
    maxReduce: (x, outer, reduce, inner, out) => {
      const o = int('maxReduce', 'outer', outer);
      const i = int('maxReduce', 'inner', inner);
      holds('maxReduce', 'x', x, o * int('maxReduce', 'reduce', reduce) * i);
      holds('maxReduce', 'out', out, o * i);
      k.maxReduce(x, outer, reduce, inner, out);
    },
    argmaxRows: (x, rows, cols, out) => {
      const n = rowsCols('argmaxRows', rows, cols);
      holds('argmaxRows', 'x', x, n);
      holds('argmaxRows', 'out', out, rows as number);
      if ((cols as number) > 1 << 24) fail('argmaxRows', `cols ${cols} past 2^24: an index would not be exact as a float`);
      k.argmaxRows(x, rows, cols, out);
    },
    sumSquares: (x) => {
      storage('sumSquares', 'x', x);
      return k.sumSquares(x);
    },

    matmul: (a, b, out, p) => {
      matmulCheck(a, b, out, p);
      k.matmul(a, b, out, p);
    },

    quantMatmul: (x, w, rows, out) => {
      const K = 'quantMatmul';
      const d = quantizedCheck(K, w);
      const m = int(K, 'rows', rows);
      holds(K, 'x', x, m * d.cols);
      holds(K, 'out', out, m * d.rows);
      k.quantMatmul(x, w, rows, out);
    },
    quantMatmulInputGrad: (gy, w, rows, gx) => {
      const K = 'quantMatmulInputGrad';
      const d = quantizedCheck(K, w);
      const m = int(K, 'rows', rows);
      holds(K, 'gy', gy, m * d.rows);
      holds(K, 'gx', gx, m * d.cols);
      k.quantMatmulInputGrad(gy, w, rows, gx);
    },

    softmax: (x, rows, cols, out) => {
      rowwise('softmax', rows, cols, { x, out });
      k.softmax(x, rows, cols, out);
    },
    softmaxBackward: (y, gy, rows, cols, gx) => {
      rowwise('softmaxBackward', rows, cols, { y, gy, gx });
      k.softmaxBackward(y, gy, rows, cols, gx);
    },
    logSoftmax: (x, rows, cols, out) => {
      rowwise('logSoftmax', rows, cols, { x, out });
      k.logSoftmax(x, rows, cols, out);
    },
    logSoftmaxBackward: (y, gy, rows, cols, gx) => {
      rowwise('logSoftmaxBackward', rows, cols, { y, gy, gx });
      k.logSoftmaxBackward(y, gy, rows, cols, gx);
    },
    crossEntropy: (logits, targets, rows, cols, ignoreIndex, loss, lse) => {
      const K = 'crossEntropy';
      holds(K, 'logits', logits, rowsCols(K, rows, cols));
      targetsCheck(K, targets, rows, cols, ignoreIndex);
      holds(K, 'loss', loss, rows);
      holds(K, 'lse', lse, rows);
      k.crossEntropy(logits, targets, rows, cols, ignoreIndex, loss, lse);
    },
    crossEntropyBackward: (logits, lse, targets, gLoss, rows, cols, ignoreIndex, gx) => {
      const K = 'crossEntropyBackward';
      const n = rowsCols(K, rows, cols);
      holds(K, 'logits', logits, n);
      holds(K, 'gx', gx, n);
      targetsCheck(K, targets, rows, cols, ignoreIndex);
      holds(K, 'lse', lse, rows);
      holds(K, 'gLoss', gLoss, rows);
      k.crossEntropyBackward(logits, lse, targets, gLoss, rows, cols, ignoreIndex, gx);
    },
    layerNorm: (x, weight, bias, rows, cols, eps, out, mean, rstd) => {
      normCheck('layerNorm', rows, cols, { x, out }, { weight, bias }, { mean, rstd });
      k.layerNorm(x, weight, bias, rows, cols, num('layerNorm', 'eps', eps), out, mean, rstd);
    },
    layerNormBackward: (x, weight, mean, rstd, gy, rows, cols, gx, gWeight, gBias) => {
      normCheck('layerNormBackward', rows, cols, { x, gy }, { weight, gWeight, gBias }, { mean, rstd }, { gx });
      k.layerNormBackward(x, weight, mean, rstd, gy, rows, cols, gx, gWeight, gBias);
    },
    rmsNorm: (x, weight, rows, cols, eps, out, rstd) => {
      normCheck('rmsNorm', rows, cols, { x, out }, { weight }, { rstd });
      k.rmsNorm(x, weight, rows, cols, num('rmsNorm', 'eps', eps), out, rstd);
    },
    rmsNormBackward: (x, weight, rstd, gy, rows, cols, gx, gWeight) => {
      normCheck('rmsNormBackward', rows, cols, { x, gy }, { weight, gWeight }, { rstd }, { gx });
      k.rmsNormBackward(x, weight, rstd, gy, rows, cols, gx, gWeight);
    },

    embedding: (weight, ids, dim, out) => {
      idsCheck('embedding', 'weight', weight, ids, dim);
      holds('embedding', 'out', out, ids.length * dim);
      k.embedding(weight, ids, dim, out);
    },
    embeddingBackward: (gy, ids, dim, gWeight) => {
      idsCheck('embeddingBackward', 'gWeight', gWeight, ids, dim);
      holds('embeddingBackward', 'gy', gy, ids.length * dim);
      k.embeddingBackward(gy, ids, dim, gWeight);
    },

    rotary: (x, cos, sin, p, out) => {
      const K = 'rotary';
      const rows = int(K, 'rows', p.rows);
      const heads = int(K, 'heads', p.heads);
      const dim = int(K, 'dim', p.dim);
      if (dim % 2 !== 0) fail(K, `dim must be even, got ${dim}`);
      flag(K, 'transpose', p.transpose);
      holds(K, 'x', x, rows * heads * dim);
      holds(K, 'out', out, rows * heads * dim);
      holds(K, 'cos', cos, rows * dim);
      holds(K, 'sin', sin, rows * dim);
      if (out === x) fail(K, 'out must not be x (each element reads its partner in the other half)');
      k.rotary(x, cos, sin, p, out);
    },
    attention: (q, kk, v, p, out, lse) => {
      const K = 'attention';
      const s = attentionCheck(K, p);
      holds(K, 'q', q, s.qSize);
      holds(K, 'k', kk, s.kvSize);
      holds(K, 'v', v, s.kvSize);
      holds(K, 'out', out, s.qSize);
      holds(K, 'lse', lse, s.rows);
      k.attention(q, kk, v, p, out, lse);
    },
    attentionBackward: (q, kk, v, out, lse, gOut, p, gq, gk, gv) => {
      const K = 'attentionBackward';
      const s = attentionCheck(K, p);
      for (const [name, t] of [['q', q], ['out', out], ['gOut', gOut]] as const) holds(K, name, t, s.qSize);
      holds(K, 'k', kk, s.kvSize);
      holds(K, 'v', v, s.kvSize);
      holds(K, 'lse', lse, s.rows);
      holdsOpt(K, 'gq', gq, s.qSize);
      holdsOpt(K, 'gk', gk, s.kvSize);
      holdsOpt(K, 'gv', gv, s.kvSize);
      k.attentionBackward(q, kk, v, out, lse, gOut, p, gq, gk, gv);
    },
    raggedAttention: (q, kNew, vNew, kCaches, vCaches, p, out) => {
      raggedCheck(q, kNew, vNew, kCaches, vCaches, p, out);
      k.raggedAttention(q, kNew, vNew, kCaches, vCaches, p, out);
    },

    conv2d: (x, w, bias, p, out) => {
      const K = 'conv2d';
      const s = convCheck(K, p);
      holds(K, 'x', x, s.x);
      holds(K, 'w', w, s.w);
      holdsOpt(K, 'bias', bias, p.cout);
      holds(K, 'out', out, s.y);
      k.conv2d(x, w, bias, p, out);
    },
    conv2dBackward: (x, w, gy, p, gx, gw, gb) => {
      const K = 'conv2dBackward';
      const s = convCheck(K, p);
      holds(K, 'x', x, s.x);
      holds(K, 'w', w, s.w);
      holds(K, 'gy', gy, s.y);
      holdsOpt(K, 'gx', gx, s.x);
      holdsOpt(K, 'gw', gw, s.w);
      holdsOpt(K, 'gb', gb, p.cout);
      k.conv2dBackward(x, w, gy, p, gx, gw, gb);
    },
    maxPool2d: (x, p, out, argmax) => {
      const K = 'maxPool2d';
      const s = poolCheck(K, p);
      holds(K, 'x', x, s.x);
      holds(K, 'out', out, s.y);
      if (int32s(K, 'argmax', argmax).length < s.y) fail(K, `argmax holds ${argmax.length} elements, ${s.y} needed`);
      k.maxPool2d(x, p, out, argmax);
    },
    maxPool2dBackward: (gy, argmax, p, gx) => {
      const K = 'maxPool2dBackward';
      const s = poolCheck(K, p);
      const idx = int32s(K, 'argmax', argmax);
      holds(K, 'gy', gy, idx.length);
      holds(K, 'gx', gx, s.x);
      for (let i = 0; i < idx.length; i++) if (!(idx[i] >= 0 && idx[i] < s.x)) fail(K, `argmax[${i}] = ${idx[i]} outside the input of ${s.x}`);
      k.maxPool2dBackward(gy, argmax, p, gx);
    },

    adamw: (param, grad, m, v, p: AdamWParams) => {
      const K = 'adamw';
      same(K, ['param', 'grad', 'm', 'v'], [param, grad, m, v]);
      for (const f of ['lr', 'beta1', 'beta2', 'eps', 'weightDecay', 'step'] as const) num(K, f, p[f]);
      k.adamw(param, grad, m, v, p);
    },

    veraForward: (x, a, b, lambdaD, lambdaB, p, out, ax) => {
      const K = 'veraForward';
      const s = veraCheck(K, p);
      holds(K, 'x', x, s.rows * s.inF);
      holds(K, 'a', a, aExtent(s));
      holds(K, 'b', b, s.outF * s.rank);
      holds(K, 'lambdaD', lambdaD, s.rank);
      holds(K, 'lambdaB', lambdaB, s.outF);
      holds(K, 'out', out, s.rows * s.outF);
      holds(K, 'ax', ax, s.rows * s.rank);
      k.veraForward(x, a, b, lambdaD, lambdaB, p, out, ax);
    },
    veraBackward: (a, b, lambdaD, lambdaB, ax, gy, p, gx, accumulateGx, gLambdaD, gLambdaB) => {
      const K = 'veraBackward';
      const s = veraCheck(K, p);
      holds(K, 'a', a, aExtent(s));
      holds(K, 'b', b, s.outF * s.rank);
      holds(K, 'lambdaD', lambdaD, s.rank);
      holds(K, 'lambdaB', lambdaB, s.outF);
      holds(K, 'ax', ax, s.rows * s.rank);
      holds(K, 'gy', gy, s.rows * s.outF);
      holdsOpt(K, 'gx', gx, s.rows * s.inF);
      flag(K, 'accumulateGx', accumulateGx);
      holdsOpt(K, 'gLambdaD', gLambdaD, s.rank);
      holdsOpt(K, 'gLambdaB', gLambdaB, s.outF);
      k.veraBackward(a, b, lambdaD, lambdaB, ax, gy, p, gx, accumulateGx, gLambdaD, gLambdaB);
    },
    veraRoutedForward: (x, a, b, lambdaD, lambdaB, slots, p, out, accumulate, shared) => {
      const K = 'veraRoutedForward';
      const s = veraCheck(K, p);
      const numSlots = int(K, 'numSlots', p.numSlots);
      holds(K, 'x', x, s.rows * s.inF);
      holds(K, 'a', a, aExtent(s));
      holds(K, 'b', b, s.outF * s.rank);
      holds(K, 'lambdaD', lambdaD, numSlots * s.rank);
      holds(K, 'lambdaB', lambdaB, numSlots * s.outF);
      holds(K, 'out', out, s.rows * s.outF);
      flag(K, 'accumulate', accumulate);
      const sl = int32s(K, 'slots', slots);
      if (sl.length !== s.rows) fail(K, `${sl.length} slots for ${s.rows} rows`);
      for (let i = 0; i < sl.length; i++) if (sl[i] >= numSlots) fail(K, `row ${i} uses slot ${sl[i]}, but the slabs hold ${numSlots}`);
      if (shared !== undefined) {
        holds(K, 'shared.ax', shared.ax, s.rows * s.rank);
        flag(K, 'shared.ready', shared.ready);
      }
      k.veraRoutedForward(x, a, b, lambdaD, lambdaB, slots, p, out, accumulate, shared);
    },
    ...(k.loraRoutedForward ? {
      loraRoutedForward: (x: Storage, y: Storage, inF: number, outF: number, groups: readonly LoraRoutedGroup[]) => {
        const K = 'loraRoutedForward';
        const inFeatures = int(K, 'inFeatures', inF);
        const outFeatures = int(K, 'outFeatures', outF);
        if (inFeatures < 1 || outFeatures < 1) fail(K, `inFeatures and outFeatures must be ≥ 1, got ${inFeatures} and ${outFeatures}`);
        storage(K, 'x', x);
        if (!Array.isArray(groups)) fail(K, 'groups must be an array');
        groups.forEach((g, i) => {
          const rank = int(K, `groups[${i}].rank`, g.rank);
          if (rank < 1) fail(K, `groups[${i}].rank must be ≥ 1, got ${rank}`);
          num(K, `groups[${i}].scaling`, g.scaling);
          holds(K, `groups[${i}].a`, g.a, rank * inFeatures);
          holds(K, `groups[${i}].b`, g.b, outFeatures * rank);
          int32s(K, `groups[${i}].rows`, g.rows);
        });
        k.loraRoutedForward!(x, y, inFeatures, outFeatures, groups);
      },
    } : {}),
  };
}

function targetsCheck(K: string, targets: unknown, rows: number, cols: number, ignoreIndex: unknown): void {
  const t = int32s(K, 'targets', targets);
  if (typeof ignoreIndex !== 'number' || !Number.isSafeInteger(ignoreIndex)) fail(K, `ignoreIndex must be an integer, got ${String(ignoreIndex)}`);
  if (t.length < rows) fail(K, `targets holds ${t.length} values for ${rows} rows`);
  for (let i = 0; i < rows; i++) {
    if (t[i] !== ignoreIndex && !(t[i] >= 0 && t[i] < cols)) fail(K, `targets[${i}] = ${t[i]} out of range [0, ${cols})`);
  }
}

function idsCheck(K: string, tableName: string, table: unknown, ids: unknown, dim: unknown): void {
  const d = int(K, 'dim', dim);
  const v = int32s(K, 'ids', ids);
  const len = storage(K, tableName, table).length;
  const rows = d === 0 ? Infinity : Math.floor(len / d);
  for (let i = 0; i < v.length; i++) if (!(v[i] >= 0 && v[i] < rows)) fail(K, `ids[${i}] = ${v[i]} outside the ${tableName} of ${len} elements (dim ${d})`);
}

function raggedCheck(q: Storage, kNew: Storage, vNew: Storage, kCaches: readonly Storage[], vCaches: readonly Storage[], p: RaggedAttentionParams, out: Storage): void {
  const K = 'raggedAttention';
  const heads = int(K, 'heads', p.heads, 1);
  const kvHeads = int(K, 'kvHeads', p.kvHeads, 1);
  const d = int(K, 'headDim', p.headDim, 1);
  if (heads % kvHeads !== 0) fail(K, `heads ${heads} is not a multiple of kvHeads ${kvHeads}`);
  num(K, 'scale', p.scale);
  const tokens = int32s(K, 'tokens', p.tokens);
  const past = int32s(K, 'past', p.past);
  if (!Array.isArray(kCaches) || !Array.isArray(vCaches)) fail(K, 'kCaches and vCaches must be arrays');
  if (past.length !== tokens.length || kCaches.length !== tokens.length || vCaches.length !== tokens.length) fail(K, 'one token count, past length and cache pair per sequence');
  const row = kvHeads * d;
  let total = 0;
  for (let s = 0; s < tokens.length; s++) {
    if (!(tokens[s] >= 1 && past[s] >= 0)) fail(K, `sequence ${s}: token count ${tokens[s]} must be ≥ 1 and past ${past[s]} ≥ 0`);
    holds(K, `kCaches[${s}]`, kCaches[s], (past[s] + tokens[s]) * row);
    holds(K, `vCaches[${s}]`, vCaches[s], (past[s] + tokens[s]) * row);
    total += tokens[s];
  }
  holds(K, 'q', q, total * heads * d);
  holds(K, 'out', out, total * heads * d);
  holds(K, 'kNew', kNew, total * row);
  holds(K, 'vNew', vNew, total * row);
}
