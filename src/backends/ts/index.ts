// The reference backend: every kernel in plain TypeScript over Float32Array. It defines the
// numerics other backends are tested against; loops are written out per op (no per-element
// closures) and accumulate in double where a sum runs over a row.
import type {
  AdamWParams, AttentionParams, BinaryOp, Conv2dParams, Kernels, MatmulParams, Pool2dParams, Storage, UnaryOp, VeraParams,
  VeraRoutedParams, RaggedAttentionParams, LoraRoutedGroup,
} from '../../tensor/kernels.js';
import { gemm } from './gemm.js';
import { blockScales, dequantizeRange } from '../../tensor/quant.js';
import { erf } from './math.js';
import { argmaxOf } from '../../tensor/argmax.js';

const f = (s: Storage): Float32Array => s as Float32Array;
const fOrNull = (s: Storage | null): Float32Array | null => (s === null ? null : (s as Float32Array));

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const INV_SQRT_2 = 1 / Math.SQRT2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/**
 * Walk an N-d index space, calling `inner(offA, offB, offOut)` once per innermost row. The last
 * dimension is the caller's tight loop. Dims of size 1 are harmless.
 */
function forEachRow(
  shape: readonly number[], sA: readonly number[], sB: readonly number[],
  inner: (offA: number, offB: number, row: number) => void,
): void {
  const nd = shape.length;
  if (nd <= 1) {
    inner(0, 0, 0);
    return;
  }
  const outerDims = nd - 1;
  const idx = new Array<number>(outerDims).fill(0);
  let rows = 1;
  for (let d = 0; d < outerDims; d++) rows *= shape[d];
  if (rows === 0) return;
  let oa = 0;
  let ob = 0;
  for (let r = 0; r < rows; r++) {
    inner(oa, ob, r);
    for (let d = outerDims - 1; d >= 0; d--) {
      idx[d]++;
      oa += sA[d];
      ob += sB[d];
      if (idx[d] < shape[d]) break;
      oa -= sA[d] * shape[d];
      ob -= sB[d] * shape[d];
      idx[d] = 0;
    }
  }
}

function gatherImpl(src: Float32Array, shape: readonly number[], strides: readonly number[], offset: number, out: Float32Array): void {
  const nd = shape.length;
  if (nd === 0) {
    out[0] = src[offset];
    return;
  }
  const n = shape[nd - 1];
  const s = strides[nd - 1];
  forEachRow(shape, strides, strides, (o, _b, row) => {
    const base = offset + o;
    const dst = row * n;
    if (s === 1) out.set(src.subarray(base, base + n), dst);
    else for (let j = 0; j < n; j++) out[dst + j] = src[base + j * s];
  });
}

function scatterImpl(src: Float32Array, shape: readonly number[], strides: readonly number[], offset: number, out: Float32Array, accumulate: boolean): void {
  const nd = shape.length;
  if (nd === 0) {
    out[offset] = accumulate ? out[offset] + src[0] : src[0];
    return;
  }
  const n = shape[nd - 1];
  const s = strides[nd - 1];
  forEachRow(shape, strides, strides, (o, _b, row) => {
    const base = offset + o;
    const from = row * n;
    if (accumulate) {
      if (s === 0) {
        let acc = 0;
        for (let j = 0; j < n; j++) acc += src[from + j];
        out[base] += acc;
      } else for (let j = 0; j < n; j++) out[base + j * s] += src[from + j];
    } else if (s === 1) out.set(src.subarray(from, from + n), base);
    else for (let j = 0; j < n; j++) out[base + j * s] = src[from + j];
  });
}

function binaryRow(op: BinaryOp, a: Float32Array, ia: number, sa: number, b: Float32Array, ib: number, sb: number, o: Float32Array, io: number, n: number): void {
  switch (op) {
    case 'add': for (let j = 0; j < n; j++) o[io + j] = a[ia + j * sa] + b[ib + j * sb]; break;
    case 'sub': for (let j = 0; j < n; j++) o[io + j] = a[ia + j * sa] - b[ib + j * sb]; break;
    case 'mul': for (let j = 0; j < n; j++) o[io + j] = a[ia + j * sa] * b[ib + j * sb]; break;
    case 'div': for (let j = 0; j < n; j++) o[io + j] = a[ia + j * sa] / b[ib + j * sb]; break;
    case 'max': for (let j = 0; j < n; j++) o[io + j] = Math.max(a[ia + j * sa], b[ib + j * sb]); break;
    case 'min': for (let j = 0; j < n; j++) o[io + j] = Math.min(a[ia + j * sa], b[ib + j * sb]); break;
  }
}

function unaryImpl(op: UnaryOp, x: Float32Array, y: Float32Array): void {
  const n = x.length;
  switch (op) {
    case 'neg': for (let i = 0; i < n; i++) y[i] = -x[i]; break;
    case 'exp': for (let i = 0; i < n; i++) y[i] = Math.exp(x[i]); break;
    case 'log': for (let i = 0; i < n; i++) y[i] = Math.log(x[i]); break;
    case 'tanh': for (let i = 0; i < n; i++) y[i] = Math.tanh(x[i]); break;
    case 'sqrt': for (let i = 0; i < n; i++) y[i] = Math.sqrt(x[i]); break;
    case 'rsqrt': for (let i = 0; i < n; i++) y[i] = 1 / Math.sqrt(x[i]); break;
    case 'sigmoid': for (let i = 0; i < n; i++) y[i] = 1 / (1 + Math.exp(-x[i])); break;
    case 'abs': for (let i = 0; i < n; i++) y[i] = Math.abs(x[i]); break;
    case 'square': for (let i = 0; i < n; i++) y[i] = x[i] * x[i]; break;
    case 'relu': for (let i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0; break;
    case 'silu': for (let i = 0; i < n; i++) { const v = x[i]; y[i] = v / (1 + Math.exp(-v)); } break;
    case 'gelu_tanh':
      for (let i = 0; i < n; i++) {
        const v = x[i];
        y[i] = 0.5 * v * (1 + Math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)));
      }
      break;
    case 'gelu_erf': for (let i = 0; i < n; i++) { const v = x[i]; y[i] = 0.5 * v * (1 + erf(v * INV_SQRT_2)); } break;
  }
}

function unaryBackwardImpl(op: UnaryOp, x: Float32Array, y: Float32Array, gy: Float32Array, gx: Float32Array): void {
  const n = x.length;
  switch (op) {
    case 'neg': for (let i = 0; i < n; i++) gx[i] = -gy[i]; break;
    case 'exp': for (let i = 0; i < n; i++) gx[i] = gy[i] * y[i]; break;
    case 'log': for (let i = 0; i < n; i++) gx[i] = gy[i] / x[i]; break;
    case 'tanh': for (let i = 0; i < n; i++) gx[i] = gy[i] * (1 - y[i] * y[i]); break;
    case 'sqrt': for (let i = 0; i < n; i++) gx[i] = gy[i] * 0.5 / y[i]; break;
    case 'rsqrt': for (let i = 0; i < n; i++) gx[i] = gy[i] * -0.5 * y[i] * y[i] * y[i]; break;
    case 'sigmoid': for (let i = 0; i < n; i++) gx[i] = gy[i] * y[i] * (1 - y[i]); break;
    case 'abs': for (let i = 0; i < n; i++) gx[i] = gy[i] * Math.sign(x[i]); break;
    case 'square': for (let i = 0; i < n; i++) gx[i] = gy[i] * 2 * x[i]; break;
    case 'relu': for (let i = 0; i < n; i++) gx[i] = x[i] > 0 ? gy[i] : 0; break;
    case 'silu':
      for (let i = 0; i < n; i++) {
        const s = 1 / (1 + Math.exp(-x[i]));
        gx[i] = gy[i] * s * (1 + x[i] * (1 - s));
      }
      break;
    case 'gelu_tanh':
      for (let i = 0; i < n; i++) {
        const v = x[i];
        const t = Math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v));
        gx[i] = gy[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * v * v));
      }
      break;
    case 'gelu_erf':
      for (let i = 0; i < n; i++) {
        const v = x[i];
        gx[i] = gy[i] * (0.5 * (1 + erf(v * INV_SQRT_2)) + v * INV_SQRT_2PI * Math.exp(-0.5 * v * v));
      }
      break;
  }
}

/** Scratch rows for attention scores. */
let scratch = new Float64Array(256);
function scratchOf(n: number): Float64Array {
  if (scratch.length < n) scratch = new Float64Array(n);
  return scratch;
}

/**
 * im2col (toCols: copy each kh×kw patch of the image into a column, zeros for padding) and its
 * adjoint col2im (!toCols: add the columns back into the image). One walk serves both so the two
 * index maps cannot drift apart.
 */
function patches(img: Float32Array, imgOff: number, cols: Float32Array, p: Conv2dParams, toCols: boolean): void {
  const { cin, h, w, kh, kw, stride, pad, oh, ow } = p;
  const plane = oh * ow;
  for (let c = 0; c < cin; c++) {
    for (let ki = 0; ki < kh; ki++) {
      for (let kj = 0; kj < kw; kj++) {
        const row = ((c * kh + ki) * kw + kj) * plane;
        for (let oi = 0; oi < oh; oi++) {
          const ii = oi * stride - pad + ki;
          const dst = row + oi * ow;
          if (ii < 0 || ii >= h) {
            if (toCols) cols.fill(0, dst, dst + ow);
            continue;
          }
          const src = imgOff + (c * h + ii) * w;
          for (let oj = 0; oj < ow; oj++) {
            const jj = oj * stride - pad + kj;
            const inside = jj >= 0 && jj < w;
            if (toCols) cols[dst + oj] = inside ? img[src + jj] : 0;
            else if (inside) img[src + jj] += cols[dst + oj];
          }
        }
      }
    }
  }
}

/** (rows × cols) x with column j scaled by v[j] (byColumn) or row i by v[i]. */
function scaled(x: Float32Array, v: Float32Array, rows: number, cols: number, byColumn: boolean): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) out[i * cols + j] = x[i * cols + j] * v[byColumn ? j : i];
  }
  return out;
}

/** A[:, :in] of the shared (rank, lda) projection, contiguous (a view when in == lda). */
function veraA(a: Float32Array, p: { rank: number; inFeatures: number; lda: number }): Float32Array {
  if (p.lda === p.inFeatures) return a.subarray(0, p.rank * p.inFeatures);
  const out = new Float32Array(p.rank * p.inFeatures);
  for (let j = 0; j < p.rank; j++) out.set(a.subarray(j * p.lda, j * p.lda + p.inFeatures), j * p.inFeatures);
  return out;
}

export const tsKernels: Kernels = {
  name: 'ts',

  alloc: (length) => new Float32Array(length),
  fromArray: (data) => data.slice(),
  read: (s) => f(s),
  write: (s, data, offset) => f(s).set(data, offset),
  fill: (out, value) => void f(out).fill(value),

  gather: (src, shape, strides, offset, out) => gatherImpl(f(src), shape, strides, offset, f(out)),
  scatter: (src, shape, strides, offset, out, accumulate) => scatterImpl(f(src), shape, strides, offset, f(out), accumulate),

  unary: (op, x, out) => unaryImpl(op, f(x), f(out)),
  unaryBackward: (op, x, y, gy, gx) => unaryBackwardImpl(op, f(x), f(y), f(gy), f(gx)),

  binary(op, a, aStrides, b, bStrides, out, outShape) {
    const A = f(a);
    const B = f(b);
    const O = f(out);
    const nd = outShape.length;
    if (nd === 0) {
      binaryRow(op, A, 0, 0, B, 0, 0, O, 0, 1);
      return;
    }
    const n = outShape[nd - 1];
    const sa = aStrides[nd - 1];
    const sb = bStrides[nd - 1];
    forEachRow(outShape, aStrides, bStrides, (oa, ob, row) => binaryRow(op, A, oa, sa, B, ob, sb, O, row * n, n));
  },

  affine(x, mul, add, out) {
    const X = f(x);
    const O = f(out);
    for (let i = 0; i < X.length; i++) O[i] = X[i] * mul + add;
  },
  powScalar(x, p, out) {
    const X = f(x);
    const O = f(out);
    for (let i = 0; i < X.length; i++) O[i] = Math.pow(X[i], p);
  },
  axpy(a, alpha, b, out) {
    const A = f(a);
    const B = f(b);
    const O = f(out);
    for (let i = 0; i < A.length; i++) O[i] = A[i] + alpha * B[i];
  },

  sumReduce(x, outer, reduce, inner, out) {
    const X = f(x);
    const O = f(out);
    if (inner === 1) {
      for (let o = 0; o < outer; o++) {
        let acc = 0;
        const base = o * reduce;
        for (let r = 0; r < reduce; r++) acc += X[base + r];
        O[o] = acc;
      }
      return;
    }
    const acc = new Float64Array(inner);
    for (let o = 0; o < outer; o++) {
      acc.fill(0);
      for (let r = 0; r < reduce; r++) {
        const base = (o * reduce + r) * inner;
        for (let i = 0; i < inner; i++) acc[i] += X[base + i];
      }
      for (let i = 0; i < inner; i++) O[o * inner + i] = acc[i];
    }
  },
  maxReduce(x, outer, reduce, inner, out) {
    const X = f(x);
    const O = f(out);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        let m = -Infinity;
        for (let r = 0; r < reduce; r++) {
          const v = X[(o * reduce + r) * inner + i];
          if (v > m || Number.isNaN(v)) m = v;
        }
        O[o * inner + i] = m;
      }
    }
  },
  sumSquares(x) {
    const X = f(x);
    let acc = 0;
    for (let i = 0; i < X.length; i++) acc += X[i] * X[i];
    return acc;
  },

  matmul(a, b, out, p: MatmulParams) {
    const A = f(a);
    const B = f(b);
    const C = f(out);
    for (let i = 0; i < p.batch; i++) {
      gemm(A, i * p.strideA, B, i * p.strideB, C, i * p.m * p.n, p.m, p.n, p.k, p.transA, p.transB, p.accumulate);
    }
  },

  // a compact weight is dequantized one row at a time (never whole); sums in double
  quantMatmul(x, w, rows, out) {
    const X = f(x);
    const O = f(out);
    const K = w.cols;
    const N = w.rows;
    const row = new Float32Array(K);
    const scales = w.format === 'nf4' ? blockScales(w) : undefined;
    for (let n = 0; n < N; n++) {
      dequantizeRange(w, n * K, (n + 1) * K, row, scales);
      for (let r = 0; r < rows; r++) {
        let acc = 0;
        const xo = r * K;
        for (let j = 0; j < K; j++) acc += X[xo + j] * row[j];
        O[r * N + n] = acc;
      }
    }
  },

  quantMatmulInputGrad(gy, w, rows, gx) {
    const G = f(gy);
    const GX = f(gx);
    const K = w.cols;
    const N = w.rows;
    const row = new Float32Array(K);
    const acc = new Float64Array(rows * K);
    const scales = w.format === 'nf4' ? blockScales(w) : undefined;
    for (let n = 0; n < N; n++) {
      dequantizeRange(w, n * K, (n + 1) * K, row, scales);
      for (let r = 0; r < rows; r++) {
        const g = G[r * N + n];
        if (g === 0) continue;
        const o = r * K;
        for (let j = 0; j < K; j++) acc[o + j] += g * row[j];
      }
    }
    GX.set(acc.subarray(0, rows * K));
  },

  softmax(x, rows, cols, out) {
    const X = f(x);
    const O = f(out);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let m = -Infinity;
      for (let j = 0; j < cols; j++) if (X[base + j] > m) m = X[base + j];
      let s = 0;
      for (let j = 0; j < cols; j++) {
        const e = Math.exp(X[base + j] - m);
        O[base + j] = e;
        s += e;
      }
      const inv = 1 / s;
      for (let j = 0; j < cols; j++) O[base + j] *= inv;
    }
  },
  softmaxBackward(y, gy, rows, cols, gx) {
    const Y = f(y);
    const G = f(gy);
    const GX = f(gx);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let dot = 0;
      for (let j = 0; j < cols; j++) dot += Y[base + j] * G[base + j];
      for (let j = 0; j < cols; j++) GX[base + j] = Y[base + j] * (G[base + j] - dot);
    }
  },
  logSoftmax(x, rows, cols, out) {
    const X = f(x);
    const O = f(out);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let m = -Infinity;
      for (let j = 0; j < cols; j++) if (X[base + j] > m) m = X[base + j];
      let s = 0;
      for (let j = 0; j < cols; j++) s += Math.exp(X[base + j] - m);
      const lse = m + Math.log(s);
      for (let j = 0; j < cols; j++) O[base + j] = X[base + j] - lse;
    }
  },
  logSoftmaxBackward(y, gy, rows, cols, gx) {
    const Y = f(y);
    const G = f(gy);
    const GX = f(gx);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let s = 0;
      for (let j = 0; j < cols; j++) s += G[base + j];
      for (let j = 0; j < cols; j++) GX[base + j] = G[base + j] - Math.exp(Y[base + j]) * s;
    }
  },
  crossEntropy(logits, targets, rows, cols, ignoreIndex, loss, lse) {
    const X = f(logits);
    const L = f(loss);
    const S = f(lse);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let m = -Infinity;
      for (let j = 0; j < cols; j++) if (X[base + j] > m) m = X[base + j];
      let s = 0;
      for (let j = 0; j < cols; j++) s += Math.exp(X[base + j] - m);
      const l = m + Math.log(s);
      S[r] = l;
      const t = targets[r];
      L[r] = t === ignoreIndex ? 0 : l - X[base + t];
    }
  },
  crossEntropyBackward(logits, lse, targets, gLoss, rows, cols, ignoreIndex, gx) {
    const X = f(logits);
    const S = f(lse);
    const G = f(gLoss);
    const GX = f(gx);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      const t = targets[r];
      if (t === ignoreIndex) {
        GX.fill(0, base, base + cols);
        continue;
      }
      const g = G[r];
      const l = S[r];
      for (let j = 0; j < cols; j++) GX[base + j] = g * Math.exp(X[base + j] - l);
      GX[base + t] -= g;
    }
  },

  layerNorm(x, weight, bias, rows, cols, eps, out, mean, rstd) {
    const X = f(x);
    const W = fOrNull(weight);
    const Bi = fOrNull(bias);
    const O = f(out);
    const MU = f(mean);
    const RS = f(rstd);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let s = 0;
      for (let j = 0; j < cols; j++) s += X[base + j];
      const mu = s / cols;
      let v = 0;
      for (let j = 0; j < cols; j++) {
        const d = X[base + j] - mu;
        v += d * d;
      }
      const rs = 1 / Math.sqrt(v / cols + eps);
      MU[r] = mu;
      RS[r] = rs;
      for (let j = 0; j < cols; j++) {
        let y = (X[base + j] - mu) * rs;
        if (W) y *= W[j];
        if (Bi) y += Bi[j];
        O[base + j] = y;
      }
    }
  },
  layerNormBackward(x, weight, mean, rstd, gy, rows, cols, gx, gWeight, gBias) {
    const X = f(x);
    const W = fOrNull(weight);
    const MU = f(mean);
    const RS = f(rstd);
    const G = f(gy);
    const GX = fOrNull(gx);
    const GW = fOrNull(gWeight);
    const GB = fOrNull(gBias);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      const mu = MU[r];
      const rs = RS[r];
      let sumG = 0;
      let sumGX = 0;
      for (let j = 0; j < cols; j++) {
        const xh = (X[base + j] - mu) * rs;
        const g = G[base + j];
        if (GW) GW[j] += g * xh;
        if (GB) GB[j] += g;
        const gw = W ? g * W[j] : g;
        sumG += gw;
        sumGX += gw * xh;
      }
      if (GX) {
        const mG = sumG / cols;
        const mGX = sumGX / cols;
        for (let j = 0; j < cols; j++) {
          const xh = (X[base + j] - mu) * rs;
          const gw = W ? G[base + j] * W[j] : G[base + j];
          GX[base + j] = rs * (gw - mG - xh * mGX);
        }
      }
    }
  },
  argmaxRows(x, rows, cols, out) {
    const X = f(x);
    const O = f(out);
    for (let r = 0; r < rows; r++) O[r] = argmaxOf(X, r * cols, cols);
  },
  rotary(x, cos, sin, p, out) {
    const X = f(x);
    const C = f(cos);
    const S = f(sin);
    const O = f(out);
    const { rows, heads, dim, transpose } = p;
    const h = dim / 2;
    const r = Math.fround;
    // each product rounded to float32, then the sum: x·cos + rotate_half(x)·sin as separate ops would
    for (let row = 0; row < rows; row++) {
      const cs = row * dim;
      for (let head = 0; head < heads; head++) {
        const base = (row * heads + head) * dim;
        for (let i = 0; i < h; i++) {
          const a = X[base + i];
          const b = X[base + i + h];
          if (transpose) {
            O[base + i] = r(a * C[cs + i]) + r(b * S[cs + i + h]);
            O[base + i + h] = r(b * C[cs + i + h]) - r(a * S[cs + i]);
          } else {
            O[base + i] = r(a * C[cs + i]) - r(b * S[cs + i]);
            O[base + i + h] = r(b * C[cs + i + h]) + r(a * S[cs + i + h]);
          }
        }
      }
    }
  },
  rmsNorm(x, weight, rows, cols, eps, out, rstd) {
    const X = f(x);
    const W = fOrNull(weight);
    const O = f(out);
    const RS = f(rstd);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      let ss = 0;
      for (let j = 0; j < cols; j++) ss += X[base + j] * X[base + j];
      const rs = 1 / Math.sqrt(ss / cols + eps);
      RS[r] = rs;
      for (let j = 0; j < cols; j++) O[base + j] = W ? X[base + j] * rs * W[j] : X[base + j] * rs;
    }
  },
  rmsNormBackward(x, weight, rstd, gy, rows, cols, gx, gWeight) {
    const X = f(x);
    const W = fOrNull(weight);
    const RS = f(rstd);
    const G = f(gy);
    const GX = fOrNull(gx);
    const GW = fOrNull(gWeight);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      const rs = RS[r];
      let dot = 0;
      for (let j = 0; j < cols; j++) {
        const g = W ? G[base + j] * W[j] : G[base + j];
        dot += g * X[base + j];
        if (GW) GW[j] += G[base + j] * X[base + j] * rs;
      }
      if (GX) {
        const c = (dot * rs * rs * rs) / cols;
        for (let j = 0; j < cols; j++) {
          const g = W ? G[base + j] * W[j] : G[base + j];
          GX[base + j] = g * rs - X[base + j] * c;
        }
      }
    }
  },

  embedding(weight, ids, dim, out) {
    const W = f(weight);
    const O = f(out);
    for (let i = 0; i < ids.length; i++) O.set(W.subarray(ids[i] * dim, ids[i] * dim + dim), i * dim);
  },
  embeddingBackward(gy, ids, dim, gWeight) {
    const G = f(gy);
    const GW = f(gWeight);
    for (let i = 0; i < ids.length; i++) {
      const dst = ids[i] * dim;
      const src = i * dim;
      for (let j = 0; j < dim; j++) GW[dst + j] += G[src + j];
    }
  },

  raggedAttention(q, kNew, vNew, kCaches, vCaches, p: RaggedAttentionParams, out) {
    const Q = f(q);
    const KN = f(kNew);
    const VN = f(vNew);
    const O = f(out);
    const { heads, kvHeads, headDim: d, scale, tokens, past } = p;
    const group = heads / kvHeads;
    const row = kvHeads * d; // one position of a cache
    const acc = new Float64Array(d);
    let start = 0;
    for (let s = 0; s < tokens.length; s++) {
      const n = tokens[s];
      const K = f(kCaches[s]);
      const V = f(vCaches[s]);
      K.set(KN.subarray(start * row, (start + n) * row), past[s] * row);
      V.set(VN.subarray(start * row, (start + n) * row), past[s] * row);
      const scores = scratchOf(past[s] + n);
      for (let i = 0; i < n; i++) {
        const keys = past[s] + i + 1; // causal: its own position and everything before
        for (let h = 0; h < heads; h++) {
          const qBase = ((start + i) * heads + h) * d;
          const kvh = Math.floor(h / group);
          let m = -Infinity;
          for (let j = 0; j < keys; j++) {
            let dot = 0;
            const kb = j * row + kvh * d;
            for (let c = 0; c < d; c++) dot += Q[qBase + c] * K[kb + c];
            scores[j] = dot * scale;
            if (scores[j] > m || Number.isNaN(scores[j])) m = scores[j]; // NaN sticks
          }
          if (!Number.isFinite(m)) {
            // a NaN score (or infinite ones): torch's softmax row is NaN, so is the output
            O.fill(NaN, qBase, qBase + d);
            continue;
          }
          let sum = 0;
          acc.fill(0);
          for (let j = 0; j < keys; j++) {
            const e = Math.exp(scores[j] - m);
            sum += e;
            const vb = j * row + kvh * d;
            for (let c = 0; c < d; c++) acc[c] += e * V[vb + c];
          }
          for (let c = 0; c < d; c++) O[qBase + c] = acc[c] / sum;
        }
      }
      start += n;
    }
  },
  attention(q, k, v, p: AttentionParams, out, lse) {
    const Q = f(q);
    const K = f(k);
    const V = f(v);
    const O = f(out);
    const L = f(lse);
    const { batch, heads, kvHeads, tq, tk, headDim: d, scale, causal, causalOffset, keyMask } = p;
    const kvStride = p.kvStride ?? tk;
    const group = heads / kvHeads;
    const s = scratchOf(tk);
    const acc = new Float64Array(d);
    for (let b = 0; b < batch; b++) {
      for (let h = 0; h < heads; h++) {
        const kvBase = (b * kvHeads + Math.floor(h / group)) * kvStride * d;
        for (let i = 0; i < tq; i++) {
          const qBase = ((b * heads + h) * tq + i) * d;
          const limit = causal ? Math.min(tk, i + causalOffset + 1) : tk;
          let m = -Infinity;
          let visible = 0;
          for (let j = 0; j < limit; j++) {
            if (keyMask && keyMask[b * tk + j] === 0) continue;
            visible++;
            let dot = 0;
            const kb = kvBase + j * d;
            for (let c = 0; c < d; c++) dot += Q[qBase + c] * K[kb + c];
            s[j] = dot * scale;
            if (s[j] > m || Number.isNaN(s[j])) m = s[j]; // NaN sticks: it makes the row NaN, as in torch
          }
          const row = (b * heads + h) * tq + i;
          if (visible === 0) {
            // every key masked: defined as zeros (torch gives NaN; zeros keep padding rows harmless)
            O.fill(0, qBase, qBase + d);
            L[row] = -Infinity;
            continue;
          }
          if (!Number.isFinite(m)) {
            // a NaN score, or visible scores all -inf or some +inf: torch's softmax row is NaN
            O.fill(NaN, qBase, qBase + d);
            L[row] = NaN;
            continue;
          }
          let sum = 0;
          acc.fill(0);
          for (let j = 0; j < limit; j++) {
            if (keyMask && keyMask[b * tk + j] === 0) continue;
            const e = Math.exp(s[j] - m);
            sum += e;
            const vb = kvBase + j * d;
            for (let c = 0; c < d; c++) acc[c] += e * V[vb + c];
          }
          const inv = 1 / sum;
          for (let c = 0; c < d; c++) O[qBase + c] = acc[c] * inv;
          L[row] = m + Math.log(sum);
        }
      }
    }
  },
  attentionBackward(q, k, v, out, lse, gOut, p: AttentionParams, gq, gk, gv) {
    const Q = f(q);
    const K = f(k);
    const V = f(v);
    const O = f(out);
    const L = f(lse);
    const GO = f(gOut);
    const GQ = fOrNull(gq);
    const GK = fOrNull(gk);
    const GV = fOrNull(gv);
    if (GQ) GQ.fill(0);
    if (GK) GK.fill(0);
    if (GV) GV.fill(0);
    const { batch, heads, kvHeads, tq, tk, headDim: d, scale, causal, causalOffset, keyMask } = p;
    const kvStride = p.kvStride ?? tk;
    const group = heads / kvHeads;
    for (let b = 0; b < batch; b++) {
      for (let h = 0; h < heads; h++) {
        const kvBase = (b * kvHeads + Math.floor(h / group)) * kvStride * d;
        for (let i = 0; i < tq; i++) {
          const row = (b * heads + h) * tq + i;
          const l = L[row];
          if (l === -Infinity) continue;
          const qBase = row * d;
          const limit = causal ? Math.min(tk, i + causalOffset + 1) : tk;
          // D = gO·O, the softmax-backward row constant
          let D = 0;
          for (let c = 0; c < d; c++) D += GO[qBase + c] * O[qBase + c];
          for (let j = 0; j < limit; j++) {
            if (keyMask && keyMask[b * tk + j] === 0) continue;
            const kb = kvBase + j * d;
            let dot = 0;
            for (let c = 0; c < d; c++) dot += Q[qBase + c] * K[kb + c];
            const pij = Math.exp(dot * scale - l);
            let dp = 0;
            for (let c = 0; c < d; c++) dp += GO[qBase + c] * V[kb + c];
            if (GV) for (let c = 0; c < d; c++) GV[kb + c] += pij * GO[qBase + c];
            const ds = pij * (dp - D) * scale;
            if (GQ) for (let c = 0; c < d; c++) GQ[qBase + c] += ds * K[kb + c];
            if (GK) for (let c = 0; c < d; c++) GK[kb + c] += ds * Q[qBase + c];
          }
        }
      }
    }
  },

  conv2d(x, w, bias, p, out) {
    const X = f(x);
    const W = f(w);
    const Bi = fOrNull(bias);
    const O = f(out);
    const plane = p.oh * p.ow;
    const kdim = p.cin * p.kh * p.kw;
    const cols = new Float32Array(kdim * plane);
    for (let n = 0; n < p.n; n++) {
      patches(X, n * p.cin * p.h * p.w, cols, p, true);
      const oOff = n * p.cout * plane;
      gemm(W, 0, cols, 0, O, oOff, p.cout, plane, kdim, false, false, false);
      if (Bi) for (let c = 0; c < p.cout; c++) for (let i = 0; i < plane; i++) O[oOff + c * plane + i] += Bi[c];
    }
  },
  conv2dBackward(x, w, gy, p, gx, gw, gb) {
    const X = f(x);
    const W = f(w);
    const G = f(gy);
    const GX = fOrNull(gx);
    const GW = fOrNull(gw);
    const GB = fOrNull(gb);
    const plane = p.oh * p.ow;
    const kdim = p.cin * p.kh * p.kw;
    const cols = new Float32Array(kdim * plane);
    if (GX) GX.fill(0);
    for (let n = 0; n < p.n; n++) {
      const gOff = n * p.cout * plane;
      if (GB) {
        for (let c = 0; c < p.cout; c++) {
          let s = 0;
          for (let i = 0; i < plane; i++) s += G[gOff + c * plane + i];
          GB[c] += s;
        }
      }
      if (GW) {
        patches(X, n * p.cin * p.h * p.w, cols, p, true);
        gemm(G, gOff, cols, 0, GW, 0, p.cout, kdim, plane, false, true, true);
      }
      if (GX) {
        gemm(W, 0, G, gOff, cols, 0, kdim, plane, p.cout, true, false, false);
        patches(GX, n * p.cin * p.h * p.w, cols, p, false);
      }
    }
  },
  maxPool2d(x, p: Pool2dParams, out, argmax) {
    const X = f(x);
    const O = f(out);
    for (let nc = 0; nc < p.n * p.c; nc++) {
      const xBase = nc * p.h * p.w;
      for (let oi = 0; oi < p.oh; oi++) {
        for (let oj = 0; oj < p.ow; oj++) {
          let best = -Infinity;
          let at = xBase + oi * p.stride * p.w + oj * p.stride;
          for (let ki = 0; ki < p.k; ki++) {
            const r = xBase + (oi * p.stride + ki) * p.w + oj * p.stride;
            for (let kj = 0; kj < p.k; kj++) {
              if (X[r + kj] > best) {
                best = X[r + kj];
                at = r + kj;
              }
            }
          }
          const o = (nc * p.oh + oi) * p.ow + oj;
          O[o] = best;
          argmax[o] = at;
        }
      }
    }
  },
  maxPool2dBackward(gy, argmax, _p, gx) {
    const G = f(gy);
    const GX = f(gx);
    GX.fill(0);
    for (let i = 0; i < argmax.length; i++) GX[argmax[i]] += G[i];
  },

  adamw(param, grad, m, v, p: AdamWParams) {
    const P = f(param);
    const G = f(grad);
    const M = f(m);
    const Vv = f(v);
    const { lr, beta1, beta2, eps, weightDecay, step } = p;
    const bc1 = 1 - Math.pow(beta1, step);
    const bc2Sqrt = Math.sqrt(1 - Math.pow(beta2, step));
    const stepSize = lr / bc1;
    const decay = 1 - lr * weightDecay;
    for (let i = 0; i < P.length; i++) {
      const g = G[i];
      const mi = beta1 * M[i] + (1 - beta1) * g;
      const vi = beta2 * Vv[i] + (1 - beta2) * g * g;
      M[i] = mi;
      Vv[i] = vi;
      P[i] = P[i] * decay - (stepSize * mi) / (Math.sqrt(vi) / bc2Sqrt + eps);
    }
  },

  // The scaling vectors are folded into rank-wide operands (λd ⊙ ax, λb ⊙ B), so no (rows × out)
  // intermediate exists in either direction: gλb[o] = Σ_j B[o, j]·(gyᵀ·(λd ⊙ ax))[o, j].
  veraForward(x, a, b, lambdaD, lambdaB, p: VeraParams, out, ax) {
    const { rows, inFeatures, outFeatures, rank } = p;
    const AX = f(ax);
    gemm(f(x), 0, veraA(f(a), p), 0, AX, 0, rows, rank, inFeatures, false, true, false);
    const u = scaled(AX, f(lambdaD), rows, rank, true);
    const bs = scaled(f(b), f(lambdaB), outFeatures, rank, false);
    gemm(u, 0, bs, 0, f(out), 0, rows, outFeatures, rank, false, true, false);
  },
  veraBackward(a, b, lambdaD, lambdaB, ax, gy, p: VeraParams, gx, accumulateGx, gLambdaD, gLambdaB) {
    const { rows, inFeatures, outFeatures, rank } = p;
    const AX = f(ax);
    const G = f(gy);
    const B = f(b);
    const LD = f(lambdaD);
    const GLD = fOrNull(gLambdaD);
    const GLB = fOrNull(gLambdaB);
    const GX = fOrNull(gx);
    if (GLB) {
      const m = new Float32Array(outFeatures * rank);
      gemm(G, 0, scaled(AX, LD, rows, rank, true), 0, m, 0, outFeatures, rank, rows, true, false, false);
      for (let o = 0; o < outFeatures; o++) {
        let s = 0;
        for (let j = 0; j < rank; j++) s += B[o * rank + j] * m[o * rank + j];
        GLB[o] += s;
      }
    }
    if (!GLD && !GX) return;
    const gu = new Float32Array(rows * rank);
    gemm(G, 0, scaled(B, f(lambdaB), outFeatures, rank, false), 0, gu, 0, rows, rank, outFeatures, false, false, false);
    if (GLD) {
      for (let j = 0; j < rank; j++) {
        let s = 0;
        for (let i = 0; i < rows; i++) s += gu[i * rank + j] * AX[i * rank + j];
        GLD[j] += s;
      }
    }
    if (GX) gemm(scaled(gu, LD, rows, rank, true), 0, veraA(f(a), p), 0, GX, 0, rows, inFeatures, rank, false, false, accumulateGx);
  },

  // ax = x·A[:, :in]ᵀ once for every row; the rows that route are packed (λd of their slot applied)
  // into u (m × rank), one GEMM with B[:out]ᵀ gives t (m × out), and t's row k, scaled by λb of its
  // slot, goes to (or onto) its row of out.
  veraRoutedForward(x, a, b, lambdaD, lambdaB, slots, p: VeraRoutedParams, out, accumulate, shared) {
    const { rows, inFeatures, outFeatures, rank, numSlots } = p;
    checkSlots(slots, rows, numSlots);
    const O = f(out);
    if (!accumulate) O.fill(0, 0, rows * outFeatures);
    if (rows === 0) return;
    if (shared && f(shared.ax).length < rows * rank) throw new Error(`veraRoutedForward: the shared x·Aᵀ holds ${f(shared.ax).length} floats, ${rows * rank} needed`);
    // filled whenever asked for: the layers after this one read it as ready
    if (shared && !shared.ready) gemm(f(x), 0, veraA(f(a), p), 0, f(shared.ax), 0, rows, rank, inFeatures, false, true, false);
    if (outFeatures === 0) return;
    // the rows are scaled by λd in a copy when x·Aᵀ is shared, in place otherwise
    const ax = shared ? f(shared.ax).slice(0, rows * rank) : new Float32Array(rows * rank);
    if (!shared) gemm(f(x), 0, veraA(f(a), p), 0, ax, 0, rows, rank, inFeatures, false, true, false);
    const LD = f(lambdaD);
    const LB = f(lambdaB);
    const active: number[] = [];
    for (let i = 0; i < rows; i++) {
      const s = slots[i];
      if (s < 0) continue;
      const k = active.length;
      for (let j = 0; j < rank; j++) ax[k * rank + j] = ax[i * rank + j] * LD[s * rank + j]; // k ≤ i: in place
      active.push(i);
    }
    const m = active.length;
    if (m === 0) return;
    const t = new Float32Array(m * outFeatures);
    gemm(ax, 0, f(b), 0, t, 0, m, outFeatures, rank, false, true, false);
    for (let k = 0; k < m; k++) {
      const i = active[k];
      const lb = slots[i] * outFeatures;
      for (let o = 0; o < outFeatures; o++) O[i * outFeatures + o] += LB[lb + o] * t[k * outFeatures + o];
    }
  },

  // each token: z = A·x[t] (rank), then y[t] += scaling·B·z
  loraRoutedForward(x, y, inFeatures, outFeatures, groups) {
    const X = f(x);
    const Y = f(y);
    const tokens = Math.floor(X.length / inFeatures);
    checkLoraGroups(groups, tokens, inFeatures, outFeatures, Y.length);
    for (const g of groups) {
      const A = f(g.a);
      const B = f(g.b);
      const z = new Float32Array(g.rank);
      for (const t of g.rows) {
        for (let j = 0; j < g.rank; j++) {
          let s = 0;
          for (let c = 0; c < inFeatures; c++) s += A[j * inFeatures + c] * X[t * inFeatures + c];
          z[j] = s;
        }
        for (let o = 0; o < outFeatures; o++) {
          let s = 0;
          for (let j = 0; j < g.rank; j++) s += B[o * g.rank + j] * z[j];
          Y[t * outFeatures + o] += g.scaling * s;
        }
      }
    }
  },
};

/** Each group's A and B big enough, each token inside x (of `tokens` rows) and in at most one group. */
function checkLoraGroups(groups: readonly LoraRoutedGroup[], tokens: number, inFeatures: number, outFeatures: number, yLength: number): void {
  if (yLength < tokens * outFeatures) throw new Error(`loraRoutedForward: y holds ${yLength} floats, ${tokens} rows × ${outFeatures} needed`);
  const seen = new Uint8Array(tokens);
  groups.forEach((g, i) => {
    if (f(g.a).length < g.rank * inFeatures || f(g.b).length < outFeatures * g.rank) throw new Error(`loraRoutedForward: group ${i}: A or B is smaller than r × in / out × r`);
    for (const t of g.rows) {
      if (!(t >= 0 && t < tokens)) throw new Error(`loraRoutedForward: row ${t} is outside x's ${tokens} rows`);
      if (seen[t]) throw new Error(`loraRoutedForward: row ${t} is in two groups (or twice in one)`);
      seen[t] = 1;
    }
  });
}

/** Every slot below numSlots (negative: the row takes no adapter). */
function checkSlots(slots: Int32Array, rows: number, numSlots: number): void {
  if (slots.length !== rows) throw new Error(`veraRoutedForward: ${slots.length} slots for ${rows} rows`);
  for (let i = 0; i < rows; i++) {
    if (slots[i] >= numSlots) throw new Error(`veraRoutedForward: row ${i} uses slot ${slots[i]}, but the slabs hold ${numSlots}`);
  }
}
