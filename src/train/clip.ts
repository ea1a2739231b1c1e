// Gradient clipping by global L2 norm, as torch.nn.utils.clip_grad_norm_: one norm over all
// gradients together, so clipping rescales the update without changing its direction.
import { kernels, type Tensor } from '../tensor/index.js';

/** L2 norm over the gradients of `params` (params without a gradient are skipped). */
export function gradNorm(params: readonly Tensor[]): number {
  const k = kernels();
  let sq = 0; // the kernel sums in float64; keep accumulating in double across tensors
  for (const p of params) if (p.grad !== null) sq += k.sumSquares(p.grad.storage);
  return Math.sqrt(sq);
}

/**
 * Scales all gradients in place by maxNorm / (norm + 1e-6) when their total norm exceeds maxNorm
 * (the 1e-6 is torch's, guarding the division). Returns the norm before clipping.
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): number {
  if (!(maxNorm > 0)) throw new Error(`clipGradNorm: maxNorm must be > 0, got ${maxNorm}`);
  const norm = gradNorm(params);
  if (norm > maxNorm) {
    const coef = maxNorm / (norm + 1e-6);
    const k = kernels();
    for (const p of params) if (p.grad !== null) k.affine(p.grad.storage, coef, 0, p.grad.storage);
  }
  return norm;
}
