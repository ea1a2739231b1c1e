// Standard layers. Initializers follow PyTorch's defaults so freshly built models train alike.
import { F, Tensor, checkAllocation, defaultRng, type Rng } from '../tensor/index.js';
import { Module } from './module.js';

/** U(-bound, bound) of the given shape. */
export function uniformTensor(shape: readonly number[], bound: number, rng: Rng = defaultRng(), requiresGrad = false): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  checkAllocation(n); // before the host array, which a model-size budget would otherwise only see after
  return Tensor.fromArray(rng.fillUniform(new Float32Array(n), -bound, bound), shape, requiresGrad);
}

export function normalTensor(shape: readonly number[], std: number, rng: Rng = defaultRng(), requiresGrad = false): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  checkAllocation(n);
  return Tensor.fromArray(rng.fillNormal(new Float32Array(n), 0, std), shape, requiresGrad);
}

export interface LinearOptions {
  bias?: boolean;
  /** Weight stored (in, out) as GPT-2's Conv1D instead of torch's (out, in). */
  fanInFanOut?: boolean;
  rng?: Rng;
}

/** y = x·Wᵀ + b. With fanInFanOut the weight is stored transposed, (in, out). */
export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly fanInFanOut: boolean;
  weight: Tensor;
  bias: Tensor | null;

  constructor(inFeatures: number, outFeatures: number, opts: LinearOptions = {}) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    this.fanInFanOut = opts.fanInFanOut ?? false;
    // torch.nn.Linear's default: kaiming_uniform(a=√5) ⇒ U(±1/√in) for weight and bias
    const bound = 1 / Math.sqrt(inFeatures);
    const shape = this.fanInFanOut ? [inFeatures, outFeatures] : [outFeatures, inFeatures];
    this.weight = this.addParameter('weight', uniformTensor(shape, bound, opts.rng));
    this.bias = opts.bias === false ? null : this.addParameter('bias', uniformTensor([outFeatures], bound, opts.rng));
  }

  forward(x: Tensor): Tensor {
    return F.linear(x, this.weight, this.bias, this.fanInFanOut);
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
