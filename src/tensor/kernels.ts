// The kernel interface: everything a backend must implement. Tensors and autograd (tensor/) call
// only these; models and PEFT code never see a backend. All buffers hold float32 elements in
// contiguous row-major order; integer inputs (token ids, class targets) are host Int32Arrays.

/** Opaque device memory holding `length` float32 elements. */
export interface Storage {
  readonly length: number;
}

export type UnaryOp =
  | 'neg' | 'exp' | 'log' | 'tanh' | 'sqrt' | 'rsqrt' | 'sigmoid' | 'abs' | 'square'
  | 'relu' | 'silu' | 'gelu_tanh' | 'gelu_erf';

export type BinaryOp = 'add' | 'sub' | 'mul' | 'div' | 'max' | 'min';

export interface MatmulParams {
  batch: number;
  m: number;
  n: number;
  k: number;
  /** A is stored (k, m) per batch instead of (m, k). */
  transA: boolean;
  /** B is stored (n, k) per batch instead of (k, n). */
  transB: boolean;
  /** Element strides between batches; 0 broadcasts one matrix over the batch. */
  strideA: number;
  strideB: number;
  /** Add into `out` instead of overwriting it (gradient accumulation). */
  accumulate: boolean;
}

export interface AttentionParams {
  batch: number;
  heads: number;
  /** Key/value heads; heads % kvHeads == 0 (grouped-query attention). */
  kvHeads: number;
  tq: number;
  tk: number;
  headDim: number;
  scale: number;
  causal: boolean;
  /** Query i sits at absolute position i + causalOffset (KV-cache decoding); default tk - tq. */
  causalOffset: number;
  /** (batch, tk) with 1 = attend, 0 = masked; null = all keys visible. */
  keyMask: Float32Array | null;
  /**
   * Positions allocated per kv head in k/v (≥ tk; default tk): k/v are (batch, kvHeads, kvStride, headDim)
   * of which the first tk positions are used, so head (b, kvh) starts at ((b·kvHeads + kvh)·kvStride)·headDim.
   * A preallocated KV cache is read in place. gk/gv in backward have the same layout.
   */
  kvStride?: number;
}

export interface Conv2dParams {
  n: number; cin: number; h: number; w: number;
  cout: number; kh: number; kw: number;
  stride: number; pad: number;
  oh: number; ow: number;
}

export interface Pool2dParams {
  n: number; c: number; h: number; w: number;
  k: number; stride: number;
  oh: number; ow: number;
}

export interface AdamWParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step, for bias correction. */
  step: number;
}

/** One VeRA branch over `rows` inputs: A is the shared (rank, lda) projection, B the shared (≥ outFeatures, rank) one. */
export interface VeraParams {
  rows: number;
  inFeatures: number;
  outFeatures: number;
  rank: number;
  /** Row stride of A (its max_in); the branch reads A[:, :inFeatures] in place. */
  lda: number;
}

/**
 * Rotary position embedding over x (rows, heads, dim), one cos/sin row (dim) per row of x, shared by
 * its heads: with h = dim/2, out[i] = x[i]·cos[i] − x[i+h]·sin[i] and out[i+h] = x[i+h]·cos[i+h] +
 * x[i]·sin[i+h] (i < h), i.e. x·cos + rotate_half(x)·sin. `transpose` applies the transposed map
 * (the backward): out[i] = x[i]·cos[i] + x[i+h]·sin[i+h], out[i+h] = x[i+h]·cos[i+h] − x[i]·sin[i].
 */
export interface RotaryParams {
  rows: number;
  heads: number;
  /** Even. */
  dim: number;
  transpose: boolean;
}

/** Per-row VeRA for inference: row i uses row slots[i] of the λd slab (numSlots, rank) and of the λb slab (numSlots, outFeatures); slots[i] < 0 contributes nothing. */
export interface VeraRoutedParams {
  rows: number;
  inFeatures: number;
  outFeatures: number;
  rank: number;
  /** row stride of A (its max_in) */
  lda: number;
  numSlots: number;
}

/**
 * Attention of a ragged batch (inference): T tokens of several sequences, each sequence with its
 * own KV cache laid out position-major (capacity, kvHeads, headDim).
 */
export interface RaggedAttentionParams {
  heads: number;
  kvHeads: number;
  headDim: number;
  scale: number;
  /** Per sequence: its tokens in this call (consecutive, in order). */
  tokens: Int32Array;
  /** Per sequence: positions already in its cache (its tokens sit at past, past+1, …). */
  past: Int32Array;
}

export type { QuantizedData, QuantFormat } from './quant.js';
import type { QuantizedData } from './quant.js';

export interface Kernels {
  readonly name: string;

  // memory
  alloc(length: number): Storage; // zero-filled
  /**
   * A storage whose contents are unspecified (optional; `alloc` otherwise): only for the output of
   * a kernel that writes every element of it before anything reads it. Saves zero-filling the
   * activations of a batched decode step (~100 MB a step at 64 rows of a SmolLM-135M shape).
   */
  allocUnset?(length: number): Storage;
  fromArray(data: Float32Array): Storage; // copies
  /**
   * Host copy (or read-only view) of the buffer. Callers must not mutate the result. A view need
   * not start at offset 0 of its ArrayBuffer (the native backend aligns storages to 64 bytes).
   */
  read(s: Storage): Float32Array;
  /**
   * Host copy of the buffer, asynchronously: GPU backends, whose buffers can only be mapped for
   * reading asynchronously, implement it (their `read` may throw or block); callers that can wait
   * use `k.readAsync ? await k.readAsync(s) : k.read(s)`. Callers must not mutate the result.
   */
  readAsync?(s: Storage): Promise<Float32Array>;
  write(s: Storage, data: Float32Array, offset: number): void;
  /** Release early; optional (GC reclaims otherwise). */
  free?(s: Storage): void;
  fill(out: Storage, value: number): void;

  // layout: out[i] = src[offset + Σ idx_d·strides_d] over `shape`; scatter is the adjoint (out += / =)
  gather(src: Storage, shape: readonly number[], strides: readonly number[], offset: number, out: Storage): void;
  scatter(src: Storage, shape: readonly number[], strides: readonly number[], offset: number, out: Storage, accumulate: boolean): void;

  // elementwise
  unary(op: UnaryOp, x: Storage, out: Storage): void;
  /**
   * gx = gy · f'(x); y = f(x) is passed for ops whose derivative is cheaper from it. A kernel reads
   * only y for exp, tanh, sqrt, rsqrt and sigmoid and only x for the rest: autograd keeps just that
   * one and passes it as both (x and y may be the same buffer).
   */
  unaryBackward(op: UnaryOp, x: Storage, y: Storage, gy: Storage, gx: Storage): void;
  /** Broadcasting through strides (0 on broadcast dims), over outShape. `out` may alias `a`. */
  binary(op: BinaryOp, a: Storage, aStrides: readonly number[], b: Storage, bStrides: readonly number[], out: Storage, outShape: readonly number[]): void;
  /** out = x·mul + add (out may alias x). */
  affine(x: Storage, mul: number, add: number, out: Storage): void;
  powScalar(x: Storage, p: number, out: Storage): void;
  /** out = a + alpha·b, elementwise, same length (out may alias a). */
  axpy(a: Storage, alpha: number, b: Storage, out: Storage): void;

  // reductions over the middle axis of an (outer, reduce, inner) view
  sumReduce(x: Storage, outer: number, reduce: number, inner: number, out: Storage): void;
  maxReduce(x: Storage, outer: number, reduce: number, inner: number, out: Storage): void;
  /** Σ x², in float64. */
  sumSquares(x: Storage): number;
  /** out[r] = the index (as a float) of the first maximum of row r of x (rows × cols), NaNs skipped; 0 for a row with no number. */
  argmaxRows(x: Storage, rows: number, cols: number, out: Storage): void;

  matmul(a: Storage, b: Storage, out: Storage, p: MatmulParams): void;
  /**
   * x (rows, w.cols) · Wᵀ → out (rows, w.rows), W a frozen compact weight (host typed arrays) that the
   * kernel dequantizes tile by tile, never whole.
   */
  quantMatmul(x: Storage, w: QuantizedData, rows: number, out: Storage): void;
  /** The input gradient of quantMatmul: gy (rows, w.rows) · W → gx (rows, w.cols), overwritten. */
  quantMatmulInputGrad(gy: Storage, w: QuantizedData, rows: number, gx: Storage): void;

  // row-wise ops over the last axis (rows × cols)
  softmax(x: Storage, rows: number, cols: number, out: Storage): void;
  softmaxBackward(y: Storage, gy: Storage, rows: number, cols: number, gx: Storage): void;
  logSoftmax(x: Storage, rows: number, cols: number, out: Storage): void;
  logSoftmaxBackward(y: Storage, gy: Storage, rows: number, cols: number, gx: Storage): void;
  /** Per-row loss (0 where ignored) and log-sum-exp (kept for backward). */
  crossEntropy(logits: Storage, targets: Int32Array, rows: number, cols: number, ignoreIndex: number, loss: Storage, lse: Storage): void;
  /** gx = gLoss[row]·(softmax − onehot), rows with ignored targets get 0. */
  crossEntropyBackward(logits: Storage, lse: Storage, targets: Int32Array, gLoss: Storage, rows: number, cols: number, ignoreIndex: number, gx: Storage): void;
  layerNorm(x: Storage, weight: Storage | null, bias: Storage | null, rows: number, cols: number, eps: number, out: Storage, mean: Storage, rstd: Storage): void;
  /** Accumulates into gWeight/gBias when given. */
  layerNormBackward(x: Storage, weight: Storage | null, mean: Storage, rstd: Storage, gy: Storage, rows: number, cols: number, gx: Storage | null, gWeight: Storage | null, gBias: Storage | null): void;
  rmsNorm(x: Storage, weight: Storage | null, rows: number, cols: number, eps: number, out: Storage, rstd: Storage): void;
  rmsNormBackward(x: Storage, weight: Storage | null, rstd: Storage, gy: Storage, rows: number, cols: number, gx: Storage | null, gWeight: Storage | null): void;

  // lookups
  embedding(weight: Storage, ids: Int32Array, dim: number, out: Storage): void;
  /** gWeight[ids[i]] += gy[i]. */
  embeddingBackward(gy: Storage, ids: Int32Array, dim: number, gWeight: Storage): void;

  // fused attention over (batch, heads, t, headDim) layouts; lse (batch·heads·tq) kept for backward
  attention(q: Storage, k: Storage, v: Storage, p: AttentionParams, out: Storage, lse: Storage): void;
  attentionBackward(q: Storage, k: Storage, v: Storage, out: Storage, lse: Storage, gOut: Storage, p: AttentionParams,
    gq: Storage | null, gk: Storage | null, gv: Storage | null): void;

  /**
   * Ragged attention: q (T, heads, headDim), kNew/vNew (T, kvHeads, headDim) position-major; each
   * sequence's new keys and values are first written into its caches at positions past..past+n−1
   * (every cache holds at least past + n positions), then each of its tokens attends causally over
   * its cache; out (T, heads, headDim).
   */
  raggedAttention(q: Storage, kNew: Storage, vNew: Storage, kCaches: readonly Storage[], vCaches: readonly Storage[], p: RaggedAttentionParams, out: Storage): void;

  /** x (rows, heads, dim) → out (not x itself), rotated by cos/sin (rows, dim): see RotaryParams. */
  rotary(x: Storage, cos: Storage, sin: Storage, p: RotaryParams, out: Storage): void;

  // images (NCHW)
  conv2d(x: Storage, w: Storage, bias: Storage | null, p: Conv2dParams, out: Storage): void;
  /** Accumulates into gw / gb; overwrites gx. */
  conv2dBackward(x: Storage, w: Storage, gy: Storage, p: Conv2dParams, gx: Storage | null, gw: Storage | null, gb: Storage | null): void;
  maxPool2d(x: Storage, p: Pool2dParams, out: Storage, argmax: Int32Array): void;
  maxPool2dBackward(gy: Storage, argmax: Int32Array, p: Pool2dParams, gx: Storage): void;

  // optimizer
  adamw(param: Storage, grad: Storage, m: Storage, v: Storage, p: AdamWParams): void;

  // fused VeRA branch: out = λb ⊙ (B[:out, :] · (λd ⊙ (A[:, :in] · x))) per row; ax = x·A[:, :in]ᵀ (rows, rank) is kept for backward
  veraForward(x: Storage, a: Storage, b: Storage, lambdaD: Storage, lambdaB: Storage, p: VeraParams, out: Storage, ax: Storage): void;
  /** gx is overwritten, or added to with accumulateGx; gLambdaD / gLambdaB are added to. */
  veraBackward(a: Storage, b: Storage, lambdaD: Storage, lambdaB: Storage, ax: Storage, gy: Storage, p: VeraParams,
    gx: Storage | null, accumulateGx: boolean, gLambdaD: Storage | null, gLambdaB: Storage | null): void;
  /**
   * Routed VeRA for inference (no backward): out[i, o] (+)= λb[s, o]·Σ_j B[o, j]·λd[s, j]·(x·A[:, :in]ᵀ)[i, j] with
   * s = slots[i]; rows with s < 0 are left as they are (accumulate) or zeroed (overwrite). x·A[:, :in]ᵀ is one GEMM
   * over every row whatever the slots. Callers check 0 ≤ slots[i] < numSlots for the rows that route.
   */
  /**
   * `shared`: x·A[:, :in]ᵀ (rows × r) kept for other layers with the same input: written there
   * first unless `ready`, then read (never changed) instead of computed.
   */
  veraRoutedForward(x: Storage, a: Storage, b: Storage, lambdaD: Storage, lambdaB: Storage, slots: Int32Array, p: VeraRoutedParams,
    out: Storage, accumulate: boolean, shared?: { ax: Storage; ready: boolean }): void;
  /**
   * Routed LoRA for inference (no backward), optional: y[t] += scaling·B·(A·x[t]) for every token t of every group,
   * x (tokens × inFeatures), y (tokens × outFeatures), each group's A (rank × in) and B (out × rank). A token is in at
   * most one group. Without it, callers gather, multiply and scatter each group's rows themselves.
   */
  loraRoutedForward?(x: Storage, y: Storage, inFeatures: number, outFeatures: number, groups: readonly LoraRoutedGroup[]): void;
}

/** One LoRA adapter's tokens in a routed call (Kernels.loraRoutedForward). */
export interface LoraRoutedGroup {
  a: Storage;
  b: Storage;
  rank: number;
  scaling: number;
  /** Indices of the tokens (rows of x and y) that use this adapter. */
  rows: Int32Array;
}
