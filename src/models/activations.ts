// Hugging Face's ACT2FN names, as modules (HF registers the activation as a child, e.g. GPT2MLP.act).
import { F, type Tensor } from '../tensor/index.js';
import { Module } from '../nn/index.js';

const ACT2FN = {
  gelu: (x: Tensor) => F.gelu(x, 'erf'),
  gelu_new: (x: Tensor) => F.gelu(x, 'tanh'),
  gelu_pytorch_tanh: (x: Tensor) => F.gelu(x, 'tanh'),
  gelu_fast: (x: Tensor) => F.gelu(x, 'tanh'), // the same tanh approximation, written differently
  quick_gelu: (x: Tensor) => F.mul(x, F.sigmoid(F.scale(x, 1.702))),
  relu: (x: Tensor) => F.relu(x),
  silu: (x: Tensor) => F.silu(x),
  swish: (x: Tensor) => F.silu(x),
  tanh: (x: Tensor) => F.tanh(x),
} as const;

export type ActivationName = keyof typeof ACT2FN;
export const ACTIVATION_NAMES = Object.keys(ACT2FN) as ActivationName[];

export class Activation extends Module {
  constructor(readonly kind: ActivationName) {
    super();
  }

  forward(x: Tensor): Tensor {
    return ACT2FN[this.kind](x);
  }
}
