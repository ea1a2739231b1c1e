// LoRA on one linear layer (Hu et al., 2022): h = W0·x + (α/r)·B·A·x with A (r × in) and
// B (out × r) both trained; B starts at zero so training starts from the base model.
// With DoRA (use_dora) the layer also trains a magnitude m per output row (PEFT's
// lora_magnitude_vector; the math is in ../dora.ts and AdapterLayer).
import { F, Tensor, defaultRng, type Rng } from '../../tensor/index.js';
import { uniformTensor, type Linear } from '../../nn/index.js';
import { AdapterLayer, type LowRankFactors } from '../tuner.js';

interface LoraAdapter {
  A: Tensor;
  B: Tensor;
  scaling: number;
  dropout: number;
  /** DoRA's magnitude (out), or null. */
  magnitude: Tensor | null;
}

export class LoraLinear extends AdapterLayer<LoraAdapter> {
  constructor(base: Linear, private readonly rng: Rng | null = null) {
    super(base);
  }

  addAdapter(name: string, r: number, scaling: number, dropout: number, init: boolean, rng: Rng, useDora = false): void {
    // PEFT: kaiming_uniform_(a=√5) on A ⇒ U(±1/√in); B = 0
    const A = this.addParameter(`lora_A.${name}.weight`, uniformTensor([r, this.inFeatures], 1 / Math.sqrt(this.inFeatures), rng), false);
    const B = this.addParameter(`lora_B.${name}.weight`, init ? Tensor.zeros([this.outFeatures, r]) : uniformTensor([this.outFeatures, r], 1 / Math.sqrt(r), rng), false);
    // PEFT's parameter name: lora_magnitude_vector.<adapter>.weight (saved without ".<adapter>.weight")
    const magnitude = useDora ? this.addParameter(`lora_magnitude_vector.${name}.weight`, Tensor.zeros([this.outFeatures]), false) : null;
    this.adapters.set(name, { A, B, scaling, dropout, magnitude });
    if (useDora) this.initMagnitude(name);
  }

  trainableTensors(name: string): Tensor[] {
    const a = this.adapter(name);
    return a.magnitude ? [a.A, a.B, a.magnitude] : [a.A, a.B];
  }

  protected parameterNames(name: string): string[] {
    const names = [`lora_A.${name}.weight`, `lora_B.${name}.weight`];
    return this.adapters.get(name)?.magnitude ? [...names, `lora_magnitude_vector.${name}.weight`] : names;
  }

  override magnitude(name: string): Tensor | null {
    return this.adapter(name).magnitude;
  }

  protected override lowRankFactors(name: string): LowRankFactors {
    const { A, B, scaling } = this.adapter(name);
    return { L: F.scale(B, scaling), R: A, frozenR: false };
  }

  protected dropInput(name: string, x: Tensor): Tensor {
    return F.dropout(x, this.adapter(name).dropout, this.rng ?? defaultRng(), this.training);
  }

  protected branch(name: string, xd: Tensor): Tensor {
    const { A, B, scaling } = this.adapter(name);
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
