// VeraConfig: PEFT's fields and defaults, plus the paper's ablation switches.
import { VeraError } from '../../io/errors.js';
import { isTorchSeed } from '../../tensor/index.js';
import { BASE_DEFAULTS, BASE_FIELD_NAMES, ConfigReader, isUnset, readBaseFields, unknownFields, validateBaseConfig, writeBaseFields, type BasePeftConfig } from '../config.js';

export type ProjectionInit = 'kaiming_uniform' | 'kaiming_normal' | 'uniform';
/** Paper §4.6: "only d" freezes λb at 1 (d starts at dInitial, 0 in the paper); "only b" freezes λd at 1. */
export type VeraAblation = 'only_d' | 'only_b' | null;

export interface VeraConfig extends BasePeftConfig {
  readonly peftType: 'VERA';
  /** Rank of the shared projections. */
  r: number;
  /**
   * Seed of the PRNG that generates A and B: any integer torch.Generator.manual_seed takes,
   * [-2⁶³, 2⁶⁴) (a bigint where it is beyond 2⁵³); its low 32 bits seed MT19937, as in PyTorch.
   */
  projectionPrngKey: number | bigint;
  /** Store A and B in the adapter file (otherwise regenerated from the seed on load). */
  saveProjection: boolean;
  veraDropout: number;
  /** Initial value of every λd entry. */
  dInitial: number;
  /** false: λd ~ N(0,1), λb = 1 (non-identity start, as PEFT's init_weights=False). */
  initWeights: boolean;
  // Ablations from the paper. Not PEFT fields: written to JSON only when not at their defaults.
  ablation: VeraAblation;
  /** One random pair per layer instead of one shared pair. */
  uniqueProjections: boolean;
  projectionInit: ProjectionInit;
  /**
   * DVoRA: DoRA's trained magnitude per output row on top of VeRA's ΔW (`vera_magnitude_vector`).
   * Not a PEFT field: written as use_dora only when true, and PEFT cannot load such an adapter.
   */
  useDora: boolean;
}

/** targetModules may be left out: PEFT's default for the model's model_type applies. */
export type VeraConfigInit = Partial<Omit<VeraConfig, 'peftType'>>;

export function veraConfig(init: VeraConfigInit = {}): VeraConfig {
  const c: VeraConfig = {
    peftType: 'VERA',
    r: 256,
    projectionPrngKey: 0,
    saveProjection: true,
    veraDropout: 0,
    dInitial: 0.1,
    initWeights: true,
    ablation: null,
    uniqueProjections: false,
    projectionInit: 'kaiming_uniform',
    useDora: false,
    ...BASE_DEFAULTS,
    ...init,
  };
  validateVeraConfig(c, 'VeraConfig');
  return c;
}

export function validateVeraConfig(c: VeraConfig, where: string): void {
  validateBaseConfig(c, where);
  if (c.excludeModules != null) throw new VeraError(`${where}: exclude_modules is not a VeraConfig field in PEFT (an adapter using it would adapt other layers there); use target_modules`);
  if (!Number.isInteger(c.r) || c.r <= 0) throw new VeraError(`${where}: r must be a positive integer, got ${c.r}`);
  if (!isTorchSeed(c.projectionPrngKey)) throw new VeraError(`${where}: projection_prng_key must be an integer in [-2^63, 2^64) (what torch.Generator.manual_seed takes), got ${String(c.projectionPrngKey)}`);
  if (!(c.veraDropout >= 0 && c.veraDropout < 1)) throw new VeraError(`${where}: vera_dropout must be in [0, 1), got ${c.veraDropout}`);
  if (!Number.isFinite(c.dInitial)) throw new VeraError(`${where}: d_initial must be finite, got ${c.dInitial}`);
  if (c.bias === 'lora_only') throw new VeraError(`${where}: bias must be none, all or vera_only`);
}

const VERA_FIELDS = new Set([
  ...BASE_FIELD_NAMES, 'r', 'projection_prng_key', 'save_projection', 'vera_dropout', 'd_initial', 'init_weights',
  'ablation', 'unique_projections', 'projection_init', 'use_dora',
]);

/**
 * Fields that are not VeRA's but would change what the adapter means if honoured (per-layer
 * ranks, extra trained tensors): refused when set rather than silently dropped, as for LoRA.
 * exclude_modules stays a listed unknown field: PEFT's VeraConfig drops it too.
 */
const VERA_UNSUPPORTED: Record<string, (v: unknown) => boolean> = {
  rank_pattern: isUnset, layer_replication: isUnset, target_parameters: isUnset,
  trainable_token_indices: isUnset, lora_bias: isUnset,
};

export function parseVeraConfig(json: unknown, file: string): VeraConfig {
  const r = ConfigReader.from(json, file);
  const ignoredFields = unknownFields(r, VERA_FIELDS, VERA_UNSUPPORTED);
  const c: VeraConfig = {
    peftType: 'VERA',
    ...readBaseFields(r, ['none', 'all', 'vera_only']),
    r: r.int('r', 256),
    projectionPrngKey: r.bigInt('projection_prng_key', 0),
    saveProjection: r.bool('save_projection', true),
    veraDropout: r.num('vera_dropout', 0),
    dInitial: r.num('d_initial', 0.1),
    initWeights: r.bool('init_weights', true),
    ablation: r.has('ablation') ? r.oneOf('ablation', ['only_d', 'only_b'] as const, 'only_d') : null,
    uniqueProjections: r.bool('unique_projections', false),
    projectionInit: r.oneOf('projection_init', ['kaiming_uniform', 'kaiming_normal', 'uniform'] as const, 'kaiming_uniform'),
    useDora: r.bool('use_dora', false),
    ignoredFields,
  };
  validateVeraConfig(c, file);
  return c;
}

export function veraConfigToJson(c: VeraConfig): Record<string, unknown> {
  const json: Record<string, unknown> = {
    ...writeBaseFields(c),
    d_initial: c.dInitial,
    init_weights: c.initWeights,
    // exactly as Python writes the int (a double beyond 2⁵³ would print rounded)
    projection_prng_key: Number.isSafeInteger(c.projectionPrngKey) ? c.projectionPrngKey : BigInt(c.projectionPrngKey),
    r: c.r,
    save_projection: c.saveProjection,
    vera_dropout: c.veraDropout,
  };
  // keep default adapters byte-compatible with PEFT's VeraConfig
  if (c.ablation !== null) json.ablation = c.ablation;
  if (c.uniqueProjections) json.unique_projections = true;
  if (c.projectionInit !== 'kaiming_uniform') json.projection_init = c.projectionInit;
  if (c.useDora) json.use_dora = true; // DVoRA: PEFT's VeraConfig has no such field and cannot load it
  return json;
}
