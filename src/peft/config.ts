// What every PEFT method's config shares, and how PEFT decides which modules a config targets.
import { ConfigReader } from '../io/config-reader.js';

export { ConfigReader };

export type BiasMode = 'none' | 'all' | 'vera_only' | 'lora_only';

export interface BasePeftConfig {
  readonly peftType: string;
  /**
   * Name suffixes (["c_attn", "q_proj"]), one regex matched against the full module path, 'all-linear',
   * or null for PEFT's default for the model's model_type (resolved when the adapter is added).
   */
  targetModules: string[] | string | null;
  /** Modules never adapted, even when targetModules matches them (list of suffixes or one regex), as PEFT's exclude_modules. */
  excludeModules?: string[] | string | null;
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
  /** Revision (branch, tag or commit) of the base model on the Hub. */
  revision?: string | null;
  /** PEFT's task_type: CAUSAL_LM, SEQ_CLS (adds classifier/score to modules_to_save), … */
  taskType: string | null;
  inferenceMode: boolean;
  /** Fields of adapter_config.json this version does not know and ignored (from a newer PEFT); empty when built in code. */
  ignoredFields?: readonly string[];
}

/** PEFT's defaults for the shared fields. */
export const BASE_DEFAULTS: Omit<BasePeftConfig, 'peftType'> = {
  targetModules: null,
  excludeModules: null,
  layersToTransform: null,
  layersPattern: null,
  modulesToSave: null,
  bias: 'none',
  fanInFanOut: false,
  baseModelNameOrPath: null,
  revision: null,
  taskType: null,
  inferenceMode: false,
};

/** A list entry matches the path exactly or as a dotted suffix; a string is a regex for the whole path. */
function matchesNames(names: string[] | string, path: string): boolean {
  if (typeof names === 'string') return new RegExp(`^(?:${names})$`).test(path);
  return names.some((name) => path === name || path.endsWith(`.${name}`));
}

/**
 * PEFT's rule (check_target_module_exists): excluded modules and modules_to_save (and what they
 * hold) never match; a regex must match the whole path; a list entry matches the path exactly or as
 * a dotted suffix; layersToTransform then filters by the number after the layer-list name.
 * targetModules must be resolved (not null, not 'all-linear': see PeftModel.addAdapter).
 */
export function isTargetModule(config: BasePeftConfig, path: string): boolean {
  const t = config.targetModules;
  if (t === null) return false;
  if (config.excludeModules != null && matchesNames(config.excludeModules, path)) return false;
  if ((config.modulesToSave ?? []).some((m) => path === m || path.endsWith(`.${m}`) || path.startsWith(`${m}.`) || path.includes(`.${m}.`))) return false;
  if (typeof t === 'string') return matchesNames(t, path);
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
    targetModules: r.has('target_modules') ? r.targets('target_modules') : null,
    excludeModules: r.has('exclude_modules') ? r.targets('exclude_modules') : null,
    layersToTransform: r.intOrIntList('layers_to_transform'),
    layersPattern: r.strOrStrList('layers_pattern'),
    modulesToSave: r.strList('modules_to_save'),
    bias: r.oneOf('bias', biasModes, 'none'),
    fanInFanOut: r.bool('fan_in_fan_out', false),
    baseModelNameOrPath: r.str('base_model_name_or_path', null),
    revision: r.str('revision', null),
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
    revision: c.revision ?? null,
    target_modules: c.targetModules,
    task_type: c.taskType,
    // only when set: PEFT before 0.14 refuses unknown fields
    ...(c.excludeModules != null ? { exclude_modules: c.excludeModules } : {}),
  };
}

/**
 * Fields of an adapter_config.json that `known` does not list. PEFT itself drops unknown fields
 * with a warning (newer PEFT versions add fields); `unsupported` names fields that change the
 * adapter's meaning when not at their default, which are refused instead of silently ignored.
 */
export function unknownFields(r: ConfigReader, known: ReadonlySet<string>, unsupported: Readonly<Record<string, (v: unknown) => boolean>> = {}): string[] {
  const ignored: string[] = [];
  for (const [k, v] of Object.entries(r.json)) {
    if (known.has(k)) continue;
    const isDefault = unsupported[k];
    if (isDefault !== undefined) {
      if (!isDefault(v)) r.fail(k, `is set (${JSON.stringify(v)}), which this version does not support`);
      continue;
    }
    ignored.push(k);
  }
  return ignored;
}

/** Shared field names as PEFT writes them (PeftConfigMixin + the tuner fields every method here has). */
export const BASE_FIELD_NAMES: readonly string[] = [
  'auto_mapping', 'base_model_name_or_path', 'bias', 'exclude_modules', 'fan_in_fan_out', 'inference_mode', 'layers_pattern',
  'layers_to_transform', 'modules_to_save', 'peft_type', 'peft_version', 'revision', 'target_modules', 'task_type',
];

/** "is at its default" tests for unsupported fields. */
export const isUnset = (v: unknown): boolean =>
  v === undefined || v === null || v === false || (typeof v === 'object' && Object.keys(v as object).length === 0) || (Array.isArray(v) && v.length === 0);

/** JSON with sorted keys and two-space indent, as PEFT writes adapter_config.json. */
export function sortedJson(obj: Record<string, unknown>): string {
  const sorted: Record<string, unknown> = {};
  for (const k of Object.keys(obj).sort()) sorted[k] = obj[k];
  return JSON.stringify(sorted, null, 2) + '\n';
}
