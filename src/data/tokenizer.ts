// Text → token ids with a model folder's tokenizer files: tokenizer.json (Hugging Face's
// `tokenizers` format: byte-level BPE, WordPiece, SentencePiece-style BPE, Unigram) loaded with
// @huggingface/tokenizers, the pure-JS port of the Rust library that transformers.js uses, plus
// tokenizer_config.json and special_tokens_map.json for the special tokens, model_max_length and
// padding side. The library does the tokenization and the special-token templates; this file adds
// what transformers' tokenizer __call__ adds on top: pairs with token type ids, truncation,
// padding and batching into flat typed arrays. Nothing is downloaded: the files must be in the folder.
import { fs, path } from '../io/node.js';
import { readJsonFile } from '../io/atomic.js';
import { isFileSource, readJson, siblingFile, sourcePath, type FileSource } from '../io/source.js';
import { fail } from '../io/errors.js';

export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';
export const SPECIAL_TOKENS_MAP_FILE = 'special_tokens_map.json';

/** transformers' truncation strategies for a pair (a single text is simply cut). */
export type TruncationStrategy = 'longest_first' | 'only_first' | 'only_second';
export const TRUNCATION_STRATEGIES: readonly TruncationStrategy[] = ['longest_first', 'only_first', 'only_second'];
export type Side = 'right' | 'left';

export interface SpecialToken {
  token: string;
  id: number;
}
/** The special tokens transformers names (null where the files name none or it is not in the vocabulary). */
export interface SpecialTokens {
  bos: SpecialToken | null;
  eos: SpecialToken | null;
  unk: SpecialToken | null;
  sep: SpecialToken | null;
  pad: SpecialToken | null;
  cls: SpecialToken | null;
  mask: SpecialToken | null;
}
const SPECIAL_KEYS = ['bos', 'eos', 'unk', 'sep', 'pad', 'cls', 'mask'] as const;

/** One text or pair, encoded. */
export interface Encoding {
  ids: number[];
  /** 0 on the first text (and its special tokens), 1 on the second (BERT's segment ids). */
  typeIds: number[];
}

export interface EncodeOptions {
  /** Add the template's special tokens (BERT's [CLS]/[SEP], Llama's <s>). Default true. */
  addSpecialTokens?: boolean;
  /** Cut to this many tokens, special tokens included. Default: no truncation. */
  maxLength?: number;
  /** How a pair is cut. Default longest_first. */
  truncation?: TruncationStrategy;
}

export interface BatchEncodeOptions {
  addSpecialTokens?: boolean;
  /**
   * 'longest': pad to the longest row; 'max_length': pad every row to maxLength. Default 'longest'
   * (a batch must be rectangular).
   */
  padding?: 'longest' | 'max_length';
  /** Truncate (and, with padding 'max_length', pad) to this; default the model_max_length. */
  maxLength?: number;
  /** Truncate rows longer than maxLength with this strategy; false: never truncate. Default longest_first. */
  truncation?: TruncationStrategy | false;
  /** Default: tokenizer_config.json's padding_side, else right. */
  paddingSide?: Side;
}

/** A padded batch, row-major (batch, seq), in the layout the models take. */
export interface BatchEncoding {
  inputIds: Int32Array;
  /** 1 on tokens, 0 on padding. */
  attentionMask: Float32Array;
  tokenTypeIds: Int32Array;
  shape: [number, number];
  /** Tokens per row before padding. */
  lengths: number[];
}

export type TextInput = string | readonly [string, string];

export interface Tokenizer {
  /** The tokenizer.json it was loaded from (for messages). */
  readonly file: string;
  readonly specialTokens: SpecialTokens;
  /** tokenizer_config.json's model_max_length, or null where it is absent or the "no limit" sentinel. */
  readonly modelMaxLength: number | null;
  readonly paddingSide: Side;
  readonly truncationSide: Side;
  /** Ids in the vocabulary, added tokens included (max id + 1). */
  readonly vocabSize: number;
  /** Token ids of `text`, with the special tokens the template adds (none for GPT-2), as `tokenizer(text)` in transformers. */
  encode(text: string, opts?: EncodeOptions): number[];
  /** One text or a pair, with token type ids; truncated when opts.maxLength is given. */
  encodeWithTypes(text: string, pair?: string | null, opts?: EncodeOptions): Encoding;
  /** Encodes, truncates and pads a batch of texts or pairs. */
  encodeBatch(inputs: readonly TextInput[], opts?: BatchEncodeOptions): BatchEncoding;
  /** Text of `ids`; special tokens are kept unless skipSpecialTokens. */
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
  /** Special tokens the template adds around one text (pair false) or a pair. */
  numSpecialTokensToAdd(pair: boolean): number;
  tokenToId(token: string): number | null;
  idToToken(id: number): string | null;
}

/** What we use of @huggingface/tokenizers (its bundled .d.ts does not resolve under NodeNext). */
interface HfPostProcessed {
  tokens: string[];
  tokens_pair?: string[] | null;
  token_type_ids?: number[];
}
interface HfPostProcessor {
  post_process(tokens: string[], pair: string[] | null, addSpecialTokens: boolean): HfPostProcessed;
}
interface HfTokenizer {
  encode(text: string, opts: { add_special_tokens: boolean }): { ids: ArrayLike<number | bigint>; tokens: string[] };
  decode(ids: number[], opts: { skip_special_tokens: boolean }): string;
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
  get_vocab(withAddedTokens: boolean): Map<string, number>;
  post_processor: HfPostProcessor | null;
}
interface HfModule {
  Tokenizer: new (tokenizerJson: object, tokenizerConfig: object) => HfTokenizer;
  TemplateProcessingPostProcessor: new (config: object) => HfPostProcessor;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** transformers writes "no limit" as int(1e30); anything this large is no limit. */
const NO_MAX_LENGTH = 1e12;
/** Tokenizer classes whose fast tokenizer rebuilds its template from add_bos_token / add_eos_token (transformers' update_post_processor). */
const BOS_EOS_TEMPLATE_CLASSES = /^(Llama|CodeLlama|Gemma|Cohere)Tokenizer(Fast)?$/;

/**
 * Loads `dir/tokenizer.json` with `dir/tokenizer_config.json` and `dir/special_tokens_map.json`
 * when present. Resolves to null when the folder has no tokenizer.json; a file that is there but
 * unusable is a one-line VeraError naming it. `AutoTokenizer.fromPretrained` rejects instead of
 * resolving to null, and attaches the folder's chat template.
 */
export async function loadTokenizer(dir: string | FileSource): Promise<Tokenizer | null> {
  if (isFileSource(dir)) {
    const json = await readJson(dir, TOKENIZER_FILE, 'tokenizer');
    return json === null ? null : createTokenizer(json, await readTokenizerConfigFrom(dir), sourcePath(dir, TOKENIZER_FILE));
  }
  const file = path.join(dir, TOKENIZER_FILE);
  if (!fs.existsSync(file)) return null;
  const json = readJsonFile(file, 'tokenizer');
  return createTokenizer(json, readTokenizerConfig(dir), file);
}

/** A folder's tokenizer_config.json merged over its special_tokens_map.json (either may be absent), as transformers reads them. */
export function readTokenizerConfig(dir: string): Record<string, unknown> {
  const config = readOptionalObject(path.join(dir, TOKENIZER_CONFIG_FILE), 'tokenizer config');
  const specialMap = readOptionalObject(path.join(dir, SPECIAL_TOKENS_MAP_FILE), 'special tokens map');
  return { ...specialMap, ...config };
}

/** readTokenizerConfig for a FileSource (a URL, a page's files). */
export async function readTokenizerConfigFrom(source: FileSource): Promise<Record<string, unknown>> {
  const read = async (name: string, what: string): Promise<Record<string, unknown>> => {
    const v = await readJson(source, name, what);
    if (v === null) return {};
    if (!isObject(v)) fail(`${sourcePath(source, name)}: ${what} must be a JSON object`);
    return v;
  };
  const config = await read(TOKENIZER_CONFIG_FILE, 'tokenizer config');
  const specialMap = await read(SPECIAL_TOKENS_MAP_FILE, 'special tokens map');
  return { ...specialMap, ...config };
}

function readOptionalObject(file: string, what: string): Record<string, unknown> {
  if (!fs.existsSync(file)) return {};
  const v = readJsonFile(file, what);
  if (!isObject(v)) fail(`${file}: ${what} must be a JSON object`);
  return v;
}

/** Content of a special-token entry: a string, or an AddedToken object `{"content": ...}`. */
function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v['content'] === 'string') return v['content'];
  return null;
}

/**
 * Builds a Tokenizer from a parsed tokenizer.json and tokenizer config (tokenizer_config.json
 * merged over special_tokens_map.json); `file` names them in messages.
 */
export async function createTokenizer(json: unknown, config: Record<string, unknown>, file: string): Promise<Tokenizer> {
  if (!isObject(json) || !isObject(json['model'])) fail(`${file}: not a tokenizer.json (expected a JSON object with a "model" field)`);
  // imported on demand: only text data needs it
  const hf = (await import('@huggingface/tokenizers')) as unknown as HfModule;
  const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));
  let tok: HfTokenizer;
  try {
    tok = new hf.Tokenizer({ added_tokens: [], ...json }, config);
  } catch (e) {
    fail(`${file}: cannot load tokenizer: ${errorText(e)}`);
  }
  const configFile = siblingFile(file, TOKENIZER_CONFIG_FILE);

  const special = {} as { -readonly [K in keyof SpecialTokens]: SpecialToken | null };
  for (const key of SPECIAL_KEYS) {
    const token = tokenContent(config[`${key}_token`]);
    const id = token === null ? undefined : tok.token_to_id(token);
    special[key] = token !== null && id !== undefined ? { token, id } : null;
  }

  // Llama-family configs say with add_bos_token / add_eos_token which template to use
  const addBos = config['add_bos_token'];
  const addEos = config['add_eos_token'];
  const tokenizerClass = typeof config['tokenizer_class'] === 'string' ? config['tokenizer_class'] : '';
  if (BOS_EOS_TEMPLATE_CLASSES.test(tokenizerClass) && (typeof addBos === 'boolean' || typeof addEos === 'boolean')) {
    const bos = addBos === true ? special.bos : null;
    const eos = addEos === true ? special.eos : null;
    if (addBos === true && bos === null) fail(`${configFile}: add_bos_token is true but bos_token is not set or not in the vocabulary`);
    if (addEos === true && eos === null) fail(`${configFile}: add_eos_token is true but eos_token is not set or not in the vocabulary`);
    const part = (seq: 'A' | 'B', typeId: number): object[] => [
      ...(bos ? [{ SpecialToken: { id: bos.token, type_id: typeId } }] : []),
      { Sequence: { id: seq, type_id: typeId } },
      ...(eos ? [{ SpecialToken: { id: eos.token, type_id: typeId } }] : []),
    ];
    tok.post_processor = new hf.TemplateProcessingPostProcessor({ type: 'TemplateProcessing', single: part('A', 0), pair: [...part('A', 0), ...part('B', 1)] });
  }

  const maxLen = config['model_max_length'];
  const modelMaxLength = typeof maxLen === 'number' && Number.isInteger(maxLen) && maxLen > 0 && maxLen < NO_MAX_LENGTH ? maxLen : null;
  const side = (key: string): Side => {
    const v = config[key];
    if (v === undefined || v === null) return 'right';
    if (v !== 'right' && v !== 'left') fail(`${configFile}: ${key} must be "right" or "left", got ${JSON.stringify(v)}`);
    return v;
  };
  const paddingSide = side('padding_side');
  const truncationSide = side('truncation_side');
  let vocabSize = 0;
  for (const id of tok.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);

  /** Ids of `text` alone, no special tokens. */
  const rawIds = (text: string): number[] => {
    try {
      return Array.from(tok.encode(text, { add_special_tokens: false }).ids, (id) => Number(id));
    } catch (e) {
      fail(`${file}: cannot tokenize text: ${errorText(e)}`);
    }
  };
  const idOf = (token: string): number => {
    const id = tok.token_to_id(token);
    if (id === undefined) fail(`${file}: the post-processor adds token ${JSON.stringify(token)}, which is not in the vocabulary`);
    return id;
  };
  const tokenOf = (id: number): string => {
    const t = tok.id_to_token(id);
    if (t === undefined) throw new Error(`tokenizer: id ${id} has no token`);
    return t;
  };

  /** The template (post-processor) around already tokenized parts. */
  const applyTemplate = (a: number[], b: number[] | null, addSpecial: boolean): Encoding => {
    if (tok.post_processor === null) {
      return { ids: [...a, ...(b ?? [])], typeIds: [...a.map(() => 0), ...(b ?? []).map(() => 1)] };
    }
    const out = tok.post_processor.post_process(a.map(tokenOf), b === null ? null : b.map(tokenOf), addSpecial);
    const ids = out.tokens.map(idOf);
    const typeIds = out.token_type_ids ? [...out.token_type_ids] : ids.map(() => 0);
    // the ByteLevel post-processor (GPT-2) hands the second text back instead of joining it
    if (out.tokens_pair) {
      for (const t of out.tokens_pair) {
        ids.push(idOf(t));
        typeIds.push(1);
      }
    }
    return { ids, typeIds: oneSegment ? typeIds.fill(0) : typeIds };
  };

  // RoBERTa has one segment: the Rust library's RobertaProcessing gives every token type 0 (the JS port gives the second text 1)
  const oneSegment = usesPostProcessor(json['post_processor'], 'RobertaProcessing');
  const numSpecial = (pair: boolean): number => applyTemplate([], pair ? [] : null, true).ids.length;

  const cut = (ids: number[], n: number): number[] => (truncationSide === 'right' ? ids.slice(0, n) : ids.slice(ids.length - n));

  const encodeWithTypes = (text: string, pair: string | null = null, opts: EncodeOptions = {}): Encoding => {
    const addSpecial = opts.addSpecialTokens ?? true;
    let a = rawIds(text);
    let b = pair === null ? null : rawIds(pair);
    if (opts.maxLength !== undefined) {
      const budget = opts.maxLength - (addSpecial ? numSpecial(b !== null) : 0);
      if (budget < 0) fail(`max length ${opts.maxLength} leaves no room for the ${numSpecial(b !== null)} special tokens of ${file}`);
      [a, b] = truncatePair(a, b, budget, opts.truncation ?? 'longest_first', cut);
    }
    return applyTemplate(a, b, addSpecial);
  };

  return {
    file,
    specialTokens: special,
    modelMaxLength,
    paddingSide,
    truncationSide,
    vocabSize,
    encode: (text, opts) => encodeWithTypes(text, null, opts).ids,
    encodeWithTypes,
    encodeBatch(inputs, opts = {}) {
      if (inputs.length === 0) throw new Error('encodeBatch: empty batch');
      const maxLength = opts.maxLength ?? modelMaxLength ?? undefined;
      const truncation = opts.truncation ?? 'longest_first';
      if (opts.padding === 'max_length' && maxLength === undefined) fail(`padding to max length needs a max length (${configFile} has no model_max_length)`);
      const rows = inputs.map((input) => {
        const [a, b] = typeof input === 'string' ? [input, null] : input;
        return encodeWithTypes(a, b, { addSpecialTokens: opts.addSpecialTokens, maxLength: truncation === false ? undefined : maxLength, truncation: truncation || undefined });
      });
      const lengths = rows.map((r) => r.ids.length);
      const seq = opts.padding === 'max_length' ? Math.max(maxLength!, ...lengths) : Math.max(1, ...lengths);
      const padSide = opts.paddingSide ?? paddingSide;
      const needsPad = lengths.some((n) => n < seq);
      if (needsPad && special.pad === null) fail(`${configFile}: padding needs a pad_token (this tokenizer has none; set one, e.g. the eos token)`);
      return packRows(rows, seq, padSide, special.pad?.id ?? 0, lengths);
    },
    decode(ids, opts = {}) {
      if (ids.length === 0) return '';
      return tok.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? false });
    },
    numSpecialTokensToAdd: numSpecial,
    tokenToId: (token) => tok.token_to_id(token) ?? null,
    idToToken: (id) => tok.id_to_token(id) ?? null,
  };
}

function usesPostProcessor(config: unknown, type: string): boolean {
  if (!isObject(config)) return false;
  if (config['type'] === type) return true;
  const inner = config['processors'];
  return Array.isArray(inner) && inner.some((p) => usesPostProcessor(p, type));
}

/**
 * Cuts a text (b null) or pair so that it has at most `budget` tokens, as the Rust tokenizers
 * library does: longest_first gives the shorter part all it needs up to half the budget and the
 * longer the rest (each half when both are long); only_first / only_second cut that part alone
 * and fail when it is too short to make room.
 */
export function truncatePair(
  a: number[],
  b: number[] | null,
  budget: number,
  strategy: TruncationStrategy,
  cut: (ids: number[], n: number) => number[] = (ids, n) => ids.slice(0, n),
): [number[], number[] | null] {
  const total = a.length + (b?.length ?? 0);
  if (total <= budget) return [a, b];
  if (b === null) {
    if (strategy === 'only_second') fail('truncation only_second needs a pair of texts');
    return [cut(a, budget), null];
  }
  if (strategy === 'longest_first') {
    const swap = a.length > b.length;
    let short = swap ? b.length : a.length;
    let long = short > budget ? short : Math.max(short, budget - short);
    if (short + long > budget) {
      short = Math.floor(budget / 2);
      long = short + (budget % 2);
    }
    const [na, nb] = swap ? [long, short] : [short, long];
    return [cut(a, Math.min(a.length, na)), cut(b, Math.min(b.length, nb))];
  }
  const excess = total - budget;
  const which = strategy === 'only_first' ? a : b;
  if (which.length <= excess) {
    fail(`truncation ${strategy}: the ${strategy === 'only_first' ? 'first' : 'second'} text (${which.length} tokens) is too short to cut ${excess} tokens; use longest_first or a larger max length`);
  }
  return strategy === 'only_first' ? [cut(a, a.length - excess), b] : [a, cut(b, b.length - excess)];
}

/** Pads encoded rows to `seq` on `side` into flat (batch, seq) arrays. */
function packRows(rows: readonly Encoding[], seq: number, side: Side, padId: number, lengths: number[]): BatchEncoding {
  const batch = rows.length;
  const inputIds = new Int32Array(batch * seq).fill(padId);
  const attentionMask = new Float32Array(batch * seq);
  const tokenTypeIds = new Int32Array(batch * seq);
  rows.forEach((r, i) => {
    const start = i * seq + (side === 'right' ? 0 : seq - r.ids.length);
    inputIds.set(r.ids, start);
    tokenTypeIds.set(r.typeIds, start);
    attentionMask.fill(1, start, start + r.ids.length);
  });
  return { inputIds, attentionMask, tokenTypeIds, shape: [batch, seq], lengths };
}
