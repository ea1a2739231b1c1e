// LoraConfig: PEFT's fields and defaults (the paper's baseline).
import { VeraError } from '../../io/errors.js';
import { BASE_DEFAULTS, ConfigReader, readBaseFields, writeBaseFields, type BasePeftConfig } from '../config.js';

export interface LoraConfig extends BasePeftConfig {
  readonly peftType: 'LORA';
  r: number;
  loraAlpha: number;
  loraDropout: number;
  /** Scaling α/√r instead of α/r. */
  useRslora: boolean;
  initLoraWeights: boolean;
}

export type LoraConfigInit = Partial<Omit<LoraConfig, 'peftType'>> & Pick<LoraConfig, 'targetModules'>;

export function loraConfig(init: LoraConfigInit): LoraConfig {
  const c: LoraConfig = {
    peftType: 'LORA',
    r: 8,
    loraAlpha: 8,
    loraDropout: 0,
    useRslora: false,
    initLoraWeights: true,
    ...BASE_DEFAULTS,
    ...init,
  };
  validateLoraConfig(c, 'LoraConfig');
  return c;
}

export function validateLoraConfig(c: LoraConfig, where: string): void {
  if (!Number.isInteger(c.r) || c.r <= 0) throw new VeraError(`${where}: r must be a positive integer, got ${c.r}`);
  if (!Number.isFinite(c.loraAlpha)) throw new VeraError(`${where}: lora_alpha must be a finite number, got ${c.loraAlpha}`);
  if (!(c.loraDropout >= 0 && c.loraDropout < 1)) throw new VeraError(`${where}: lora_dropout must be in [0, 1), got ${c.loraDropout}`);
  if (c.bias === 'vera_only') throw new VeraError(`${where}: bias must be none, all or lora_only`);
}

export function parseLoraConfig(json: unknown, file: string): LoraConfig {
  const r = ConfigReader.from(json, file);
  const c: LoraConfig = {
    peftType: 'LORA',
    ...readBaseFields(r, ['none', 'all', 'lora_only']),
    r: r.int('r', 8),
    loraAlpha: r.num('lora_alpha', 8),
    loraDropout: r.num('lora_dropout', 0),
    useRslora: r.bool('use_rslora', false),
    initLoraWeights: r.has('init_lora_weights') ? r.bool('init_lora_weights', true) : true,
  };
  for (const unsupported of ['use_dora', 'rank_pattern', 'alpha_pattern']) {
    const v = (json as Record<string, unknown>)[unsupported];
    if (v !== undefined && v !== null && v !== false && !(typeof v === 'object' && Object.keys(v).length === 0)) {
      throw new VeraError(`${file}: field "${unsupported}" is not supported yet`);
    }
  }
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
    use_dora: false,
    use_rslora: c.useRslora,
  };
}
