// LoraConfig: PEFT's fields and defaults (the paper's baseline).
import { VeraError } from '../../io/errors.js';
import { stringifyJson } from '../../io/json.js';
import { BASE_DEFAULTS, BASE_FIELD_NAMES, ConfigReader, isUnset, readBaseFields, unknownFields, validateBaseConfig, writeBaseFields, type BasePeftConfig } from '../config.js';

export interface LoraConfig extends BasePeftConfig {
  readonly peftType: 'LORA';
  r: number;
  loraAlpha: number;
  loraDropout: number;
  /** Scaling α/√r instead of α/r. */
  useRslora: boolean;
  /** true/false, or PEFT's named inits ("gaussian", "pissa", …): kept for the file; a fresh adapter starts as true (B = 0) unless false. */
  initLoraWeights: boolean | string;
  /** DoRA: a trained magnitude per output row (PEFT's use_dora, lora_magnitude_vector). */
  useDora: boolean;
}

/** targetModules may be left out: PEFT's default for the model's model_type applies. */
export type LoraConfigInit = Partial<Omit<LoraConfig, 'peftType'>>;

export function loraConfig(init: LoraConfigInit = {}): LoraConfig {
  const c: LoraConfig = {
    peftType: 'LORA',
    r: 8,
    loraAlpha: 8,
    loraDropout: 0,
    useRslora: false,
    initLoraWeights: true,
    useDora: false,
    ...BASE_DEFAULTS,
    ...init,
  };
  validateLoraConfig(c, 'LoraConfig');
  return c;
}

export function validateLoraConfig(c: LoraConfig, where: string): void {
  validateBaseConfig(c, where, true);
  if (!Number.isInteger(c.r) || c.r <= 0) throw new VeraError(`${where}: r must be a positive integer, got ${c.r}`);
  if (!Number.isFinite(c.loraAlpha)) throw new VeraError(`${where}: lora_alpha must be a finite number, got ${c.loraAlpha}`);
  if (!(c.loraDropout >= 0 && c.loraDropout < 1)) throw new VeraError(`${where}: lora_dropout must be in [0, 1), got ${c.loraDropout}`);
  if (c.bias === 'vera_only') throw new VeraError(`${where}: bias must be none, all or lora_only`);
}

const LORA_FIELDS = new Set([
  ...BASE_FIELD_NAMES, 'exclude_modules', 'r', 'lora_alpha', 'lora_dropout', 'use_rslora', 'init_lora_weights', 'use_dora',
  // used only by Megatron, or only to initialize (EVA, CorDA) an adapter that is then saved: safe to ignore
  'megatron_config', 'megatron_core', 'eva_config', 'corda_config', 'qalora_group_size', 'ensure_weight_tying',
]);

/** LoRA fields that change what the saved weights mean; refused unless at their default. */
const LORA_UNSUPPORTED: Record<string, (v: unknown) => boolean> = {
  rank_pattern: isUnset, alpha_pattern: isUnset, layer_replication: isUnset, loftq_config: isUnset,
  target_parameters: isUnset, trainable_token_indices: isUnset, lora_bias: isUnset, use_qalora: isUnset,
  alora_invocation_tokens: isUnset, arrow_config: isUnset,
};

export function parseLoraConfig(json: unknown, file: string): LoraConfig {
  const r = ConfigReader.from(json, file);
  const ignoredFields = unknownFields(r, LORA_FIELDS, LORA_UNSUPPORTED);
  const init = r.json['init_lora_weights'];
  if (init !== undefined && init !== null && typeof init !== 'boolean' && typeof init !== 'string') r.fail('init_lora_weights', `must be true, false or a name, got ${stringifyJson(init)}`);
  const c: LoraConfig = {
    peftType: 'LORA',
    ...readBaseFields(r, ['none', 'all', 'lora_only'], { excludeModules: true }),
    r: r.int('r', 8),
    loraAlpha: r.num('lora_alpha', 8),
    loraDropout: r.num('lora_dropout', 0),
    useRslora: r.bool('use_rslora', false),
    initLoraWeights: typeof init === 'boolean' || typeof init === 'string' ? init : true,
    useDora: r.bool('use_dora', false),
    ignoredFields,
  };
  validateLoraConfig(c, file);
  return c;
}

export function loraConfigToJson(c: LoraConfig): Record<string, unknown> {
  return {
    ...writeBaseFields(c),
    alpha_pattern: {},
    init_lora_weights: c.initLoraWeights,
    lora_alpha: c.loraAlpha,
    lora_dropout: c.loraDropout,
    megatron_config: null,
    megatron_core: 'megatron.core',
    r: c.r,
    rank_pattern: {},
    use_dora: c.useDora,
    use_rslora: c.useRslora,
  };
}
