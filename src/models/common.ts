// Pieces shared by the model families.
import { Rng, type Tensor } from '../tensor/index.js';
import type { Module } from '../nn/index.js';

/**
 * A child that maps a tensor to a tensor: a Linear/Conv1D as built, or whatever PEFT swapped in
 * for it (models call such children only through `forward`).
 */
export type TensorLayer = Module & { forward(x: Tensor): Tensor };

/**
 * An Rng whose fills leave zeros: layers built with it skip their random initialization, which
 * is wasted work when a checkpoint overwrites every weight (Hugging Face's `no_init_weights`).
 */
export class SkipInitRng extends Rng {
  override readonly skipsInit = true;

  constructor() {
    super(0);
  }

  override fillUniform(out: Float32Array): Float32Array {
    return out;
  }

  override fillNormal(out: Float32Array): Float32Array {
    return out;
  }
}

/** Overwrite `t` with N(0, std²) draws from `rng`. */
export function initNormal(t: Tensor, std: number, rng: Rng): void {
  t.copyFrom(rng.fillNormal(new Float32Array(t.size), 0, std));
}
