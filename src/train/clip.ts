// Gradient clipping by global L2 norm, as torch.nn.utils.clip_grad_norm_: one norm over all
// gradients together, so clipping rescales the update without changing its direction.
import { F, Tensor, kernels, noGrad } from '../tensor/index.js';

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

/**
 * clipGradNorm without a host read, for backends whose reads are asynchronous (WebGPU): the norm,
 * the clip coefficient min(1, maxNorm / (norm + 1e-6)) (torch's clamped form) and the scaling all
 * stay on the device, and every gradient is replaced by its scaled copy. Returns the norm before
 * clipping as a one-element tensor, to read with itemAsync() when convenient. The squares are summed
 * in float32 on the device (clipGradNorm sums in float64 on the host), so the two can differ in
 * the last digits.
 */
export function clipGradNormOnDevice(params: readonly Tensor[], maxNorm: number): Tensor {
  if (!(maxNorm > 0)) throw new Error(`clipGradNormOnDevice: maxNorm must be > 0, got ${maxNorm}`);
  return noGrad(() => {
    let sq: Tensor | null = null;
    for (const p of params) {
      if (p.grad === null) continue;
      const s = F.sum(F.square(F.reshape(p.grad, [p.grad.size])));
      sq = sq === null ? s : F.add(sq, s);
    }
    if (sq === null) return Tensor.scalar(0);
    const norm = F.sqrt(sq);
    const limit = Tensor.scalar(maxNorm);
    // maxNorm / max(norm + 1e-6, maxNorm) = min(1, maxNorm / (norm + 1e-6)); maxNorm / maxNorm is exactly 1
    const coef = F.div(limit, F.maximum(F.addScalar(norm, 1e-6), limit));
    for (const p of params) if (p.grad !== null) p.grad = F.mul(p.grad, coef);
    return norm;
  });
}
