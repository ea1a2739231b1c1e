// Reading config.json / adapter_config.json fields with one-line errors that name the file and the field. Absent fields
// (and JSON null) take the default, as Hugging Face's config classes do; present ones must have the
// right type.
import { fail } from './errors.js';
import { stringifyJson } from './json.js';

export type JsonObject = Record<string, unknown>;

export function asJsonObject(json: unknown, file: string): JsonObject {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) fail(`${file}: expected a JSON object`);
  return json as JsonObject;
}

/** Reads config fields of `json`, failing with `<file>: field "<name>" must be …`. */
export class ConfigReader {
  constructor(readonly json: JsonObject, readonly file: string) {}

  static from(json: unknown, file: string): ConfigReader {
    return new ConfigReader(asJsonObject(json, file), file);
  }

  fail(field: string, problem: string): never {
    fail(`${this.file}: field "${field}" ${problem}`);
  }

  has(field: string): boolean {
    return this.json[field] !== undefined && this.json[field] !== null;
  }

  private get(field: string, fallback: unknown): unknown {
    if (this.has(field)) return this.json[field];
    if (fallback === undefined) this.fail(field, 'is required');
    return fallback;
  }

  /** Integer ≥ 1 (and ≤ max when given); required when no default is given. */
  positiveInt(field: string, fallback?: number, max?: number): number {
    const v = this.get(field, fallback);
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) this.fail(field, `must be a positive integer, got ${stringifyJson(v)}`);
    if (max !== undefined && v > max) this.fail(field, `is ${v}, more than ${max}`);
    return v;
  }

  /** A layer count: at most MAX_LAYERS, so a lying config cannot make a model build loop or its layer list overflow. */
  layerCount(field: string, fallback?: number): number {
    return this.positiveInt(field, fallback, MAX_LAYERS);
  }

  /** Integer ≥ 0 or null (token ids). */
  optionalIndex(field: string): number | null {
    if (!this.has(field)) return null;
    const v = this.json[field];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) this.fail(field, `must be a non-negative integer or null, got ${stringifyJson(v)}`);
    return v;
  }

  /** A finite number > 0. */
  positiveNumber(field: string, fallback?: number): number {
    const v = this.get(field, fallback);
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(field, `must be a positive number, got ${stringifyJson(v)}`);
    return v;
  }

  /** A dropout probability in [0, 1). */
  probability(field: string, fallback: number): number {
    const v = this.get(field, fallback);
    if (typeof v !== 'number' || !(v >= 0 && v < 1)) this.fail(field, `must be a number in [0, 1), got ${stringifyJson(v)}`);
    return v;
  }

  bool(field: string, fallback?: boolean): boolean {
    const v = this.get(field, fallback);
    if (typeof v !== 'boolean') this.fail(field, `must be true or false, got ${stringifyJson(v)}`);
    return v;
  }

  oneOf<T extends string>(field: string, allowed: readonly T[], fallback?: T): T {
    const v = this.get(field, fallback);
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      this.fail(field, `must be one of ${allowed.map((a) => `"${a}"`).join(', ')}, got ${stringifyJson(v)}`);
    }
    return v as T;
  }

  positiveIntArray(field: string, fallback?: number[]): number[] {
    const v = this.get(field, fallback);
    if (!Array.isArray(v) || !v.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 1)) {
      this.fail(field, `must be an array of positive integers, got ${stringifyJson(v)}`);
    }
    return [...(v as number[])];
  }

  /** Fails unless `model_type` is absent or equals `expected`. */
  modelType(expected: string): void {
    if (this.has('model_type') && this.json['model_type'] !== expected) {
      this.fail('model_type', `must be "${expected}" here, got ${stringifyJson(this.json['model_type'])}`);
    }
  }

  // ---- PEFT adapter_config.json fields

  int(field: string, def: number, min = -Infinity): number {
    const v = this.json[field];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail(field, `must be an integer, got ${stringifyJson(v)}`);
    if (v < min) this.fail(field, `must be ≥ ${min}, got ${v}`);
    return v;
  }

  /** An integer of any size: a bigint where it is beyond 2⁵³ (see parseJsonExact). */
  bigInt(field: string, def: number): number | bigint {
    const v = this.json[field];
    if (v === undefined || v === null) return def;
    if (typeof v === 'bigint') return v;
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail(field, `must be an integer, got ${stringifyJson(v)}`);
    return v;
  }

  num(field: string, def: number): number {
    const v = this.json[field];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(field, `must be a finite number, got ${stringifyJson(v)}`);
    return v;
  }


  str(field: string, def: string | null): string | null {
    const v = this.json[field];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'string') this.fail(field, `must be a string, got ${stringifyJson(v)}`);
    return v;
  }


  strList(field: string): string[] | null {
    const v = this.json[field];
    if (v === undefined || v === null) return null;
    if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) this.fail(field, 'must be a list of strings');
    return v as string[];
  }

  /** target_modules: list of names or one regex string. */
  targets(field: string): string[] | string {
    const v = this.json[field];
    if (typeof v === 'string') {
      try {
        new RegExp(v);
      } catch (e) {
        this.fail(field, `is not a valid regex: ${(e as Error).message}`);
      }
      return v;
    }
    const list = this.strList(field);
    if (list === null) this.fail(field, 'is required: a list of module names or a regex');
    return list; // an empty list is a valid config that matches nothing, as PEFT's
  }

  intOrIntList(field: string): number[] | number | null {
    const v = this.json[field];
    if (v === undefined || v === null) return null;
    if (typeof v === 'number' && Number.isInteger(v)) return v;
    if (Array.isArray(v) && v.every((x) => typeof x === 'number' && Number.isInteger(x))) return v as number[];
    this.fail(field, 'must be an integer or a list of integers');
  }

  strOrStrList(field: string): string[] | string | null {
    const v = this.json[field];
    if (v === undefined || v === null) return null;
    if (typeof v === 'string') return v;
    return this.strList(field);
  }
}

/** More layers than any published model has by two orders of magnitude. */
export const MAX_LAYERS = 10_000;
