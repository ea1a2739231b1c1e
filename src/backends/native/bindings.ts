// The Kernels interface over the native addon's binding functions (the NativeAddon shape): the
// same C++ entry points serve the N-API addon (native/index.ts) and the WebAssembly module
// (backends/wasm), which supply their own storages. No Node imports: the browser bundle uses it.
import type { Kernels, Storage, UnaryOp, BinaryOp, QuantizedData } from '../../tensor/kernels.js';
import type { NativeAddon } from './addon.js';

/** No shared x·Aᵀ: the kernel computes its own. */
const NO_SHARED_AX = new Float32Array(0);

const f = (s: Storage): Float32Array => s as Float32Array;
const fOrNull = (s: Storage | null): Float32Array | null => (s === null ? null : (s as Float32Array));

// op codes: the order of the enums in native/kernels.cc
const UNARY: readonly UnaryOp[] = ['neg', 'exp', 'log', 'tanh', 'sqrt', 'rsqrt', 'sigmoid', 'abs', 'square', 'relu', 'silu', 'gelu_tanh', 'gelu_erf'];
const BINARY: readonly BinaryOp[] = ['add', 'sub', 'mul', 'div', 'max', 'min'];
const unaryCode = (op: UnaryOp): number => UNARY.indexOf(op);
const binaryCode = (op: BinaryOp): number => BINARY.indexOf(op);

const QUANT_CODES = { bf16: 0, int8: 1, nf4: 2 } as const;

function quantCall(n: NativeAddon, x: Storage, w: QuantizedData, rows: number, out: Storage, inputGrad: boolean): void {
  const q = w.nested;
  n.quantMatmul(f(x), rows, QUANT_CODES[w.format], w.rows, w.cols, w.data, w.scales, w.blockSize, w.code,
    q ? q.qscales : null, q ? q.scales2 : null, q ? q.code2 : null, q ? q.offset : 0, f(out), inputGrad);
}

/** Kernels.loraRoutedForward over the binding: the groups' token lists flattened with their starts. */
function loraRouted(call: NonNullable<NativeAddon['loraRoutedForward']>): NonNullable<Kernels['loraRoutedForward']> {
  return (x, y, inF, outF, groups) => {
    const starts = [0];
    for (const g of groups) starts.push(starts[starts.length - 1] + g.rows.length);
    const rows = new Int32Array(starts[starts.length - 1]);
    groups.forEach((g, i) => rows.set(g.rows, starts[i]));
    call(f(x), f(y), inF, outF, groups.map((g) => f(g.a)), groups.map((g) => f(g.b)), groups.map((g) => g.rank), groups.map((g) => g.scaling), starts, rows);
  };
}

/**
 * Kernels calling `n`'s bindings; the memory functions are the native backend's (storages are
 * Float32Arrays), which a backend with other storages replaces.
 */
export function bindingKernels(n: NativeAddon): Kernels {
  return {
    name: 'native',

    alloc: (length) => new Float32Array(length),
    fromArray: (data) => data.slice(),
    read: (s) => f(s),
    write: (s, data, offset) => f(s).set(data, offset),
    free: (s) => n.free(f(s)),
    fill: (out, value) => n.fill(f(out), value),

    raggedAttention: (q, kNew, vNew, kCaches, vCaches, p, out) =>
      n.raggedAttention(f(q), f(kNew), f(vNew), kCaches.map(f), vCaches.map(f), p.heads, p.kvHeads, p.headDim, p.scale, p.tokens, p.past, f(out)),

    gather: (src, shape, strides, offset, out) => n.gather(f(src), shape, strides, offset, f(out)),
    scatter: (src, shape, strides, offset, out, accumulate) => n.scatter(f(src), shape, strides, offset, f(out), accumulate),

    unary: (op, x, out) => n.unary(unaryCode(op), f(x), f(out)),
    unaryBackward: (op, x, y, gy, gx) => n.unaryBackward(unaryCode(op), f(x), f(y), f(gy), f(gx)),
    binary: (op, a, aStrides, b, bStrides, out, outShape) => n.binary(binaryCode(op), f(a), aStrides, f(b), bStrides, f(out), outShape),
    affine: (x, mul, add, out) => n.affine(f(x), mul, add, f(out)),
    powScalar: (x, p, out) => n.powScalar(f(x), p, f(out)),
    axpy: (a, alpha, b, out) => n.axpy(f(a), alpha, f(b), f(out)),

    sumReduce: (x, outer, reduce, inner, out) => n.sumReduce(f(x), outer, reduce, inner, f(out)),
    maxReduce: (x, outer, reduce, inner, out) => n.maxReduce(f(x), outer, reduce, inner, f(out)),
    sumSquares: (x) => n.sumSquares(f(x)),
    argmaxRows: (x, rows, cols, out) => n.argmaxRows(f(x), rows, cols, f(out)),

    matmul: (a, b, out, p) => n.matmul(f(a), f(b), f(out), p.batch, p.m, p.n, p.k, p.transA, p.transB, p.strideA, p.strideB, p.accumulate),

    quantMatmul: (x, w, rows, out) => quantCall(n, x, w, rows, out, false),
    quantMatmulInputGrad: (gy, w, rows, gx) => quantCall(n, gy, w, rows, gx, true),

    softmax: (x, rows, cols, out) => n.softmax(f(x), rows, cols, f(out)),
    softmaxBackward: (y, gy, rows, cols, gx) => n.softmaxBackward(f(y), f(gy), rows, cols, f(gx)),
    logSoftmax: (x, rows, cols, out) => n.logSoftmax(f(x), rows, cols, f(out)),
    logSoftmaxBackward: (y, gy, rows, cols, gx) => n.logSoftmaxBackward(f(y), f(gy), rows, cols, f(gx)),
    crossEntropy: (logits, targets, rows, cols, ignoreIndex, loss, lse) => n.crossEntropy(f(logits), targets, rows, cols, ignoreIndex, f(loss), f(lse)),
    crossEntropyBackward: (logits, lse, targets, gLoss, rows, cols, ignoreIndex, gx) =>
      n.crossEntropyBackward(f(logits), f(lse), targets, f(gLoss), rows, cols, ignoreIndex, f(gx)),
    layerNorm: (x, w, b, rows, cols, eps, out, mean, rstd) => n.layerNorm(f(x), fOrNull(w), fOrNull(b), rows, cols, eps, f(out), f(mean), f(rstd)),
    layerNormBackward: (x, w, mean, rstd, gy, rows, cols, gx, gw, gb) =>
      n.layerNormBackward(f(x), fOrNull(w), f(mean), f(rstd), f(gy), rows, cols, fOrNull(gx), fOrNull(gw), fOrNull(gb)),
    rotary: (x, cos, sin, p, out) => n.rotary(f(x), f(cos), f(sin), p.rows, p.heads, p.dim, p.transpose, f(out)),
    rmsNorm: (x, w, rows, cols, eps, out, rstd) => n.rmsNorm(f(x), fOrNull(w), rows, cols, eps, f(out), f(rstd)),
    rmsNormBackward: (x, w, rstd, gy, rows, cols, gx, gw) => n.rmsNormBackward(f(x), fOrNull(w), f(rstd), f(gy), rows, cols, fOrNull(gx), fOrNull(gw)),

    embedding: (w, ids, dim, out) => n.embedding(f(w), ids, dim, f(out)),
    embeddingBackward: (gy, ids, dim, gw) => n.embeddingBackward(f(gy), ids, dim, f(gw)),

    attention: (q, k, v, p, out, lse) =>
      n.attention(f(q), f(k), f(v), p.batch, p.heads, p.kvHeads, p.tq, p.tk, p.headDim, p.scale, p.causal, p.causalOffset, p.keyMask, f(out), f(lse),
        p.kvStride ?? p.tk),
    attentionBackward: (q, k, v, out, lse, gOut, p, gq, gk, gv) =>
      n.attentionBackward(f(q), f(k), f(v), f(out), f(lse), f(gOut),
        p.batch, p.heads, p.kvHeads, p.tq, p.tk, p.headDim, p.scale, p.causal, p.causalOffset, p.keyMask, fOrNull(gq), fOrNull(gk), fOrNull(gv),
        p.kvStride ?? p.tk),

    conv2d: (x, w, bias, p, out) =>
      n.conv2d(f(x), f(w), fOrNull(bias), p.n, p.cin, p.h, p.w, p.cout, p.kh, p.kw, p.stride, p.pad, p.oh, p.ow, f(out)),
    conv2dBackward: (x, w, gy, p, gx, gw, gb) =>
      n.conv2dBackward(f(x), f(w), f(gy), p.n, p.cin, p.h, p.w, p.cout, p.kh, p.kw, p.stride, p.pad, p.oh, p.ow, fOrNull(gx), fOrNull(gw), fOrNull(gb)),
    maxPool2d: (x, p, out, argmax) => n.maxPool2d(f(x), p.n, p.c, p.h, p.w, p.k, p.stride, p.oh, p.ow, f(out), argmax),
    maxPool2dBackward: (gy, argmax, _p, gx) => n.maxPool2dBackward(f(gy), argmax, f(gx)),

    adamw: (param, grad, m, v, p) => n.adamw(f(param), f(grad), f(m), f(v), p.lr, p.beta1, p.beta2, p.eps, p.weightDecay, p.step),

    veraForward: (x, a, b, lambdaD, lambdaB, p, out, ax) =>
      n.veraForward(f(x), f(a), f(b), f(lambdaD), f(lambdaB), p.rows, p.inFeatures, p.outFeatures, p.rank, p.lda, f(out), f(ax)),
    veraBackward: (a, b, lambdaD, lambdaB, ax, gy, p, gx, accumulateGx, gLambdaD, gLambdaB) =>
      n.veraBackward(f(a), f(b), f(lambdaD), f(lambdaB), f(ax), f(gy), p.rows, p.inFeatures, p.outFeatures, p.rank, p.lda,
        fOrNull(gx), accumulateGx, fOrNull(gLambdaD), fOrNull(gLambdaB)),
    veraRoutedForward: (x, a, b, lambdaD, lambdaB, slots, p, out, accumulate, shared) => {
      // the addon checks too, but a bad slot is the caller's error: name it here
      if (slots.length !== p.rows) throw new Error(`veraRoutedForward: ${slots.length} slots for ${p.rows} rows`);
      for (let i = 0; i < slots.length; i++) {
        if (slots[i] >= p.numSlots) throw new Error(`veraRoutedForward: row ${i} uses slot ${slots[i]}, but the slabs hold ${p.numSlots}`);
      }
      n.veraRoutedForward(f(x), f(a), f(b), f(lambdaD), f(lambdaB), slots, p.rows, p.inFeatures, p.outFeatures, p.rank, p.lda, p.numSlots, f(out), accumulate,
        shared ? f(shared.ax) : NO_SHARED_AX, shared?.ready ?? false);
    },
    // an addon built before this kernel existed lacks it: callers then compose it from other kernels
    ...(n.loraRoutedForward ? { loraRoutedForward: loraRouted(n.loraRoutedForward.bind(n)) } : {}),
  };
}
