// What every PEFT method's config shares, and how PEFT decides which modules a config targets.
import { ConfigReader } from '../io/config-reader.js';
import { VeraError } from '../io/errors.js';
import { stringifyJson } from '../io/json.js';

export { ConfigReader };

export type BiasMode = 'none' | 'all' | 'vera_only' | 'lora_only';

export interface BasePeftConfig {
  readonly peftType: string;
  /**
   * Name suffixes (["c_attn", "q_proj"]), one regex matched against the full module path, 'all-linear',
   * or null for PEFT's default for the model's model_type (resolved when the adapter is added).
   */
  targetModules: string[] | string | null;
  /** Modules never adapted, even when targetModules matches them (list of suffixes or one regex), as PEFT's exclude_modules (LoRA; PEFT's VeraConfig has no such field). */
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
  /** PEFT's task_type: CAUSAL_LM, SEQ_CLS (adds classifier/score to modules_to_save), … (one of TASK_TYPES). */
  taskType: string | null;
  /** The PEFT version that wrote the adapter (kept and written back; vera leaves it unset). */
  peftVersion?: string | null;
  inferenceMode: boolean;
  /** Fields of adapter_config.json this version does not know and ignored (from a newer PEFT); empty when built in code. */
  ignoredFields?: readonly string[];
}

/** PEFT's TaskType values. */
export const TASK_TYPES = ['SEQ_CLS', 'SEQ_2_SEQ_LM', 'CAUSAL_LM', 'TOKEN_CLS', 'QUESTION_ANS', 'FEATURE_EXTRACTION'] as const;

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
 * hold) never match; a regex must match the whole path (and ignores the layer filter); a list entry
 * naming the whole path matches as it is; otherwise a list entry matches as a dotted suffix and
 * layersToTransform then keeps only the layers whose index (the first number after a layer-list
 * name, PEFT #3318) is listed. targetModules must be resolved (not null, not 'all-linear': see
 * PeftModel.addAdapter); paths inside adapter layers are the caller's to skip.
 */
export function isTargetModule(config: BasePeftConfig, path: string): boolean {
  const t = config.targetModules;
  if (t === null) return false;
  if (config.excludeModules != null && matchesNames(config.excludeModules, path)) return false;
  if ((config.modulesToSave ?? []).some((m) => new RegExp(`^(?:|.*\\.)${m}(?:$|\\.)`).test(path))) return false;
  if (typeof t === 'string') return matchesNames(t, path);
  if (t.includes(path)) return true;
  if (!t.some((name) => path.endsWith(`.${name}`))) return false;
  const layers = config.layersToTransform;
  if (layers === null || (Array.isArray(layers) && layers.length === 0)) return true;
  const index = layerIndex(path, config.layersPattern);
  if (index === null) return false;
  return typeof layers === 'number' ? index === layers : layers.includes(index);
}

/** The layer index in `path` as PEFT reads it: lazily, so a nested index (an MoE expert's) is not taken for the layer's. */
function layerIndex(path: string, patterns: string[] | string | null): number | null {
  const list = patterns === null || patterns.length === 0 ? ['[^.]*'] : Array.isArray(patterns) ? patterns : [patterns];
  for (const p of list) {
    const m = new RegExp(`^.*?\\.${p}\\.(\\d+)\\.`).exec(path);
    if (m) return Number(m[1]);
  }
  return null;
}

/** PEFT's __post_init__ checks on the shared fields; `regexLayerChecks`: LoraConfig's two extra ones. */
export function validateBaseConfig(c: BasePeftConfig, where: string, regexLayerChecks = false): void {
  const pattern = c.layersPattern;
  const hasPattern = pattern !== null && pattern !== undefined && pattern.length > 0;
  if (c.taskType !== null && !(TASK_TYPES as readonly string[]).includes(c.taskType)) {
    throw new VeraError(`${where}: Invalid task type: '${c.taskType}'. Must be one of the following task types: ${TASK_TYPES.join(', ')}.`);
  }
  if (regexLayerChecks && typeof c.targetModules === 'string') {
    if (c.layersToTransform !== null) throw new VeraError(`${where}: layers_to_transform cannot be used when target_modules is a string (a regex or all-linear)`);
    if (pattern !== null) throw new VeraError(`${where}: layers_pattern cannot be used when target_modules is a string (a regex or all-linear)`);
  }
  if (hasPattern && c.layersToTransform === null) throw new VeraError(`${where}: layers_pattern is set but layers_to_transform is not; when layers_pattern is specified, layers_to_transform must also be specified`);
}

export function isModuleToSave(config: BasePeftConfig, path: string): boolean {
  return (config.modulesToSave ?? []).some((name) => path === name || path.endsWith(`.${name}`));
}

/** Shared fields, read from PEFT's JSON (exclude_modules only where the method has it: LoRA). */
export function readBaseFields(r: ConfigReader, biasModes: readonly BiasMode[], opts: { excludeModules?: boolean } = {}): Omit<BasePeftConfig, 'peftType'> {
  return {
    targetModules: r.has('target_modules') ? r.targets('target_modules') : null,
    excludeModules: opts.excludeModules && r.has('exclude_modules') ? r.targets('exclude_modules') : null,
    peftVersion: r.str('peft_version', null),
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
    ...(c.peftVersion != null ? { peft_version: c.peftVersion } : {}),
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
      if (!isDefault(v)) r.fail(k, `is set (${stringifyJson(v)}), which this version does not support`); // a huge integer parses to a bigint
      continue;
    }
    ignored.push(k);
  }
  return ignored;
}

/** Shared field names as PEFT writes them (PeftConfigMixin + the tuner fields every method here has). */
export const BASE_FIELD_NAMES: readonly string[] = [
  'auto_mapping', 'base_model_name_or_path', 'bias', 'fan_in_fan_out', 'inference_mode', 'layers_pattern',
  'layers_to_transform', 'modules_to_save', 'peft_type', 'peft_version', 'revision', 'target_modules', 'task_type',
];

/** "is at its default" tests for unsupported fields. */
export const isUnset = (v: unknown): boolean =>
  v === undefined || v === null || v === false || (typeof v === 'object' && Object.keys(v as object).length === 0) || (Array.isArray(v) && v.length === 0);

/** JSON with sorted keys and two-space indent, as PEFT writes adapter_config.json. */
export function sortedJson(obj: Record<string, unknown>): string {
  const sorted: Record<string, unknown> = {};
  for (const k of Object.keys(obj).sort()) sorted[k] = obj[k];
  return stringifyJson(sorted, 2) + '\n';
}
