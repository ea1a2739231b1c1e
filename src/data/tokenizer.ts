// Text → token ids for `"text"` training data: a model folder's tokenizer.json (Hugging Face's
// `tokenizers` format, e.g. GPT-2's byte-level BPE) loaded with @huggingface/tokenizers, the
// pure-JS port of the Rust library that transformers.js uses. Nothing is downloaded: the files
// must be in the folder.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readJsonFile } from '../io/atomic.js';
import { fail } from '../io/errors.js';

export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';

export interface Tokenizer {
  /** The tokenizer.json it was loaded from (for messages). */
  readonly file: string;
  /** Token ids of `text`, with the special tokens the tokenizer's post-processor adds (none for GPT-2), as `tokenizer(text)` in transformers. */
  encode(text: string): number[];
  /** Text of `ids`; special tokens are kept. */
  decode(ids: readonly number[]): string;
}

/** What we use of @huggingface/tokenizers' Tokenizer (its bundled .d.ts does not resolve under NodeNext). */
interface HfTokenizer {
  encode(text: string): { ids: ArrayLike<number | bigint> };
  decode(ids: number[]): string;
}
type HfTokenizerClass = new (tokenizerJson: object, tokenizerConfig: object) => HfTokenizer;

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Loads `dir/tokenizer.json` (plus `dir/tokenizer_config.json` when present). Resolves to null when
 * the folder has no tokenizer.json; a file that is there but unusable is a one-line VeraError
 * naming it.
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer | null> {
  const file = path.join(dir, TOKENIZER_FILE);
  if (!fs.existsSync(file)) return null;
  const json = readJsonFile(file, 'tokenizer');
  if (!isObject(json) || !isObject(json['model'])) fail(`${file}: not a tokenizer.json (expected a JSON object with a "model" field)`);
  const configFile = path.join(dir, TOKENIZER_CONFIG_FILE);
  let config: unknown = {};
  if (fs.existsSync(configFile)) {
    config = readJsonFile(configFile, 'tokenizer config');
    if (!isObject(config)) fail(`${configFile}: tokenizer config must be a JSON object`);
  }
  // imported on demand: only "text" data needs it
  const { Tokenizer: TokenizerClass } = (await import('@huggingface/tokenizers')) as unknown as { Tokenizer: HfTokenizerClass };
  let tok: HfTokenizer;
  try {
    tok = new TokenizerClass(json, config as object);
  } catch (e) {
    fail(`${file}: cannot load tokenizer: ${(e as Error)?.message ?? String(e)}`);
  }
  return {
    file,
    encode(text: string): number[] {
      try {
        return Array.from(tok.encode(text).ids, (id) => Number(id));
      } catch (e) {
        fail(`${file}: cannot tokenize text: ${(e as Error)?.message ?? String(e)}`);
      }
    },
    decode(ids: readonly number[]): string {
      return tok.decode([...ids]);
    },
  };
}
