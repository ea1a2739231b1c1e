// PEFT's LoraModel.add_weighted_adapter for the "linear", "cat" and "svd" combinations: a new
// LoRA adapter whose A and B combine existing adapters' (read from lora/model.py; the other
// combinations — ties, dare_*, magnitude_prune — are not implemented).
import { VeraError } from '../../io/errors.js';
import type { LoraConfig } from './config.js';
import type { LoraLinear } from './layer.js';
import { lowRankSvd, quantile } from './svd.js';

export type CombinationType = 'linear' | 'cat' | 'svd';

export interface WeightedAdapterOptions {
  /** Default 'svd', as PEFT. One adapter always combines linearly. */
  combinationType?: CombinationType;
  /** svd: rank of the new adapter (default the largest rank of those combined). */
  svdRank?: number;
  /** svd: clamp U·Σ and Vᵀ to ± this quantile of their entries (PEFT's svd_clamp). */
  svdClamp?: number;
}

/**
 * PEFT's _check_add_weighted_adapter: the combination actually used, the new rank and target
 * modules; throws PEFT's errors (and refuses DoRA adapters, whose magnitudes PEFT's combination drops).
 */
export function checkWeightedAdapter(configs: readonly LoraConfig[], names: readonly string[], opts: WeightedAdapterOptions): { type: CombinationType; rank: number; targets: string[] | string } {
  const type = names.length === 1 ? 'linear' : opts.combinationType ?? 'svd';
  if (!['linear', 'cat', 'svd'].includes(type)) throw new VeraError(`Invalid combination_type: ${String(type)} (vera implements linear, cat and svd)`);
  const dora = names.filter((_, i) => configs[i].useDora);
  if (dora.length > 0) throw new VeraError(`addWeightedAdapter: adapter(s) ${dora.join(', ')} use DoRA (use_dora); combining them would drop their trained magnitudes (PEFT gives the new adapter m = ‖W0‖), so vera refuses`);
  const ranks = configs.map((c) => c.r);
  let rank: number;
  if (type === 'linear') {
    if (new Set(ranks).size !== 1) throw new VeraError('All adapters must have the same r value when using combination_type linear, ties, dare_ties or dare_linear.');
    rank = ranks[0];
  } else if (type === 'cat') rank = ranks.reduce((a, b) => a + b, 0);
  else rank = opts.svdRank ?? Math.max(...ranks);
  if (!Number.isInteger(rank) || rank <= 0) throw new VeraError(`addWeightedAdapter: svdRank must be a positive integer, got ${rank}`);
  const kinds = new Set(configs.map((c) => (typeof c.targetModules === 'string' ? 'str' : 'list')));
  if (kinds.size > 1) throw new VeraError('all adapter configs should follow the same target modules type. Combining adapters with `target_modules` type being a mix of list/set and string is not supported.');
  const targets = kinds.has('str')
    ? configs.map((c) => `(${c.targetModules as string})`).join('|')
    : [...new Set(configs.flatMap((c) => (c.targetModules as string[] | null) ?? []))];
  return { type, rank, targets };
}

/**
 * The adapters' factors side by side, as cat and svd both need them: their A stacked by rows into
 * `A` (k × in) and their B side by side into `B` (out × `width`, width ≥ k), wᵢ·sᵢ applied to the
 * `scaled` factor.
 */
function stackFactors(layer: LoraLinear, present: readonly { n: string; w: number }[], scaled: 'A' | 'B', A: Float64Array, B: Float64Array, width: number): void {
  const inF = layer.inFeatures;
  let at = 0;
  for (const { n, w } of present) {
    const a = layer.adapter(n);
    const r = a.A.shape[0];
    const ad = a.A.data();
    const bd = a.B.data();
    // (x·w)·s, in that order, on the scaled side
    const scaleA = scaled === 'A', scaleB = scaled === 'B';
    for (let i = 0; i < r * inF; i++) A[at * inF + i] = scaleA ? ad[i] * w * a.scaling : ad[i];
    for (let o = 0; o < layer.outFeatures; o++) for (let j = 0; j < r; j++) B[o * width + at + j] = scaleB ? bd[o * r + j] * w * a.scaling : bd[o * r + j];
    at += r;
  }
}

/** Fill adapter `target` of `layer` (rank `rank`, just added, scaling from its own config) from `names` with `weights`. */
export function combineIntoLayer(layer: LoraLinear, names: readonly string[], weights: readonly number[], target: string, type: CombinationType, rank: number, clamp: number | undefined): void {
  const present = names.map((n, i) => ({ n, w: weights[i] })).filter(({ n }) => layer.adapterNames().includes(n));
  if (present.length === 0) throw new VeraError('No matching LoRAs found.');
  const inF = layer.inFeatures;
  const out = layer.outFeatures;
  const A = new Float64Array(rank * inF);
  const B = new Float64Array(out * rank);
  if (type === 'cat') {
    // A = [wᵢ·sᵢ·Aᵢ] stacked by rows, B = [Bᵢ] side by side (zeros after them when a layer lacks some)
    stackFactors(layer, present, 'A', A, B, rank);
  } else if (type === 'linear') {
    // √|wᵢ·sᵢ| on each side, the sign on A only
    for (const { n, w } of present) {
      const a = layer.adapter(n);
      const ws = w * a.scaling;
      const fa = Math.sqrt(Math.abs(ws)) * (ws >= 0 ? 1 : -1);
      const fb = Math.sqrt(Math.abs(ws));
      const ad = a.A.data();
      const bd = a.B.data();
      for (let i = 0; i < A.length; i++) A[i] += fa * ad[i];
      for (let i = 0; i < B.length; i++) B[i] += fb * bd[i];
    }
  } else {
    // ΔW = Σ wᵢ·sᵢ·Bᵢ·Aᵢ = L·R with L = [wᵢ·sᵢ·Bᵢ], R = [Aᵢ]; its SVD truncated to `rank`
    const k = present.reduce((s, { n }) => s + layer.adapter(n).A.shape[0], 0);
    if (rank > Math.min(out, inF)) throw new VeraError(`addWeightedAdapter: svd rank ${rank} is larger than min(out, in) = ${Math.min(out, inF)} of a targeted layer`);
    const L = new Float64Array(out * k);
    const R = new Float64Array(k * inF);
    stackFactors(layer, present, 'B', R, L, k);
    const svd = lowRankSvd(L, R, out, inF, k);
    const kk = Math.min(rank, k); // beyond ΔW's factor rank the singular values are 0: those rows/columns stay 0
    for (let o = 0; o < out; o++) for (let j = 0; j < kk; j++) B[o * rank + j] = svd.U[o * k + j] * svd.S[j];
    for (let j = 0; j < kk; j++) for (let i = 0; i < inF; i++) A[j * inF + i] = svd.V[i * k + j];
    if (clamp !== undefined) {
      const hi = quantile(Float64Array.from([...B, ...A]), clamp);
      for (const M of [A, B]) for (let i = 0; i < M.length; i++) M[i] = Math.min(Math.max(M[i], -hi), hi);
    }
  }
  const t = layer.adapter(target);
  t.A.copyFrom(Float32Array.from(A));
  t.B.copyFrom(Float32Array.from(B));
}
