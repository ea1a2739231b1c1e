// VeRA on one linear layer (Kopiczko et al., ICLR 2024, eq. 2):
//
//     h = W0·x + Λb · B · Λd · A · x
//
// A (r × in) and B (out × r) are frozen random matrices shared by every adapted layer: the model
// holds one pair of shape (r, max_in) / (max_out, r) and each layer reads the slices A[:, :in] and
// B[:out, :]. Only λd (length r) and λb (length out) train. Parameter names follow PEFT
// ("vera_lambda_d.<adapter>") so module paths and saved keys line up.
import { F, Tensor, defaultRng, type Rng } from '../../tensor/index.js';
import type { Linear } from '../../nn/index.js';
import { AdapterLayer } from '../tuner.js';

/** The frozen pair one adapter's layers share. */
export interface VeraProjections {
  A: Tensor; // (r, maxIn)
  B: Tensor; // (maxOut, r)
}

interface VeraAdapter {
  lambdaD: Tensor;
  lambdaB: Tensor;
  projections: VeraProjections;
  dropout: number;
  /** The ablations freeze one of the vectors. */
  trainD: boolean;
  trainB: boolean;
}

export interface VeraAdapterOptions {
  dInitial: number;
  bInitial: number;
  dropout: number;
  trainD: boolean;
  trainB: boolean;
}

export class VeraLinear extends AdapterLayer<VeraAdapter> {
  constructor(base: Linear, private readonly rng: Rng | null = null) {
    super(base);
  }

  addAdapter(name: string, projections: VeraProjections, o: VeraAdapterOptions): void {
    const r = projections.A.shape[0];
    const lambdaD = this.addParameter(`vera_lambda_d.${name}`, Tensor.full([r], o.dInitial), false);
    const lambdaB = this.addParameter(`vera_lambda_b.${name}`, Tensor.full([this.outFeatures], o.bInitial), false);
    this.adapters.set(name, { lambdaD, lambdaB, projections, dropout: o.dropout, trainD: o.trainD, trainB: o.trainB });
  }

  trainableTensors(name: string): Tensor[] {
    const a = this.adapter(name);
    return [...(a.trainD ? [a.lambdaD] : []), ...(a.trainB ? [a.lambdaB] : [])];
  }

  protected parameterNames(name: string): string[] {
    return [`vera_lambda_d.${name}`, `vera_lambda_b.${name}`];
  }

  /** A[:, :in] and B[:out, :] (frozen, so slicing records no tape). */
  private slices(p: VeraProjections): [Tensor, Tensor] {
    return [F.slice(p.A, 1, 0, this.inFeatures), F.slice(p.B, 0, 0, this.outFeatures)];
  }

  /** Λb · B · Λd · A · dropout(x), one fused op reading A[:, :in] and B[:out, :] in place. */
  protected adapterForward(name: string, x: Tensor): Tensor {
    const { lambdaD, lambdaB, projections, dropout } = this.adapter(name);
    const xd = F.dropout(x, dropout, this.rng ?? defaultRng(), this.training);
    return F.veraBranch(xd, projections.A, projections.B, lambdaD, lambdaB);
  }

  /** ΔW = (λb ⊙ B)(λd ⊙ A), transposed for (in, out) storage. */
  deltaWeight(name: string): Tensor {
    const { lambdaD, lambdaB, projections } = this.adapter(name);
    const [A, B] = this.slices(projections);
    const scaledB = F.mul(B, F.reshape(lambdaB, [this.outFeatures, 1]));
    const scaledA = F.mul(A, F.reshape(lambdaD, [lambdaD.size, 1]));
    return this.base_layer.fanInFanOut ? F.matmul(scaledA, scaledB, { transA: true, transB: true }) : F.matmul(scaledB, scaledA);
  }
}
