// VeRA on one linear layer (Kopiczko et al., ICLR 2024, eq. 2):
//
//     h = W0·x + Λb · B · Λd · A · x
//
// A (r × in) and B (out × r) are frozen random matrices shared by every adapted layer and by every
// VeRA adapter on the model: the model holds one pair of shape (r, max_in) / (max_out, r), sized
// by its first adapter, and each layer reads the slices A[:, :in] and B[:out, :]. Only λd (length
// r) and λb (length out) train. Parameter names follow PEFT
// ("vera_lambda_d.<adapter>") so module paths and saved keys line up.
//
// DVoRA (useDora): DoRA's magnitude on top, W' = (m / ‖W0 + ΔW‖) ⊙ (W0 + ΔW) with ΔW the VeRA
// update above; m ("vera_magnitude_vector.<adapter>", out values) trains too. The math is in
// ../dora.ts and AdapterLayer; with Aₛ frozen, the norm's W0·Aₛᵀ and Aₛ·Aₛᵀ are computed once.
import { F, Tensor, defaultRng, type Rng } from '../../tensor/index.js';
import type { Linear } from '../../nn/index.js';
import { VeraError } from '../../io/errors.js';
import { AdapterLayer, type LowRankFactors } from '../tuner.js';

/** The frozen pair the model's VeRA adapters share (PEFT's vera_A / vera_B). */
export interface VeraProjections {
  A: Tensor; // (r, maxIn)
  B: Tensor; // (maxOut, r)
}

interface VeraAdapter {
  lambdaD: Tensor;
  lambdaB: Tensor;
  /** The model's shared pair (the same object in every layer and adapter), or this layer's own under uniqueProjections. */
  projections: VeraProjections;
  /** false only for the paper's unique-projections ablation. */
  shared: boolean;
  dropout: number;
  /** The ablations freeze one of the vectors. */
  trainD: boolean;
  trainB: boolean;
  /** DVoRA's magnitude (out), or null. */
  magnitude: Tensor | null;
}

export interface VeraAdapterOptions {
  dInitial: number;
  bInitial: number;
  dropout: number;
  trainD: boolean;
  trainB: boolean;
  shared: boolean;
  /** r of this adapter; the shared pair may have more rows (it is sized by the model's first adapter). */
  r: number;
  /** DVoRA: add a trained magnitude vector (call initMagnitude once λd and λb hold their start values). */
  useDora?: boolean;
}

/** The adapters using each shared pair, over all layers (PEFT's model-level vera_A dict, keyed by adapter). */
const pairUsers = new WeakMap<VeraProjections, Set<string>>();

export class VeraLinear extends AdapterLayer<VeraAdapter> {
  /** The shared pair this layer has seen (kept when its own adapters are all gone, as PEFT's layers keep vera_A). */
  private pair: VeraProjections | null = null;

  constructor(base: Linear, private readonly rng: Rng | null = null) {
    super(base);
  }

  addAdapter(name: string, projections: VeraProjections, o: VeraAdapterOptions): void {
    const lambdaD = this.addParameter(`vera_lambda_d.${name}`, Tensor.full([o.r], o.dInitial), false);
    const lambdaB = this.addParameter(`vera_lambda_b.${name}`, Tensor.full([this.outFeatures], o.bInitial), false);
    const magnitude = o.useDora ? this.addParameter(`vera_magnitude_vector.${name}`, Tensor.zeros([this.outFeatures]), false) : null;
    this.adapters.set(name, { lambdaD, lambdaB, projections, shared: o.shared, dropout: o.dropout, trainD: o.trainD, trainB: o.trainB, magnitude });
    if (o.shared) {
      this.pair = projections;
      let users = pairUsers.get(projections);
      if (!users) pairUsers.set(projections, (users = new Set()));
      users.add(name);
    }
  }

  override deleteAdapter(name: string): void {
    if (this.pair) pairUsers.get(this.pair)?.delete(name);
    super.deleteAdapter(name);
  }

  /**
   * As PEFT: the shared pair's dict names every VeRA adapter of the model, so a layer choosing its
   * next active adapter picks among all of them, and every layer picks the same one.
   */
  protected override availableAdapterNames(): string[] {
    const shared = this.pair ? [...(pairUsers.get(this.pair) ?? [])] : [];
    return [...new Set([...this.adapterNames(), ...shared])];
  }

  trainableTensors(name: string): Tensor[] {
    const a = this.adapter(name);
    // the ablations freeze λd or λb; DVoRA's magnitude trains in both
    return [...(a.trainD ? [a.lambdaD] : []), ...(a.trainB ? [a.lambdaB] : []), ...(a.magnitude ? [a.magnitude] : [])];
  }

  protected parameterNames(name: string): string[] {
    const names = [`vera_lambda_d.${name}`, `vera_lambda_b.${name}`];
    return this.adapters.get(name)?.magnitude ? [...names, `vera_magnitude_vector.${name}`] : names;
  }

  override magnitude(name: string): Tensor | null {
    return this.adapter(name).magnitude;
  }

  /** ΔW = L·Aₛ with L = (λb ⊙ Bₛ)·diag(λd) (out × r): Aₛ is frozen, so the norm's W0 terms are cached. */
  protected override lowRankFactors(name: string): LowRankFactors {
    const { lambdaB, projections } = this.adapter(name);
    const lambdaD = this.lambdaDFor(name);
    const A = F.slice(projections.A, 1, 0, this.inFeatures);
    const B = F.slice(projections.B, 0, 0, this.outFeatures);
    const L = F.mul(F.mul(B, F.reshape(lambdaB, [this.outFeatures, 1])), F.reshape(lambdaD, [1, lambdaD.size]));
    return { L, R: A, frozenR: true };
  }

  /** The projections adapter `name` computes with (PEFT's vera_A[name] / vera_B[name]). */
  projections(name: string): VeraProjections {
    return this.adapter(name).projections;
  }

  /**
   * λd as wide as the pair's rank. PEFT computes every adapter with the whole shared pair, so an
   * adapter added with a lower r than the first only runs when broadcasting allows it (r = 1).
   */
  private lambdaDFor(name: string): Tensor {
    const { lambdaD, projections } = this.adapter(name);
    const rank = projections.A.shape[0];
    if (lambdaD.size === rank) return lambdaD;
    if (lambdaD.size === 1) return F.mul(Tensor.full([rank], 1), lambdaD);
    throw new VeraError(`VeRA adapter '${name}' has r=${lambdaD.size} but the model's shared vera_A has ${rank} rows (it was sized by the first adapter); PEFT cannot run such an adapter either: give every adapter on one model the same r`);
  }

  protected override assertMergeable(name: string): void {
    this.lambdaDFor(name);
  }

  protected dropInput(name: string, x: Tensor): Tensor {
    return F.dropout(x, this.adapter(name).dropout, this.rng ?? defaultRng(), this.training);
  }

  /** Λb · B · Λd · A · xd, one fused op reading A[:, :in] and B[:out, :] in place. */
  protected branch(name: string, xd: Tensor): Tensor {
    const { lambdaB, projections } = this.adapter(name);
    return F.veraBranch(xd, projections.A, projections.B, this.lambdaDFor(name), lambdaB);
  }

  /** ΔW = (λb ⊙ B[:out])(λd ⊙ A[:, :in]), transposed for (in, out) storage. */
  deltaWeight(name: string): Tensor {
    const { lambdaB, projections } = this.adapter(name);
    const lambdaD = this.lambdaDFor(name);
    const A = F.slice(projections.A, 1, 0, this.inFeatures); // frozen: slicing records no tape
    const B = F.slice(projections.B, 0, 0, this.outFeatures);
    const scaledB = F.mul(B, F.reshape(lambdaB, [this.outFeatures, 1]));
    const scaledA = F.mul(A, F.reshape(lambdaD, [lambdaD.size, 1]));
    return this.base_layer.fanInFanOut ? F.matmul(scaledA, scaledB, { transA: true, transB: true }) : F.matmul(scaledB, scaledA);
  }
}
