// LoRA on one linear layer (Hu et al., 2022): h = W0·x + (α/r)·B·A·x with A (r × in) and
// B (out × r) both trained; B starts at zero so training starts from the base model.
import { F, Tensor, defaultRng, type Rng } from '../../tensor/index.js';
import { uniformTensor, type Linear } from '../../nn/index.js';
import { AdapterLayer } from '../tuner.js';

interface LoraAdapter {
  A: Tensor;
  B: Tensor;
  scaling: number;
  dropout: number;
}

export class LoraLinear extends AdapterLayer<LoraAdapter> {
  constructor(base: Linear, private readonly rng: Rng | null = null) {
    super(base);
  }

  addAdapter(name: string, r: number, scaling: number, dropout: number, init: boolean, rng: Rng): void {
    // PEFT: kaiming_uniform_(a=√5) on A ⇒ U(±1/√in); B = 0
    const A = this.addParameter(`lora_A.${name}.weight`, uniformTensor([r, this.inFeatures], 1 / Math.sqrt(this.inFeatures), rng), false);
    const B = this.addParameter(`lora_B.${name}.weight`, init ? Tensor.zeros([this.outFeatures, r]) : uniformTensor([this.outFeatures, r], 1 / Math.sqrt(r), rng), false);
    this.adapters.set(name, { A, B, scaling, dropout });
  }

  trainableTensors(name: string): Tensor[] {
    const a = this.adapter(name);
    return [a.A, a.B];
  }

  protected parameterNames(name: string): string[] {
    return [`lora_A.${name}.weight`, `lora_B.${name}.weight`];
  }

  protected adapterForward(name: string, x: Tensor): Tensor {
    const { A, B, scaling, dropout } = this.adapter(name);
    const xd = F.dropout(x, dropout, this.rng ?? defaultRng(), this.training);
    // scaling·(B·(A·x)) applied to the r-wide middle, not the out-wide result: the same product,
    // but the scale (and its backward) touch tokens×r values instead of tokens×out
    return F.matmul(F.scale(F.matmul(xd, A, { transB: true }), scaling), B, { transB: true });
  }

  /** ΔW = (α/r)·B·A, transposed for (in, out) storage. */
  deltaWeight(name: string): Tensor {
    const { A, B, scaling } = this.adapter(name);
    const d = this.base_layer.fanInFanOut ? F.matmul(A, B, { transA: true, transB: true }) : F.matmul(B, A);
    return F.scale(d, scaling);
  }
}
