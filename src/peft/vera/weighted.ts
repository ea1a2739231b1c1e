// A weighted combination of VeRA adapters that share one projection pair (addWeightedAdapter on a
// VeRA model; PEFT has none). Σ wᵢ·Λbᵢ·B·Λdᵢ·A is itself one VeRA adapter exactly when, layer by
// layer, every λb is the same (then it is Λb·B·(Σ wᵢ·Λdᵢ)·A) or every λd is (then (Σ wᵢ·Λbᵢ)·B·Λd·A);
// otherwise its rank can reach Σ rᵢ, which no vector pair on the shared rank-r pair can hold, and the
// combination is refused (LoRA can hold it: convert the adapters with `vera convert-adapter --to lora`).
import { VeraError } from '../../io/errors.js';
import { F, noGrad, type Tensor } from '../../tensor/index.js';
import type { WeightedAdapterOptions } from '../lora/weighted.js';
import type { VeraConfig } from './config.js';
import type { VeraLinear } from './layer.js';

/** The checks made before the new adapter is added: linear only, one pair (key, r, targets), no DVoRA. */
export function checkVeraWeighted(configs: readonly VeraConfig[], names: readonly string[], opts: WeightedAdapterOptions): void {
  const type = names.length === 1 ? 'linear' : opts.combinationType ?? 'linear';
  if (type !== 'linear') throw new VeraError(`addWeightedAdapter: VeRA adapters combine linearly only (combinationType 'linear'); '${type}' would need projections of another rank than the shared pair's`);
  const dora = names.filter((_, i) => configs[i].useDora);
  if (dora.length > 0) throw new VeraError(`addWeightedAdapter: adapter(s) ${dora.join(', ')} are DVoRA (use_dora); a weighted sum of magnitude-normalised updates is not one DVoRA adapter, so vera refuses`);
  const first = configs[0];
  for (let i = 1; i < configs.length; i++) {
    const c = configs[i];
    const differs =
      String(c.projectionPrngKey) !== String(first.projectionPrngKey) ? `projection_prng_key (${String(c.projectionPrngKey)} against ${String(first.projectionPrngKey)})`
      : c.r !== first.r ? `r (${c.r} against ${first.r})`
      : JSON.stringify(c.targetModules) !== JSON.stringify(first.targetModules) ? 'target_modules'
      : null;
    if (differs) throw new VeraError(`addWeightedAdapter: VeRA adapters ${names[0]} and ${names[i]} differ in ${differs}; only adapters on one shared projection pair combine`);
  }
}

function sameValues(a: Tensor, b: Tensor): boolean {
  const x = a.data();
  const y = b.data();
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** Sets adapter `newName` on `layer` (at `path`) to Σ wᵢ·(adapter i), or throws where that is not one VeRA adapter. */
export function combineVeraLayer(layer: VeraLinear, path: string, names: readonly string[], weights: readonly number[], newName: string): void {
  const parts = names.map((n) => layer.adapter(n));
  if (parts.some((p) => p.projections !== parts[0].projections)) throw new VeraError(`addWeightedAdapter: on ${path} the adapters use different projection pairs (unique projections); only adapters on one shared pair combine`);
  const sum = (pick: (i: number) => Tensor): Tensor => names.reduce<Tensor | null>((acc, _, i) => {
    const term = F.scale(pick(i), weights[i]);
    return acc === null ? term : F.add(acc, term);
  }, null)!;
  const target = layer.adapter(newName);
  noGrad(() => {
    if (parts.every((p) => sameValues(p.lambdaB, parts[0].lambdaB))) {
      target.lambdaB.copyFrom(parts[0].lambdaB);
      target.lambdaD.copyFrom(sum((i) => parts[i].lambdaD));
    } else if (parts.every((p) => sameValues(p.lambdaD, parts[0].lambdaD))) {
      target.lambdaD.copyFrom(parts[0].lambdaD);
      target.lambdaB.copyFrom(sum((i) => parts[i].lambdaB));
    } else {
      throw new VeraError(`addWeightedAdapter: on ${path}, VeRA adapters ${names.join(', ')} differ in both vera_lambda_d and vera_lambda_b, so their weighted sum is not one VeRA adapter (its rank can reach the sum of theirs); convert them to LoRA (vera convert-adapter --to lora) and combine those`);
    }
  });
}
