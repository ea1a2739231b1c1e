// `vera generate --prompts FILE.jsonl`: one request per line, {"prompt": "..."} or {"prompt_ids":
// [...]}, with the adapter it runs with ("adapter": a registered name; missing or null = the base
// model) and, optionally, its own sampling fields in the flags' spelling (max_new_tokens,
// temperature, top_k, top_p, seed, stop). Errors read `<file>:<line>: field "<name>" …`.
import { fail } from '../io/errors.js';

export interface PromptLine {
  line: number;
  text?: string;
  ids?: number[];
  adapter: string | null;
  maxNewTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  stop?: string[];
}

const FIELDS = new Set(['prompt', 'prompt_ids', 'adapter', 'max_new_tokens', 'temperature', 'top_k', 'top_p', 'seed', 'stop']);

export function parsePromptsJsonl(content: string, file: string, vocabSize: number): PromptLine[] {
  const out: PromptLine[] = [];
  content.split('\n').forEach((raw, i) => {
    if (raw.trim() === '') return;
    const where = `${file}:${i + 1}`;
    let obj: unknown;
    try {
      obj = JSON.parse(raw);
    } catch {
      fail(`${where}: invalid JSON`);
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) fail(`${where}: expected a JSON object with "prompt" or "prompt_ids"`);
    const o = obj as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!FIELDS.has(k)) fail(`${where}: unknown field "${k}" (known: ${[...FIELDS].join(', ')})`);
    const bad = (field: string, what: string): never => fail(`${where}: field "${field}" must be ${what}, got ${JSON.stringify(o[field])}`);
    const has = (k: string): boolean => o[k] !== undefined && o[k] !== null;
    const entry: PromptLine = { line: i + 1, adapter: null };
    if (has('prompt_ids')) {
      const ids = o['prompt_ids'];
      if (!Array.isArray(ids) || ids.length === 0 || !ids.every((x) => Number.isInteger(x) && x >= 0 && x < vocabSize)) bad('prompt_ids', `a non-empty array of token ids in [0, ${vocabSize})`);
      entry.ids = ids as number[];
    } else if (has('prompt')) {
      if (typeof o['prompt'] !== 'string' || o['prompt'] === '') bad('prompt', 'a non-empty string');
      entry.text = o['prompt'] as string;
    } else fail(`${where}: needs "prompt" or "prompt_ids"`);
    if (has('adapter')) {
      if (typeof o['adapter'] !== 'string' || o['adapter'] === '') bad('adapter', 'an adapter name given with --adapter NAME=DIR, or null');
      entry.adapter = o['adapter'] as string;
    }
    const int = (field: string, min: number): number | undefined => {
      if (!has(field)) return undefined;
      const v = o[field];
      if (!Number.isSafeInteger(v) || (v as number) < min) bad(field, `an integer ≥ ${min}`);
      return v as number;
    };
    entry.maxNewTokens = int('max_new_tokens', 1);
    entry.topK = int('top_k', 0);
    entry.seed = int('seed', 0);
    if (has('temperature')) {
      const t = o['temperature'];
      if (typeof t !== 'number' || !(t >= 0) || !Number.isFinite(t)) bad('temperature', 'a number ≥ 0');
      entry.temperature = t as number;
    }
    if (has('top_p')) {
      const p = o['top_p'];
      if (typeof p !== 'number' || !(p > 0 && p <= 1)) bad('top_p', 'a number in (0, 1]');
      entry.topP = p as number;
    }
    if (has('stop')) {
      const s = o['stop'];
      const list = typeof s === 'string' ? [s] : s;
      if (!Array.isArray(list) || !list.every((x) => typeof x === 'string' && x !== '')) bad('stop', 'a non-empty string or a list of them');
      entry.stop = list as string[];
    }
    out.push(entry);
  });
  if (out.length === 0) fail(`${file}: no prompts (one JSON object per line)`);
  return out;
}
