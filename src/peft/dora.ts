// DoRA's magnitude (Liu et al., ICML 2024; PEFT's lora/dora.py), shared by LoRA (DoRA) and VeRA
// (DVoRA): each adapted layer keeps a trained vector m, one value per output row, and computes with
//
//     W' = (m / ‖W0 + ΔW‖_row) ⊙ (W0 + ΔW)
//
// where the row norms are a constant of the step (detached, DoRA §4.3): gradients reach m and ΔW's
// factors, never the norm. The norms come from ΔW's low-rank factors without forming an out × in
// matrix: with ΔW = L·R (L: out × k, R: k × in),
//
//     ‖W0ᵢ + ΔWᵢ‖² = ‖W0ᵢ‖² + 2·Lᵢ·(W0·Rᵀ)ᵢ + Lᵢ·(R·Rᵀ)·Lᵢᵀ
//
// so a step costs one out × in × k product (W0·Rᵀ; a constant for VeRA, whose R is frozen) and
// out × k² more, and holds out × k values instead of out × in.
import { F, Tensor, noGrad } from '../tensor/index.js';

/** Σ_in W0² per output row of a weight stored (out, in), or (in, out) when `fanInFanOut`. */
export function storedRowSquares(w: Tensor, fanInFanOut: boolean): Tensor {
  return noGrad(() => F.sum(F.mul(w, w), [fanInFanOut ? 0 : 1]));
}

/** Row norms (out) of the stored weight `w` (Conv1D's (in, out) read as (out, in)). */
export function storedRowNorms(w: Tensor, fanInFanOut: boolean): Tensor {
  return noGrad(() => F.pow(storedRowSquares(w, fanInFanOut), 0.5));
}

/** W0·Rᵀ (out × k) for W0 stored (out, in) or (in, out). */
export function baseTimesRt(w: Tensor, fanInFanOut: boolean, R: Tensor): Tensor {
  return noGrad(() => (fanInFanOut ? F.matmul(w, R, { transA: true, transB: true }) : F.matmul(w, R, { transB: true })));
}

/**
 * ‖W0 + L·R‖ per row (out), detached. `w0Sq` = storedRowSquares(W0), `P` = W0·Rᵀ (out × k),
 * `G` = R·Rᵀ (k × k): pass them when cached. Negative round-off under the root is clamped to 0.
 */
export function lowRankRowNorms(w0Sq: Tensor, L: Tensor, P: Tensor, G: Tensor): Tensor {
  return noGrad(() => {
    const cross = F.sum(F.mul(L, P), [1]);
    const quad = F.sum(F.mul(F.matmul(L, G), L), [1]);
    const sq = F.add(F.add(w0Sq, F.scale(cross, 2)), quad);
    return F.pow(F.maximum(sq, Tensor.zeros([sq.size])), 0.5);
  });
}

/**
 * The DoRA term added to the base layer's output: (g − 1)·base + g·branch with g = m / norm, as
 * g ⊙ (base + branch) − base. `base` is W0·x (no bias) on the input the branch saw; `norm` is a
 * constant (no tape), so gradients reach m, the branch and x only.
 */
export function doraOutput(base: Tensor, branch: Tensor, magnitude: Tensor, norm: Tensor): Tensor {
  const g = F.div(magnitude, norm);
  return F.sub(F.mul(F.add(base, branch), g), base);
}

/** (m / norm) broadcast over the stored weight's rows: (out, 1), or (out) for (in, out) storage. */
export function rowFactor(magnitude: Tensor, norm: Tensor, fanInFanOut: boolean): Tensor {
  const g = F.div(magnitude, norm);
  return fanInFanOut ? g : F.reshape(g, [g.size, 1]);
}
