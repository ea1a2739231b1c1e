/// <reference types="@webgpu/types" />
// The WebGPU backend: every kernel as a WGSL compute shader, for browsers (and any runtime with
// navigator.gpu). Reads are asynchronous (`readAsync`; the synchronous `read` refuses), kernels
// only encode work, and the runtime batches it into few submits. Semantics are the TypeScript
// backend's; the browser tests hold every kernel against it.
import type {
  AttentionParams, Kernels, MatmulParams, RaggedAttentionParams, Storage, VeraParams, VeraRoutedParams,
} from '../../tensor/kernels.js';
import { GpuStorage, Runtime, type Bound } from './runtime.js';
import { blockScales, type QuantizedData } from '../../tensor/quant.js';
import * as S from './shaders.js';

export { GpuStorage } from './runtime.js';

const g = (s: Storage): GpuStorage => {
  if (!(s instanceof GpuStorage)) throw new Error('webgpu: a storage from another backend was passed to the WebGPU backend');
  return s;
};
const gn = (s: Storage | null): GpuStorage | null => (s === null ? null : g(s));
const groups = (n: number, per = 256): number => Math.ceil(n / per);
const MAX_HEAD_DIM = 256;

interface Gemm {
  batch: number; m: number; n: number; k: number; transA: boolean; transB: boolean;
  strideA: number; strideB: number; accumulate: boolean;
  /** Row strides of the stored A and B (default: dense). */
  lda?: number; ldb?: number;
  offA?: number; offB?: number;
}

/** The WebGPU Kernels plus what only this backend has. */
export interface WebGpuKernels extends Kernels {
  readAsync(s: Storage): Promise<Float32Array>;
  /** Submit everything encoded so far. */
  flush(): void;
  /** The adapter, in words (vendor, architecture, description). */
  readonly adapterInfo: string;
  readonly device: GPUDevice;
}

function describeAdapter(adapter: { info?: GPUAdapterInfo } | { adapterInfo?: GPUAdapterInfo }): string {
  const info = 'info' in adapter ? adapter.info : 'adapterInfo' in adapter ? adapter.adapterInfo : undefined;
  if (!info) return 'unknown adapter';
  const parts = [info.vendor, info.architecture, info.device, info.description].filter((x) => x);
  return parts.length ? parts.join(' / ') : 'unknown adapter';
}

/**
 * The WebGPU backend on `opts.device`, or on a device of the default adapter with its storage
 * limits raised to the adapter's maxima (GPT-2's token embedding alone is past the 128 MiB default).
 */
export async function loadWebGpuKernels(opts: {
  device?: GPUDevice;
  powerPreference?: GPUPowerPreference;
  /** GEMM kernel: 'tiled' (workgroup-memory tiles, for GPUs) or 'direct' (no barriers, for CPU adapters); default by adapter. */
  gemm?: 'tiled' | 'direct';
} = {}): Promise<WebGpuKernels> {
  let device = opts.device;
  let info = opts.device ? describeAdapter(opts.device as GPUDevice & { adapterInfo?: GPUAdapterInfo }) : '';
  if (!device) {
    const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
    if (!gpu) throw new Error('webgpu: navigator.gpu is missing (no WebGPU in this runtime, or not a secure context)');
    const adapter = await gpu.requestAdapter(opts.powerPreference ? { powerPreference: opts.powerPreference } : undefined);
    if (!adapter) throw new Error('webgpu: no GPU adapter found (navigator.gpu.requestAdapter() gave null)');
    info = describeAdapter(adapter as GPUAdapter & { info?: GPUAdapterInfo });
    const l = adapter.limits;
    device = await adapter.requestDevice({
      requiredLimits: {
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
        maxBufferSize: l.maxBufferSize,
        maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
        maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      },
    });
  }
  return webGpuKernels(new Runtime(device, info), opts.gemm ? { directGemm: opts.gemm === 'direct' } : {});
}

function webGpuKernels(rt: Runtime, opts: { directGemm?: boolean } = {}): WebGpuKernels {
  // CPU adapters (SwiftShader) run workgroup barriers slowly: their GEMM skips workgroup memory
  const direct = opts.directGemm ?? /swiftshader|cpu/i.test(rt.adapterInfo);
  const ints = (xs: readonly number[]): number[] => xs.map((x) => x | 0);

  function gemm(a: GpuStorage, b: GpuStorage, c: GpuStorage, p: Gemm): void {
    if (p.batch === 0 || p.m === 0 || p.n === 0) return;
    if (p.k === 0) {
      if (!p.accumulate) rt.clear(c, 0, p.batch * p.m * p.n);
      return;
    }
    const lda = p.lda ?? (p.transA ? p.m : p.k);
    const ldb = p.ldb ?? (p.transB ? p.k : p.n);
    if (p.batch > 65535) throw new Error(`webgpu: matmul batch ${p.batch} is over 65535`);
    const tile = direct ? 32 : 64;
    rt.dispatch((direct ? S.matmulDirect : S.matmul)(p.transA, p.transB), [a, b, c],
      [p.m, p.n, p.k, lda, ldb, p.strideA, p.strideB, p.offA ?? 0, p.offB ?? 0, p.accumulate ? 1 : 0], [],
      [Math.ceil(p.n / tile), Math.ceil(p.m / tile), p.batch]);
  }

  function ew(d: ReturnType<typeof S.fill>, bufs: (Bound | null)[], n: number, extra: number[] = [], floats: number[] = []): void {
    if (n === 0) return;
    rt.dispatch(d, bufs, [n, ...extra], floats, groups(n));
  }

  function rows(d: ReturnType<typeof S.fill>, bufs: (Bound | null)[], nRows: number, cols: number, extra: number[] = [], floats: number[] = []): void {
    if (nRows === 0) return;
    rt.dispatch(d, bufs, [nRows, cols, ...extra], floats, nRows);
  }

  /** A device copy of a host int array: small ones ride in the upload arena. */
  const hostInts = (a: Int32Array): Bound => rt.upload(a);

  // maxPool2d's argmax lives on the device; the host array is filled asynchronously
  const argmaxes = new WeakMap<Int32Array, GpuStorage>();

  function attParams(p: AttentionParams, rowsCount: number): number[] {
    if (p.headDim > MAX_HEAD_DIM) throw new Error(`webgpu: attention headDim ${p.headDim} is over ${MAX_HEAD_DIM}`);
    return [rowsCount, p.heads, p.kvHeads, p.tq, p.tk, p.headDim, p.causal ? 1 : 0, p.causalOffset ?? p.tk - p.tq,
      p.keyMask ? 1 : 0, p.kvStride ?? p.tk, 0, 0, 0, 0];
  }

  const quantWeights = new WeakMap<QuantizedData, { data: GpuStorage; scales: GpuStorage; code: GpuStorage }>();
  function quantOnDevice(w: QuantizedData): { data: GpuStorage; scales: GpuStorage; code: GpuStorage } {
    let q = quantWeights.get(w);
    if (!q) {
      const words = Math.max(1, Math.ceil(w.data.byteLength / 4));
      const padded = new Uint8Array(words * 4);
      padded.set(w.data);
      const data = rt.alloc(words, false);
      rt.write(data, new Float32Array(padded.buffer), 0);
      const sc = w.format === 'nf4' ? blockScales(w) : w.scales;
      const scales = sc.length ? k.fromArray(sc) as GpuStorage : rt.dummyStorage;
      const code = w.format === 'nf4' ? k.fromArray(w.code) as GpuStorage : rt.dummyStorage;
      q = { data, scales, code };
      quantWeights.set(w, q);
    }
    return q;
  }

  function gemmQ(q: { data: GpuStorage; scales: GpuStorage; code: GpuStorage }, w: QuantizedData, a: GpuStorage, c: GpuStorage, p: Gemm): void {
    if (p.m === 0 || p.n === 0) return;
    if (p.k === 0) return rt.clear(c, 0, p.m * p.n);
    const ldb = w.cols; // the weight is (rows, cols) whichever side it is read from
    const tile = direct ? 32 : 64;
    rt.dispatch((direct ? S.matmulDirect : S.matmul)(false, p.transB, w.format), [a, q.data, c, q.scales, q.code],
      [p.m, p.n, p.k, p.k, ldb, 0, 0, 0, 0, 0, w.cols, w.blockSize || 1], [], [Math.ceil(p.n / tile), Math.ceil(p.m / tile), 1]);
  }

  const veraA = (p: { rank: number; inFeatures: number; lda: number }): Partial<Gemm> => ({ ldb: p.lda });

  const k: WebGpuKernels = {
    name: 'webgpu',
    adapterInfo: rt.adapterInfo,
    device: rt.device,
    flush: () => rt.flush(),

    alloc: (length) => rt.alloc(length, true),
    fromArray(data) {
      const s = rt.alloc(data.length, false);
      rt.write(s, data, 0);
      return s;
    },
    read() {
      throw new Error('webgpu: tensor data lives on the GPU and is read asynchronously: use `await tensor.dataAsync()` (or kernels.readAsync)');
    },
    readAsync: async (s) => new Float32Array(await rt.read(g(s))),
    write: (s, data, offset) => rt.write(g(s), data, offset),
    free: (s) => rt.free(g(s)),
    fill(out, value) {
      if (value === 0 && !Object.is(value, -0)) rt.clear(g(out));
      else ew(S.fill(), [g(out)], out.length, [], [value]);
    },

    gather(src, shape, strides, offset, out) {
      const nd = shape.length;
      if (nd > 22) throw new Error(`webgpu: gather over ${nd} dims (at most 22)`);
      const n = shape.reduce((a, b) => a * b, 1);
      ew(S.gather(), [g(src), g(out)], n, [nd, offset, ...shape, ...ints(strides)]);
    },
    scatter(src, shape, strides, offset, out, accumulate) {
      const nd = shape.length;
      if (nd > 14) throw new Error(`webgpu: scatter over ${nd} dims (at most 14)`);
      const srcStrides: number[] = [];
      let s = 1;
      for (let d = nd - 1; d >= 0; d--) {
        srcStrides[d] = s;
        s *= shape[d];
      }
      if (s === 0) return;
      const kept: number[] = [];
      const reduced: number[] = [];
      let nKept = 1;
      for (let d = 0; d < nd; d++) {
        if (strides[d] === 0 && shape[d] > 1) reduced.push(shape[d], 0, srcStrides[d]);
        else {
          kept.push(shape[d], strides[d], srcStrides[d]);
          nKept *= shape[d];
        }
      }
      ew(S.scatter(), [g(src), g(out)], nKept, [kept.length / 3, reduced.length / 3, offset, accumulate ? 1 : 0, ...kept, ...reduced]);
    },

    unary: (op, x, out) => ew(S.unary(op), [g(x), g(out)], x.length),
    unaryBackward: (op, x, y, gy, gx) => ew(S.unaryBackward(op), [g(x), g(y), g(gy), g(gx)], x.length),
    binary(op, a, aStrides, b, bStrides, out, outShape) {
      const nd = outShape.length;
      if (nd > 15) throw new Error(`webgpu: binary over ${nd} dims (at most 15)`);
      const n = outShape.reduce((x, y) => x * y, 1);
      ew(S.binary(op), [g(a), g(b), g(out)], n, [nd, ...outShape, ...ints(aStrides), ...ints(bStrides)]);
    },
    affine: (x, mul, add, out) => ew(S.affine(), [g(x), g(out)], x.length, [], [mul, add]),
    powScalar: (x, p, out) => ew(S.powScalar(), [g(x), g(out)], x.length, [], [p]),
    axpy: (a, alpha, b, out) => ew(S.axpy(), [g(a), g(b), g(out)], a.length, [], [alpha]),
    rotary: (x, cos, sin, p, out) => ew(S.rotary(), [g(x), g(cos), g(sin), g(out)], p.rows * p.heads * p.dim, [p.heads, p.dim, p.transpose ? 1 : 0]),

    sumReduce(x, outer, reduce, inner, out) {
      if (reduce === 0) return rt.clear(g(out), 0, outer * inner);
      if (inner === 1) rows(S.reduceRows('sum'), [g(x), g(out)], outer, reduce);
      else ew(S.reduceStrided('sum'), [g(x), g(out)], outer * inner, [reduce, inner]);
    },
    maxReduce(x, outer, reduce, inner, out) {
      if (reduce === 0) return k.fill(out, -Infinity);
      if (inner === 1) rows(S.reduceRows('max'), [g(x), g(out)], outer, reduce);
      else ew(S.reduceStrided('max'), [g(x), g(out)], outer * inner, [reduce, inner]);
    },
    argmaxRows: (x, r, c, out) => rows(S.argmaxRows(), [g(x), g(out)], r, c),
    sumSquares() {
      throw new Error('webgpu: sumSquares returns a host number synchronously, which a GPU cannot; clip gradients with clipGradNormOnDevice (or trainStepsAsync\'s maxGradNorm)');
    },

    matmul: (a, b, out, p: MatmulParams) => gemm(g(a), g(b), g(out), p),

    // the compact weight goes to the device once (packed as stored) and is dequantized per tile on load
    quantMatmul(x, w, R, out) {
      const q = quantOnDevice(w);
      gemmQ(q, w, g(x), g(out), { batch: 1, m: R, n: w.rows, k: w.cols, transA: false, transB: true, strideA: 0, strideB: 0, accumulate: false });
    },
    quantMatmulInputGrad(gy, w, R, gx) {
      const q = quantOnDevice(w);
      gemmQ(q, w, g(gy), g(gx), { batch: 1, m: R, n: w.cols, k: w.rows, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: false });
    },

    softmax: (x, r, c, out) => rows(S.softmax(), [g(x), g(out)], r, c),
    softmaxBackward: (y, gy, r, c, gx) => rows(S.softmaxBackward(), [g(y), g(gy), g(gx)], r, c),
    logSoftmax: (x, r, c, out) => rows(S.logSoftmax(), [g(x), g(out)], r, c),
    logSoftmaxBackward: (y, gy, r, c, gx) => rows(S.logSoftmaxBackward(), [g(y), g(gy), g(gx)], r, c),
    crossEntropy: (logits, targets, r, c, ignore, loss, lse) =>
      rows(S.crossEntropy(), [g(logits), hostInts(targets), g(loss), g(lse)], r, c, [ignore]),
    crossEntropyBackward: (logits, lse, targets, gLoss, r, c, ignore, gx) =>
      rows(S.crossEntropyBackward(), [g(logits), g(lse), hostInts(targets), g(gLoss), g(gx)], r, c, [ignore]),

    layerNorm: (x, weight, bias, r, c, eps, out, mean, rstd) =>
      rows(S.layerNorm(), [g(x), gn(weight), gn(bias), g(out), g(mean), g(rstd)], r, c, [weight ? 1 : 0, bias ? 1 : 0], [eps]),
    layerNormBackward(x, weight, mean, rstd, gy, r, c, gx, gWeight, gBias) {
      if (gx) rows(S.layerNormBackwardX(), [g(x), gn(weight), g(mean), g(rstd), g(gy), g(gx)], r, c, [weight ? 1 : 0]);
      if (gWeight || gBias) {
        ew(S.normBackwardW(), [g(x), g(mean), g(rstd), g(gy), gn(gWeight), gn(gBias)], c, [r, gWeight ? 1 : 0, gBias ? 1 : 0, 0]);
      }
    },
    rmsNorm: (x, weight, r, c, eps, out, rstd) => rows(S.rmsNorm(), [g(x), gn(weight), g(out), g(rstd)], r, c, [weight ? 1 : 0], [eps]),
    rmsNormBackward(x, weight, rstd, gy, r, c, gx, gWeight) {
      if (gx) rows(S.rmsNormBackwardX(), [g(x), gn(weight), g(rstd), g(gy), g(gx)], r, c, [weight ? 1 : 0]);
      if (gWeight) ew(S.normBackwardW(), [g(x), null, g(rstd), g(gy), g(gWeight), null], c, [r, 1, 0, 1]);
    },

    embedding: (weight, ids, dim, out) => ew(S.embedding(), [g(weight), hostInts(ids), g(out)], ids.length * dim, [dim]),
    embeddingBackward: (gy, ids, dim, gWeight) => {
      if (ids.length > 0) ew(S.embeddingBackward(), [g(gy), hostInts(ids), g(gWeight)], dim, [ids.length]);
    },

    attention(q, kk, v, p, out, lse) {
      const n = p.batch * p.heads * p.tq;
      const mask = p.keyMask ? rt.upload(p.keyMask) : null;
      rt.dispatch(S.attention(), [g(q), g(kk), g(v), mask, g(out), g(lse)], attParams(p, n), [p.scale], n);
    },
    attentionBackward(q, kk, v, out, lse, gOut, p, gq, gk, gv) {
      const n = p.batch * p.heads * p.tq;
      const kvLen = p.batch * p.kvHeads * (p.kvStride ?? p.tk) * p.headDim;
      if (gk) rt.clear(g(gk), 0, kvLen);
      if (gv) rt.clear(g(gv), 0, kvLen);
      if (n === 0) return;
      const stats = rt.alloc(2 * n, false);
      ew(S.attentionStats(), [g(out), g(lse), g(gOut), stats], n, [p.headDim]);
      const mask = p.keyMask ? rt.upload(p.keyMask) : null;
      const params = attParams(p, n);
      if (gq) rt.dispatch(S.attentionBackwardQ(), [g(q), g(kk), g(v), stats, g(gOut), mask, g(gq)], params, [p.scale], n);
      if (gk || gv) {
        const keys = p.batch * p.kvHeads * p.tk;
        params[0] = keys;
        params[14] = gk ? 1 : 0;
        params[15] = gv ? 1 : 0;
        rt.dispatch(S.attentionBackwardKV(), [g(q), g(kk), g(v), stats, g(gOut), mask, gn(gk), gn(gv)], params, [p.scale], keys);
      }
      rt.free(stats);
    },

    raggedAttention(q, kNew, vNew, kCaches, vCaches, p: RaggedAttentionParams, out) {
      const { heads, kvHeads, headDim: d, tokens, past } = p;
      if (d > MAX_HEAD_DIM) throw new Error(`webgpu: attention headDim ${d} is over ${MAX_HEAD_DIM}`);
      const row = kvHeads * d;
      let start = 0;
      for (let s = 0; s < tokens.length; s++) {
        const n = tokens[s];
        rt.copy(g(kNew), start * row, g(kCaches[s]), past[s] * row, n * row);
        rt.copy(g(vNew), start * row, g(vCaches[s]), past[s] * row, n * row);
        if (n > 0) {
          rt.dispatch(S.attention(), [g(q), g(kCaches[s]), g(vCaches[s]), null, g(out), null],
            [n * heads, heads, kvHeads, 0, 0, d, 0, 0, 0, 0, 1, past[s], start, row], [p.scale], n * heads);
        }
        start += n;
      }
    },

    conv2d(x, w, bias, p, out) {
      const n = p.n * p.cout * p.oh * p.ow;
      ew(S.conv2d(), [g(x), g(w), gn(bias), g(out)], n,
        [p.cin, p.h, p.w, p.cout, p.kh, p.kw, p.stride, p.pad, p.oh, p.ow, bias ? 1 : 0]);
    },
    conv2dBackward(x, w, gy, p, gx, gw, gb) {
      const geo = [p.cin, p.h, p.w, p.cout, p.kh, p.kw, p.stride, p.pad, p.oh, p.ow];
      if (gx) ew(S.conv2dBackwardX(), [g(w), g(gy), g(gx)], p.n * p.cin * p.h * p.w, geo);
      if (gw) ew(S.conv2dBackwardW(), [g(x), g(gy), g(gw)], p.cout * p.cin * p.kh * p.kw, [...geo, p.n]);
      if (gb) ew(S.conv2dBackwardB(), [g(gy), g(gb)], p.cout, [p.n, p.oh * p.ow]);
    },
    maxPool2d(x, p, out, argmax) {
      const n = p.n * p.c * p.oh * p.ow;
      const dev = rt.alloc(n, false);
      ew(S.maxPool2d(), [g(x), g(out), dev], n, [p.h, p.w, p.k, p.stride, p.oh, p.ow]);
      argmaxes.set(argmax, dev);
      // the host copy arrives once the GPU gets there (read it after awaiting a readAsync)
      void rt.read(dev).then((buf) => argmax.set(new Int32Array(buf)), () => undefined);
    },
    maxPool2dBackward(gy, argmax, p, gx) {
      const dev = argmaxes.get(argmax) ?? hostInts(argmax);
      ew(S.maxPool2dBackward(), [g(gy), dev, g(gx)], p.n * p.c * p.h * p.w, [p.h, p.w, p.k, p.stride, p.oh, p.ow]);
    },

    adamw(param, grad, m, v, p) {
      const { lr, beta1, beta2, eps, weightDecay, step } = p;
      const bc1 = 1 - Math.pow(beta1, step);
      const bc2Sqrt = Math.sqrt(1 - Math.pow(beta2, step));
      ew(S.adamw(), [g(grad), g(param), g(m), g(v)], param.length, [], [1 - lr * weightDecay, lr / bc1, beta1, beta2, eps, bc2Sqrt]);
    },

    // as the reference: λd and λb folded into rank-wide operands, so no (rows × out) intermediate
    veraForward(x, a, b, lambdaD, lambdaB, p: VeraParams, out, ax) {
      const { rows: R, inFeatures, outFeatures, rank } = p;
      gemm(g(x), g(a), g(ax), { batch: 1, m: R, n: rank, k: inFeatures, transA: false, transB: true, strideA: 0, strideB: 0, accumulate: false, ...veraA(p) });
      const u = rt.alloc(R * rank, false);
      ew(S.scaleBy(), [g(ax), g(lambdaD), u], R * rank, [rank, 1]);
      const bs = rt.alloc(outFeatures * rank, false);
      ew(S.scaleBy(), [g(b), g(lambdaB), bs], outFeatures * rank, [rank, 0]);
      gemm(u, bs, g(out), { batch: 1, m: R, n: outFeatures, k: rank, transA: false, transB: true, strideA: 0, strideB: 0, accumulate: false });
      rt.free(u);
      rt.free(bs);
    },
    veraBackward(a, b, lambdaD, lambdaB, ax, gy, p: VeraParams, gx, accumulateGx, gLambdaD, gLambdaB) {
      const { rows: R, inFeatures, outFeatures, rank } = p;
      if (gLambdaB) {
        const u = rt.alloc(R * rank, false);
        ew(S.scaleBy(), [g(ax), g(lambdaD), u], R * rank, [rank, 1]);
        const m = rt.alloc(outFeatures * rank, false);
        gemm(g(gy), u, m, { batch: 1, m: outFeatures, n: rank, k: R, transA: true, transB: false, strideA: 0, strideB: 0, accumulate: false });
        ew(S.dotAcc(), [g(b), m, g(gLambdaB)], outFeatures, [rank, rank, 1]);
        rt.free(u);
        rt.free(m);
      }
      if (!gLambdaD && !gx) return;
      const bs = rt.alloc(outFeatures * rank, false);
      ew(S.scaleBy(), [g(b), g(lambdaB), bs], outFeatures * rank, [rank, 0]);
      const gu = rt.alloc(R * rank, false);
      gemm(g(gy), bs, gu, { batch: 1, m: R, n: rank, k: outFeatures, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: false });
      rt.free(bs);
      if (gLambdaD) ew(S.dotAcc(), [gu, g(ax), g(gLambdaD)], rank, [rank, R, 0]);
      if (gx) {
        const gs = rt.alloc(R * rank, false);
        ew(S.scaleBy(), [gu, g(lambdaD), gs], R * rank, [rank, 1]);
        gemm(gs, g(a), g(gx), { batch: 1, m: R, n: inFeatures, k: rank, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: accumulateGx, ...veraA(p) });
        rt.free(gs);
      }
      rt.free(gu);
    },
    veraRoutedForward(x, a, b, lambdaD, lambdaB, slots, p: VeraRoutedParams, out, accumulate, shared) {
      const { rows: R, inFeatures, outFeatures, rank, numSlots } = p;
      if (slots.length !== R) throw new Error(`veraRoutedForward: ${slots.length} slots for ${R} rows`);
      const rowsOf: number[] = [];
      const slotOf: number[] = [];
      for (let i = 0; i < R; i++) {
        if (slots[i] >= numSlots) throw new Error(`veraRoutedForward: row ${i} uses slot ${slots[i]}, but the slabs hold ${numSlots}`);
        if (slots[i] >= 0) {
          rowsOf.push(i);
          slotOf.push(slots[i]);
        }
      }
      if (!accumulate) rt.clear(g(out), 0, R * outFeatures);
      if (R === 0) return;
      if (shared && shared.ax.length < R * rank) throw new Error(`veraRoutedForward: the shared x·Aᵀ holds ${shared.ax.length} floats, ${R * rank} needed`);
      const axGemm = { batch: 1, m: R, n: rank, k: inFeatures, transA: false, transB: true, strideA: 0, strideB: 0, accumulate: false, ...veraA(p) };
      // filled whenever asked for: the layers after this one read it as ready
      if (shared && !shared.ready) gemm(g(x), g(a), g(shared.ax), axGemm);
      if (outFeatures === 0) return;
      let ax: GpuStorage;
      if (shared) {
        ax = g(shared.ax);
      } else {
        ax = rt.alloc(R * rank, false);
        gemm(g(x), g(a), ax, axGemm);
      }
      const m = rowsOf.length;
      if (m > 0) {
        const rowsDev = rt.upload(Int32Array.from(rowsOf));
        const slotsDev = rt.upload(Int32Array.from(slotOf));
        const u = rt.alloc(m * rank, false);
        ew(S.routedPack(), [ax, g(lambdaD), rowsDev, slotsDev, u], m * rank, [rank]);
        const t = rt.alloc(m * outFeatures, false);
        gemm(u, g(b), t, { batch: 1, m, n: outFeatures, k: rank, transA: false, transB: true, strideA: 0, strideB: 0, accumulate: false });
        ew(S.routedUnpack(), [t, g(lambdaB), rowsDev, slotsDev, g(out)], m * outFeatures, [outFeatures]);
        rt.free(u);
        rt.free(t);
      }
      if (!shared) rt.free(ax);
    },
  };
  return k;
}
