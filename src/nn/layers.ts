// Standard layers. Initializers follow PyTorch's defaults so freshly built models train alike.
import { F, Tensor, checkAllocation, defaultRng, dequantize, quantize, type QuantFormat, type QuantizedData, type Rng, type WeightFormat } from '../tensor/index.js';
import { VeraError } from '../io/errors.js';
import { kernels } from '../tensor/device.js';

const EMPTY_WEIGHT = (): Tensor => Tensor.zeros([0]);
import { Module } from './module.js';

/** U(-bound, bound) of the given shape. */
export function uniformTensor(shape: readonly number[], bound: number, rng: Rng = defaultRng(), requiresGrad = false): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  checkAllocation(n); // before the host array, which a model-size budget would otherwise only see after
  // a model about to be overwritten by a checkpoint: zeros straight from the backend, no host array
  // to copy (a copy touches every page: a 7B built this way took its whole f32 size in RSS)
  if (rng.skipsInit) return Tensor.zeros(shape, requiresGrad);
  return Tensor.fromArray(rng.fillUniform(new Float32Array(n), -bound, bound), shape, requiresGrad);
}

export function normalTensor(shape: readonly number[], std: number, rng: Rng = defaultRng(), requiresGrad = false): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  checkAllocation(n);
  if (rng.skipsInit) return Tensor.zeros(shape, requiresGrad);
  return Tensor.fromArray(rng.fillNormal(new Float32Array(n), 0, std), shape, requiresGrad);
}

export interface LinearOptions {
  bias?: boolean;
  /** Weight stored (in, out) as GPT-2's Conv1D instead of torch's (out, in). */
  fanInFanOut?: boolean;
  rng?: Rng;
}

/**
 * y = x·Wᵀ + b. With fanInFanOut the weight is stored transposed, (in, out).
 *
 * A frozen base layer may hold its weight in a compact format instead (`quantize`, or
 * `setQuantized` from a pre-quantized checkpoint): then the float32 `weight` parameter is gone
 * (reading it is an error naming the format), `quantized` holds the (out, in) compact weight
 * whatever fanInFanOut says, and forward runs the quantized kernels (input gradients only).
 */
export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly fanInFanOut: boolean;
  bias: Tensor | null;
  #weight: Tensor;
  #quantized: QuantizedData | null = null;

  constructor(inFeatures: number, outFeatures: number, opts: LinearOptions = {}) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    this.fanInFanOut = opts.fanInFanOut ?? false;
    // torch.nn.Linear's default: kaiming_uniform(a=√5) ⇒ U(±1/√in) for weight and bias
    const bound = 1 / Math.sqrt(inFeatures);
    const shape = this.fanInFanOut ? [inFeatures, outFeatures] : [outFeatures, inFeatures];
    this.#weight = this.addParameter('weight', uniformTensor(shape, bound, opts.rng));
    this.bias = opts.bias === false ? null : this.addParameter('bias', uniformTensor([outFeatures], bound, opts.rng));
  }

  get weight(): Tensor {
    if (this.#quantized) throw new VeraError(`this linear layer holds its weight as ${this.#quantized.format}; use dequantizedWeight() for a float32 copy`);
    return this.#weight;
  }

  set weight(t: Tensor) {
    this.#weight = t;
  }

  /** The compact weight, or null for a float32 one. */
  get quantized(): QuantizedData | null {
    return this.#quantized;
  }

  /** 'f32' or the compact format the weight is held in. */
  get weightFormat(): WeightFormat {
    return this.#quantized?.format ?? 'f32';
  }

  /**
   * Replaces the float32 weight by its `format` form (bf16 rounds to nearest even; int8, nf4 as in
   * tensor/quant.ts) and releases the float32 storage. NaN/Inf are refused in one line.
   */
  quantize(format: QuantFormat, opts: { doubleQuant?: boolean; name?: string } = {}): void {
    if (this.#quantized) throw new VeraError(`this linear layer is already quantized (${this.#quantized.format})`);
    const w = this.#weight;
    const q = quantize(w.data(), this.outFeatures, this.inFeatures, format, { ...opts, transposed: this.fanInFanOut });
    this.setQuantized(q, true);
  }

  /**
   * Holds `q` ((out, in), already quantized) as the weight; the float32 one is dropped (its storage
   * released at once with `release`, when nothing else shares it).
   */
  setQuantized(q: QuantizedData, release = false): void {
    if (q.rows !== this.outFeatures || q.cols !== this.inFeatures) throw new VeraError(`quantized weight is ${q.rows}×${q.cols}, the layer is ${this.outFeatures}×${this.inFeatures} (out × in)`);
    if (!this.#quantized) {
      this.removeParameter('weight');
      if (release) kernels().free?.(this.#weight.storage);
      this.#weight = EMPTY_WEIGHT();
    }
    this.#quantized = q;
  }

  /** Back to a float32 weight (dequantized), e.g. to write an f32 merged model. */
  dequantize_(): void {
    if (!this.#quantized) return;
    const w = this.dequantizedWeight();
    this.#quantized = null;
    this.#weight = this.addParameter('weight', w, false);
  }

  /** A float32 copy of the weight in the layer's own layout ((in, out) with fanInFanOut). */
  dequantizedWeight(): Tensor {
    if (!this.#quantized) return this.#weight.clone();
    const d = dequantize(this.#quantized);
    if (!this.fanInFanOut) return Tensor.fromArray(d, [this.outFeatures, this.inFeatures]);
    const t = new Float32Array(d.length);
    const o = this.outFeatures;
    const i = this.inFeatures;
    for (let r = 0; r < o; r++) for (let c = 0; c < i; c++) t[c * o + r] = d[r * i + c];
    return Tensor.fromArray(t, [i, o]);
  }

  forward(x: Tensor): Tensor {
    if (this.#quantized) return F.linearQuantized(x, this.#quantized, this.bias);
    return F.linear(x, this.#weight, this.bias, this.fanInFanOut);
  }
}

/** Hugging Face's Conv1D (GPT-2): a linear layer whose weight is stored (in, out). */
export class Conv1D extends Linear {
  constructor(outFeatures: number, inFeatures: number, rng?: Rng) {
    super(inFeatures, outFeatures, { fanInFanOut: true, rng });
    this.weight.copyFrom(normalTensor([inFeatures, outFeatures], 0.02, rng));
    this.bias!.copyFrom(new Float32Array(outFeatures));
  }
}

export class Embedding extends Module {
  weight: Tensor;

  constructor(readonly numEmbeddings: number, readonly dim: number, rng?: Rng) {
    super();
    this.weight = this.addParameter('weight', normalTensor([numEmbeddings, dim], 1, rng));
  }

  forward(ids: Int32Array, shape: readonly number[]): Tensor {
    return F.embedding(this.weight, ids, shape);
  }
}

export class LayerNorm extends Module {
  weight: Tensor;
  bias: Tensor;

  constructor(readonly dim: number, readonly eps = 1e-5) {
    super();
    this.weight = this.addParameter('weight', Tensor.ones([dim]));
    this.bias = this.addParameter('bias', Tensor.zeros([dim]));
  }

  forward(x: Tensor): Tensor {
    return F.layerNorm(x, this.weight, this.bias, this.eps);
  }
}

export class RMSNorm extends Module {
  weight: Tensor;

  constructor(readonly dim: number, readonly eps = 1e-6) {
    super();
    this.weight = this.addParameter('weight', Tensor.ones([dim]));
  }

  forward(x: Tensor): Tensor {
    return F.rmsNorm(x, this.weight, this.eps);
  }
}

export class Dropout extends Module {
  /** Without an explicit rng, masks come from the global generator at call time (manualSeed reaches them). */
  constructor(readonly p: number, private readonly rng: Rng | null = null) {
    super();
  }

  forward(x: Tensor): Tensor {
    return F.dropout(x, this.p, this.rng ?? defaultRng(), this.training);
  }
}

export class Conv2d extends Module {
  weight: Tensor;
  bias: Tensor | null;

  constructor(readonly inChannels: number, readonly outChannels: number, readonly kernelSize: number, readonly stride = 1, readonly padding = 0, rng?: Rng) {
    super();
    const bound = 1 / Math.sqrt(inChannels * kernelSize * kernelSize);
    this.weight = this.addParameter('weight', uniformTensor([outChannels, inChannels, kernelSize, kernelSize], bound, rng));
    this.bias = this.addParameter('bias', uniformTensor([outChannels], bound, rng));
  }

  forward(x: Tensor): Tensor {
    return F.conv2d(x, this.weight, this.bias, this.stride, this.padding);
  }
}

export class MaxPool2d extends Module {
  constructor(readonly kernelSize: number, readonly stride = kernelSize) {
    super();
  }

  forward(x: Tensor): Tensor {
    return F.maxPool2d(x, this.kernelSize, this.stride);
  }
}
