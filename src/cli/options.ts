// Option parsers shared by the subcommands: each rejects bad values with a one-line error
// naming the flag.
import { InvalidArgumentError, Option } from 'commander';
import { fail } from '../io/errors.js';
import { WEIGHT_FORMATS, isWeightFormat, type WeightFormat } from '../tensor/quant.js';

/** `--weights`: the format of the base model's frozen linear weights. */
export function weightFormat(value: string): WeightFormat {
  if (!isWeightFormat(value)) throw new InvalidArgumentError(`must be one of ${WEIGHT_FORMATS.join(', ')}`);
  return value;
}

export const WEIGHTS_HELP = 'frozen linear weights of the base: f32, bf16, int8 (per-row absmax) or nf4 (QLoRA 4-bit, blocks of 64); embeddings, norms and lm_head stay f32. Default: f32, or the format a bitsandbytes nf4/int8 folder is stored in (f32 dequantizes it)';
export const DOUBLE_QUANT_HELP = 'with --weights nf4: double-quantize the block scales (QLoRA)';


export function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('must be a positive integer');
  return n;
}

export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isInteger(n)) throw new InvalidArgumentError('must be a non-negative integer');
  return n;
}

export function finiteNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError('must be a number');
  return n;
}

export function positiveNumber(value: string): number {
  const n = finiteNumber(value);
  if (n <= 0) throw new InvalidArgumentError('must be greater than 0');
  return n;
}

export function probability(value: string): number {
  const n = finiteNumber(value);
  if (n < 0 || n >= 1) throw new InvalidArgumentError('must be in [0, 1)');
  return n;
}

export function nameList(value: string): string[] {
  const list = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (list.length === 0) throw new InvalidArgumentError('must be a comma-separated list of names');
  return list;
}

export function intList(value: string): number[] {
  return nameList(value).map((s) => nonNegativeInt(s));
}

export function oneOf<T extends string>(options: readonly T[]): (value: string) => T {
  return (value) => {
    if (!options.includes(value as T)) throw new InvalidArgumentError(`must be one of ${options.join(', ')}`);
    return value as T;
  };
}

/**
 * --no-repeat-ngram-size <n> (transformers' no_repeat_ngram_size). Commander reads a long name
 * starting with --no- as the negation of a boolean; this one is a plain numeric flag.
 */
export function noRepeatNgramSizeOption(defaultValue = 0, description = 'never repeat an n-gram (prompt included); 0 = off'): Option {
  const option = new Option('--no-repeat-ngram-size <n>', description);
  option.negate = false;
  return option.argParser(nonNegativeInt).default(defaultValue);
}

export function nonNegativeNumber(value: string): number {
  const n = finiteNumber(value);
  if (n < 0) throw new InvalidArgumentError('must be a number ≥ 0');
  return n;
}

/** Characters that make --target-modules a regex (PEFT's string form) rather than a list of names. */
const REGEX_CHARS = /[*+?^$()[\]{}|\\]/;

/** --target-modules as PEFT takes it: a list of names, or one regex string. */
export function parseTargetModules(value: string): string[] | string {
  const v = value.trim();
  if (REGEX_CHARS.test(v)) {
    try {
      new RegExp(`^(?:${v})$`);
    } catch (e) {
      fail(`--target-modules: ${JSON.stringify(v)} is not a valid regular expression (${(e as Error).message})`);
    }
    return v;
  }
  const names = v.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (names.length === 0) fail('--target-modules: give a comma list of module names or a regex');
  return names;
}
