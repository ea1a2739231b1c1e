// What every PEFT method's config shares, and how PEFT decides which modules a config targets.
import { ConfigReader } from '../io/config-reader.js';

export { ConfigReader };

export type BiasMode = 'none' | 'all' | 'vera_only' | 'lora_only';

export interface BasePeftConfig {
  readonly peftType: string;
  /** Name suffixes (["c_attn", "q_proj"]) or one regex matched against the full module path. */
  targetModules: string[] | string;
  /** Only these layer indices (or this one), as PEFT's layers_to_transform. */
  layersToTransform: number[] | number | null;
  /** Name of the layer list ("h", "layers") for layersToTransform; null guesses. */
  layersPattern: string[] | string | null;
  /** Modules trained fully and saved with the adapter (e.g. a classifier head). */
  modulesToSave: string[] | null;
  bias: BiasMode;
  /** The target weights are stored (in, out), as GPT-2's Conv1D. */
  fanInFanOut: boolean;
  baseModelNameOrPath: string | null;
  taskType: string | null;
  inferenceMode: boolean;
}

/** PEFT's defaults for the shared fields (targetModules has none). */
export const BASE_DEFAULTS: Omit<BasePeftConfig, 'peftType' | 'targetModules'> = {
  layersToTransform: null,
  layersPattern: null,
  modulesToSave: null,
  bias: 'none',
  fanInFanOut: false,
  baseModelNameOrPath: null,
  taskType: null,
  inferenceMode: false,
};

/**
 * PEFT's rule: a regex must match the whole path; a list entry matches the path exactly or as a
 * dotted suffix; layersToTransform then filters by the number after the layer-list name.
 */
export function isTargetModule(config: BasePeftConfig, path: string): boolean {
  const t = config.targetModules;
  if (typeof t === 'string') return new RegExp(`^(?:${t})$`).test(path);
  const found = t.some((name) => path === name || path.endsWith(`.${name}`));
  if (!found) return false;
  const layers = config.layersToTransform;
  if (layers === null || (Array.isArray(layers) && layers.length === 0)) return true;
  const index = layerIndex(path, config.layersPattern);
  if (index === null) return false;
  return typeof layers === 'number' ? index === layers : layers.includes(index);
}

function layerIndex(path: string, patterns: string[] | string | null): number | null {
  const list = patterns === null || patterns.length === 0 ? null : Array.isArray(patterns) ? patterns : [patterns];
  if (list === null) {
    // PEFT's pattern, also allowing the layer list at the root ("layers.3.q")
    const m = /^(?:.*\.)?[^.]*\.(\d+)\./.exec(path);
    return m ? Number(m[1]) : null;
  }
  for (const p of list) {
    const m = new RegExp(`^(?:.*\\.)?${p}\\.(\\d+)\\.`).exec(path);
    if (m) return Number(m[1]);
  }
  return null;
}

export function isModuleToSave(config: BasePeftConfig, path: string): boolean {
  return (config.modulesToSave ?? []).some((name) => path === name || path.endsWith(`.${name}`));
}

/** Shared fields, read from PEFT's JSON. */
export function readBaseFields(r: ConfigReader, biasModes: readonly BiasMode[]): Omit<BasePeftConfig, 'peftType'> {
  return {
    targetModules: r.targets('target_modules'),
    layersToTransform: r.intOrIntList('layers_to_transform'),
    layersPattern: r.strOrStrList('layers_pattern'),
    modulesToSave: r.strList('modules_to_save'),
    bias: r.oneOf('bias', biasModes, 'none'),
    fanInFanOut: r.bool('fan_in_fan_out', false),
    baseModelNameOrPath: r.str('base_model_name_or_path', null),
    taskType: r.str('task_type', null),
    inferenceMode: r.bool('inference_mode', false),
  };
}

/** Shared fields, in PEFT's JSON spelling. */
export function writeBaseFields(c: BasePeftConfig): Record<string, unknown> {
  return {
    auto_mapping: null,
    base_model_name_or_path: c.baseModelNameOrPath,
    bias: c.bias,
    fan_in_fan_out: c.fanInFanOut,
    inference_mode: c.inferenceMode,
    layers_pattern: c.layersPattern,
    layers_to_transform: c.layersToTransform,
    modules_to_save: c.modulesToSave,
    peft_type: c.peftType,
    revision: null,
    target_modules: c.targetModules,
    task_type: c.taskType,
  };
}

/** JSON with sorted keys and two-space indent, as PEFT writes adapter_config.json. */
export function sortedJson(obj: Record<string, unknown>): string {
  const sorted: Record<string, unknown> = {};
  for (const k of Object.keys(obj).sort()) sorted[k] = obj[k];
  return JSON.stringify(sorted, null, 2) + '\n';
}
