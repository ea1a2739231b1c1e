// Loading the compiled addon (build/Release/vera_native.node, built by scripts/build-native.mjs at
// install). VERA_NATIVE_ADDON points at another build; a missing or unloadable addon is reported,
// not thrown, so the registry can fall back to the TypeScript backend.
// (built-ins fetched lazily: the backend registry, and so this file, is part of the browser entry)
import { fs, nodeModule, path as nodePath, url } from '../../io/node.js';

type F32 = Float32Array;
type F32OrNull = Float32Array | null;

/** The functions the addon exports: kernels take the storages (Float32Arrays) and plain numbers. */
export interface NativeAddon {
  free(s: F32): void;
  /** Bytes from the buffer's start to its first 64-byte boundary (absent from older builds). */
  alignOffset?(buffer: ArrayBuffer): number;
  /** Where `a`'s first element sits within a 64-byte line (for tests). */
  addressMod64?(a: ArrayBufferView): number;
  numThreads(): number;
  setNumThreads(n: number): void;
  gemmKernel(): string;
  /** GFLOP/s of a register-only FMA loop on every pool thread, run for about `seconds`. */
  machinePeak(seconds: number): number;
  fill(out: F32, value: number): void;
  gather(src: F32, shape: readonly number[], strides: readonly number[], offset: number, out: F32): void;
  scatter(src: F32, shape: readonly number[], strides: readonly number[], offset: number, out: F32, accumulate: boolean): void;
  unary(op: number, x: F32, out: F32): void;
  unaryBackward(op: number, x: F32, y: F32, gy: F32, gx: F32): void;
  binary(op: number, a: F32, aStrides: readonly number[], b: F32, bStrides: readonly number[], out: F32, outShape: readonly number[]): void;
  affine(x: F32, mul: number, add: number, out: F32): void;
  powScalar(x: F32, p: number, out: F32): void;
  axpy(a: F32, alpha: number, b: F32, out: F32): void;
  sumReduce(x: F32, outer: number, reduce: number, inner: number, out: F32): void;
  maxReduce(x: F32, outer: number, reduce: number, inner: number, out: F32): void;
  sumSquares(x: F32): number;
  argmaxRows(x: F32, rows: number, cols: number, out: F32): void;
  matmul(a: F32, b: F32, out: F32, batch: number, m: number, n: number, k: number, transA: boolean, transB: boolean, strideA: number, strideB: number, accumulate: boolean): void;
  softmax(x: F32, rows: number, cols: number, out: F32): void;
  softmaxBackward(y: F32, gy: F32, rows: number, cols: number, gx: F32): void;
  logSoftmax(x: F32, rows: number, cols: number, out: F32): void;
  logSoftmaxBackward(y: F32, gy: F32, rows: number, cols: number, gx: F32): void;
  crossEntropy(logits: F32, targets: Int32Array, rows: number, cols: number, ignoreIndex: number, loss: F32, lse: F32): void;
  crossEntropyBackward(logits: F32, lse: F32, targets: Int32Array, gLoss: F32, rows: number, cols: number, ignoreIndex: number, gx: F32): void;
  layerNorm(x: F32, w: F32OrNull, b: F32OrNull, rows: number, cols: number, eps: number, out: F32, mean: F32, rstd: F32): void;
  layerNormBackward(x: F32, w: F32OrNull, mean: F32, rstd: F32, gy: F32, rows: number, cols: number, gx: F32OrNull, gw: F32OrNull, gb: F32OrNull): void;
  rmsNorm(x: F32, w: F32OrNull, rows: number, cols: number, eps: number, out: F32, rstd: F32): void;
  rotary(x: F32, cos: F32, sin: F32, rows: number, heads: number, dim: number, transpose: boolean, out: F32): void;
  rmsNormBackward(x: F32, w: F32OrNull, rstd: F32, gy: F32, rows: number, cols: number, gx: F32OrNull, gw: F32OrNull): void;
  embedding(w: F32, ids: Int32Array, dim: number, out: F32): void;
  embeddingBackward(gy: F32, ids: Int32Array, dim: number, gw: F32): void;
  /** The trailing number is kvStride (positions allocated per kv head). */
  attention(q: F32, k: F32, v: F32, ...dims: [number, number, number, number, number, number, number, boolean, number, F32OrNull, F32, F32, number]): void;
  attentionBackward(q: F32, k: F32, v: F32, out: F32, lse: F32, gOut: F32,
    ...rest: [number, number, number, number, number, number, number, boolean, number, F32OrNull, F32OrNull, F32OrNull, F32OrNull, number]): void;
  conv2d(x: F32, w: F32, bias: F32OrNull, ...rest: [...ConvDims, F32]): void;
  conv2dBackward(x: F32, w: F32, gy: F32, ...rest: [...ConvDims, F32OrNull, F32OrNull, F32OrNull]): void;
  maxPool2d(x: F32, n: number, c: number, h: number, w: number, k: number, stride: number, oh: number, ow: number, out: F32, argmax: Int32Array): void;
  maxPool2dBackward(gy: F32, argmax: Int32Array, gx: F32): void;
  adamw(param: F32, grad: F32, m: F32, v: F32, lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, step: number): void;
  veraForward(x: F32, a: F32, b: F32, lambdaD: F32, lambdaB: F32, rows: number, inF: number, outF: number, r: number, lda: number, out: F32, ax: F32): void;
  veraBackward(a: F32, b: F32, lambdaD: F32, lambdaB: F32, ax: F32, gy: F32, rows: number, inF: number, outF: number, r: number, lda: number,
    gx: F32OrNull, accumulateGx: boolean, gLambdaD: F32OrNull, gLambdaB: F32OrNull): void;
  raggedAttention(q: F32, kNew: F32, vNew: F32, kCaches: F32[], vCaches: F32[], heads: number, kvHeads: number, headDim: number, scale: number,
    tokens: Int32Array, past: Int32Array, out: F32): void;
  /** out = x·Wᵀ, or with inputGrad gx = gy·W; W's format 0 bf16, 1 int8, 2 nf4. */
  quantMatmul(x: F32, rows: number, format: number, wRows: number, wCols: number, data: Uint8Array, scales: F32, blockSize: number, code: F32,
    qscales: Uint8Array | null, scales2: F32OrNull, code2: F32OrNull, offset: number, out: F32, inputGrad: boolean): void;
  /** Which quantized-matmul path runs: "avx512-bf16", "avx512" or "portable". */
  quantKernel(): string;
  veraRoutedForward(x: F32, a: F32, b: F32, lambdaD: F32, lambdaB: F32, slots: Int32Array, rows: number, inF: number, outF: number, r: number, lda: number,
    numSlots: number, out: F32, accumulate: boolean, sharedAx: F32, sharedReady: boolean): void;
  /** Group g's tokens are rows[starts[g] .. starts[g + 1]). */
  loraRoutedForward?(x: F32, y: F32, inF: number, outF: number, as: F32[], bs: F32[], ranks: number[], scalings: number[], starts: number[], rows: Int32Array): void;
}

/** n, cin, h, w, cout, kh, kw, stride, pad, oh, ow */
type ConvDims = [number, number, number, number, number, number, number, number, number, number, number];

export type AddonLoad = { addon: NativeAddon; path: string } | { addon: null; path: string; reason: string };

/**
 * Where the install built the addon: <package>/build/Release/vera_native.node, found from this file
 * (dist/src/backends/native/addon.js). In a bundle this file is gone, so the installed `vera`
 * package is looked up from the bundle's folder instead (its node_modules).
 */
// a variable, not a literal: bundlers (webpack, Vite) turn new URL('literal', import.meta.url) into an asset to copy
const ADDON_FROM_HERE = '../../../../build/Release/vera_native.node';

export function defaultAddonPath(): string {
  const own = url.fileURLToPath(new URL(ADDON_FROM_HERE, import.meta.url));
  if (fs.existsSync(own)) return own;
  try {
    const installed = nodePath.join(nodePath.dirname(nodeModule.createRequire(import.meta.url).resolve('vera/package.json')), 'build', 'Release', 'vera_native.node');
    if (fs.existsSync(installed)) return installed;
  } catch {
    // no installed package to find: report the path beside this file
  }
  return own;
}

export function loadAddon(path: string | undefined = process.env.VERA_NATIVE_ADDON || undefined): AddonLoad {
  // a CommonJS bundle has no import.meta.url: only VERA_NATIVE_ADDON can name the addon there
  const here: string | undefined = import.meta.url;
  if (here === undefined && path === undefined) return { addon: null, path: 'vera_native.node', reason: 'no module URL to find vera_native.node from (a CommonJS bundle?); set VERA_NATIVE_ADDON' };
  const file = path ?? defaultAddonPath();
  try {
    const addon = nodeModule.createRequire(here ?? url.pathToFileURL(file).href)(file) as NativeAddon;
    return { addon, path: file };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const reason = code === 'MODULE_NOT_FOUND' ? `${file} not built` : (e as Error).message.split('\n')[0];
    return { addon: null, path: file, reason };
  }
}
