// What every PEFT method's config shares, and how PEFT decides which modules a config targets.
import { VeraError } from '../io/errors.js';

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

// ---------------------------------------------------------------- JSON field readers

/** Reads PEFT's snake_case JSON fields with one-line errors naming the file and field. */
export class ConfigReader {
  constructor(private readonly json: Record<string, unknown>, private readonly file: string) {}

  static from(json: unknown, file: string): ConfigReader {
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new VeraError(`${file}: expected a JSON object`);
    return new ConfigReader(json as Record<string, unknown>, file);
  }

  private bad(field: string, what: string): never {
    throw new VeraError(`${this.file}: field "${field}" ${what}`);
  }

  has(field: string): boolean {
    return this.json[field] !== undefined && this.json[field] !== null;
  }

  int(field: string, def: number, min = -Infinity): number {
    const v = this.json[field];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'number' || !Number.isInteger(v)) this.bad(field, `must be an integer, got ${JSON.stringify(v)}`);
    if (v < min) this.bad(field, `must be ≥ ${min}, got ${v}`);
    return v;
  }

  num(field: string, def: number): number {
    const v = this.json[field];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.bad(field, `must be a finite number, got ${JSON.stringify(v)}`);
    return v;
  }

  bool(field: string, def: boolean): boolean {
    const v = this.json[field];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'boolean') this.bad(field, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  str(field: string, def: string | null): string | null {
    const v = this.json[field];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'string') this.bad(field, `must be a string, got ${JSON.stringify(v)}`);
    return v;
  }

  oneOf<T extends string>(field: string, options: readonly T[], def: T): T {
    const v = this.str(field, def);
    if (!options.includes(v as T)) this.bad(field, `must be one of ${options.join(', ')}, got ${JSON.stringify(v)}`);
    return v as T;
  }

  strList(field: string): string[] | null {
    const v = this.json[field];
    if (v === undefined || v === null) return null;
    if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) this.bad(field, 'must be a list of strings');
    return v as string[];
  }

  /** target_modules: list of names or one regex string. */
  targets(field: string): string[] | string {
    const v = this.json[field];
    if (typeof v === 'string') {
      try {
        new RegExp(v);
      } catch (e) {
        this.bad(field, `is not a valid regex: ${(e as Error).message}`);
      }
      return v;
    }
    const list = this.strList(field);
    if (list === null || list.length === 0) this.bad(field, 'is required: a list of module names or a regex');
    return list;
  }

  intOrIntList(field: string): number[] | number | null {
    const v = this.json[field];
    if (v === undefined || v === null) return null;
    if (typeof v === 'number' && Number.isInteger(v)) return v;
    if (Array.isArray(v) && v.every((x) => typeof x === 'number' && Number.isInteger(x))) return v as number[];
    this.bad(field, 'must be an integer or a list of integers');
  }

  strOrStrList(field: string): string[] | string | null {
    const v = this.json[field];
    if (v === undefined || v === null) return null;
    if (typeof v === 'string') return v;
    return this.strList(field);
  }
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
