// Causal-LM training data in JSONL: one JSON object per line with "input_ids" (token ids) or
// "text" (tokenized with the model's tokenizer.json). Each line is one sequence, truncated to the
// sequence length; batches are right-padded to their longest sequence with attention mask 0 and
// label -100 on the padding, so padding is never attended to and never enters the loss. Or, packed
// (`packSequences`), the lines each followed by eos are concatenated and cut into equal blocks.
import { fs } from '../io/node.js';
import { fail } from '../io/errors.js';
import type { Rng } from '../tensor/index.js';
import type { Tokenizer } from './tokenizer.js';

/** Label of positions that do not enter the loss (PyTorch's and transformers' ignore_index). */
export const IGNORE_INDEX = -100;

/** One non-empty line of a JSONL file: token ids, or text still to tokenize. */
export type JsonlRecord = { line: number; ids: Int32Array; text?: undefined } | { line: number; text: string; ids?: undefined };

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Parses JSONL text. Empty (whitespace-only) lines are skipped; every other line must be a JSON
 * object with "input_ids" (integers in [0, vocabSize)) or "text" (a string); "input_ids" wins
 * when both are given. Errors read `<file>:<line>: <problem>`.
 */
export function parseJsonlRecords(content: string, file: string, vocabSize: number): JsonlRecord[] {
  const out: JsonlRecord[] = [];
  const lines = content.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i];
    if (raw.trim() === '') continue;
    const line = i + 1;
    const where = `${file}:${line}`;
    let obj: unknown;
    try {
      obj = JSON.parse(raw);
    } catch {
      fail(`${where}: invalid JSON`);
    }
    if (!isObject(obj)) fail(`${where}: expected a JSON object with "text" or "input_ids"`);
    const ids = obj['input_ids'];
    if (ids !== undefined && ids !== null) {
      if (!Array.isArray(ids) || !ids.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0 && x < vocabSize)) {
        fail(`${where}: "input_ids" must be an array of integers in [0, ${vocabSize})`);
      }
      out.push({ line, ids: Int32Array.from(ids as number[]) });
      continue;
    }
    const text = obj['text'];
    if (text !== undefined && text !== null) {
      if (typeof text !== 'string') fail(`${where}: "text" must be a string`);
      out.push({ line, text });
      continue;
    }
    fail(`${where}: needs "text" or "input_ids"`);
  }
  return out;
}

/**
 * Characters per token assumed when cutting a long text before it is encoded. Generous on purpose:
 * BPE tokenizers average about 4 characters of English per token, and a text whose tokens are
 * longer only costs a retry with a larger cut (encodeCut), never a different result.
 */
export const MAX_CHARS_PER_TOKEN = 32;
/** Tokens beyond the kept ones that the cut text must still give, so the cut (which can change how the last word splits) is well past them. */
const CUT_MARGIN = 64;

/**
 * `encode(text)` of which only the first `maxTokens` ids will be used: a long text is cut to
 * maxTokens × MAX_CHARS_PER_TOKEN characters (plus slack) before encoding, so a 200 MB line costs
 * what a short one does. The cut is grown until it yields maxTokens + a margin of tokens, so the
 * first maxTokens ids are those of the whole text (the cut only affects the word it falls in);
 * texts under the bound are encoded whole, exactly as before.
 */
export function encodeCut(encode: (text: string) => number[], text: string, maxTokens: number): number[] {
  let bound = maxTokens * MAX_CHARS_PER_TOKEN + 1024;
  for (;;) {
    if (text.length <= bound) return encode(text);
    let end = bound;
    const c = text.charCodeAt(end - 1);
    if (c >= 0xd800 && c <= 0xdbff) end--; // never split a surrogate pair
    const ids = encode(text.slice(0, end));
    if (ids.length >= maxTokens + CUT_MARGIN) return ids;
    bound *= 4;
  }
}

export interface ReadJsonlOptions {
  /** Token ids must lie in [0, vocabSize). */
  vocabSize: number;
  /** Sequences are truncated to this many tokens. */
  seqLen: number;
  /**
   * Encodes "text" lines: a tokenizer, or a function called once, only if some line has "text"
   * (so a file of "input_ids" never loads one); null means there is no tokenizer.
   */
  tokenizer?: Pick<Tokenizer, 'file' | 'encode'> | (() => Promise<Pick<Tokenizer, 'file' | 'encode'> | null>) | null;
  /** Where the tokenizer.json was looked for (the model folder), for the error when it is missing. */
  tokenizerDir?: string;
  /** Sequences shorter than this (after truncation) are skipped. Default 2: one prediction. */
  minLength?: number;
  /** Appended after each line's tokens (before truncation: a cut sequence does not end there, so it gets none). */
  appendEos?: number | null;
  /** Which rows get `appendEos`: every row (default), or only "text" rows ("input_ids" rows are taken as given). */
  appendEosTo?: 'all' | 'text';
  /** false: lines are kept whole (to be packed into blocks); default true: cut to seqLen. */
  truncate?: boolean;
}

export interface CausalLmData {
  file: string;
  /** Usable sequences, in file order. */
  sequences: Int32Array[];
  /** Non-empty lines read. */
  records: number;
  /** Of those, rows given as "text" (tokenized here). */
  textRows: number;
  /** Lines skipped for having fewer than minLength tokens. */
  skipped: number;
  /** Sequences cut to seqLen. */
  truncated: number;
  /** Tokens in `sequences`. */
  tokens: number;
}

/** Reads a causal-LM JSONL file (see the file comment); `<file>: not found` when it is missing. */
export async function readCausalLmJsonl(file: string, opts: ReadJsonlOptions): Promise<CausalLmData> {
  if (!Number.isInteger(opts.seqLen) || opts.seqLen < 1) throw new Error(`readCausalLmJsonl: seqLen must be a positive integer, got ${opts.seqLen}`);
  let content: string;
  try {
    content = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') fail(`${file}: not found`);
    fail(`${file}: cannot read data (${code ?? (e as Error).message})`);
  }
  if (content.charCodeAt(0) === 0xfeff) content = content.slice(1);
  const records = parseJsonlRecords(content, file, opts.vocabSize);

  let tokenizer: Pick<Tokenizer, 'file' | 'encode'> | null = null;
  const firstText = records.find((r) => r.text !== undefined);
  if (firstText) {
    tokenizer = typeof opts.tokenizer === 'function' ? await opts.tokenizer() : opts.tokenizer ?? null;
    if (tokenizer === null) {
      fail(`${file}:${firstText.line}: "text" needs a tokenizer.json in ${opts.tokenizerDir ?? 'the model folder'} (or give "input_ids")`);
    }
  }

  const minLength = opts.minLength ?? 2;
  const truncate = opts.truncate ?? true;
  const eos = opts.appendEos ?? null;
  const eosToAll = (opts.appendEosTo ?? 'all') === 'all';
  const data: CausalLmData = { file, sequences: [], records: records.length, textRows: records.filter((r) => r.text !== undefined).length, skipped: 0, truncated: 0, tokens: 0 };
  for (const r of records) {
    let ids: Int32Array;
    if (r.ids !== undefined) ids = r.ids;
    else {
      const encoded = truncate ? encodeCut((t) => tokenizer!.encode(t), r.text, opts.seqLen) : tokenizer!.encode(r.text);
      const bad = encoded.find((id) => !(Number.isInteger(id) && id >= 0 && id < opts.vocabSize));
      if (bad !== undefined) fail(`${file}:${r.line}: ${tokenizer!.file} gave token id ${bad}, outside the model's vocabulary [0, ${opts.vocabSize})`);
      ids = Int32Array.from(encoded);
    }
    if (eos !== null && (eosToAll || r.text !== undefined)) {
      const withEos = new Int32Array(ids.length + 1);
      withEos.set(ids);
      withEos[ids.length] = eos;
      ids = withEos;
    }
    if (truncate && ids.length > opts.seqLen) {
      ids = ids.slice(0, opts.seqLen);
      data.truncated++;
    }
    if (ids.length < minLength) {
      data.skipped++;
      continue;
    }
    data.sequences.push(ids);
    data.tokens += ids.length;
  }
  return data;
}

/** Sequences concatenated and cut into blocks of one length (`packSequences`). */
export interface PackedBlocks {
  /** Each exactly blockSize tokens (views into one buffer). */
  blocks: Int32Array[];
  /** Tokens concatenated. */
  tokens: number;
  /** Tokens of the last partial block, dropped. */
  dropped: number;
}

/**
 * Packing as transformers' run_clm `group_texts`: the sequences (each already ending in eos) are
 * concatenated and cut into consecutive blocks of exactly `blockSize` tokens; the remainder that
 * does not fill a block is dropped. No padding, so every position of every block is a target.
 */
export function packSequences(sequences: readonly Int32Array[], blockSize: number): PackedBlocks {
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new Error(`packSequences: blockSize must be a positive integer, got ${blockSize}`);
  let tokens = 0;
  for (const s of sequences) tokens += s.length;
  const count = Math.floor(tokens / blockSize);
  const all = new Int32Array(count * blockSize);
  let at = 0;
  for (const s of sequences) {
    if (at >= all.length) break;
    const take = Math.min(s.length, all.length - at);
    all.set(take === s.length ? s : s.subarray(0, take), at);
    at += take;
  }
  const blocks = Array.from({ length: count }, (_, i) => all.subarray(i * blockSize, (i + 1) * blockSize));
  return { blocks, tokens, dropped: tokens - count * blockSize };
}

// ---------------------------------------------------------------- batching

export interface CausalLmBatch {
  /** (batch, seq) row-major, right-padded with padId. */
  inputIds: Int32Array;
  /** 1 on tokens, 0 on padding. */
  attentionMask: Float32Array;
  /** The input ids, IGNORE_INDEX on padding. */
  labels: Int32Array;
  shape: [number, number];
  /** Real (non-padding) tokens. */
  tokens: number;
  /** Positions that predict a next token (Σ length − 1): the terms of the loss. */
  targets: number;
}

/** Pads `sequences` (each ≥ 1 token) to the longest one. */
export function collateCausalLm(sequences: readonly Int32Array[], padId = 0): CausalLmBatch {
  if (sequences.length === 0) throw new Error('collateCausalLm: empty batch');
  const seq = Math.max(...sequences.map((s) => s.length));
  if (seq < 1) throw new Error('collateCausalLm: every sequence needs at least one token');
  const batch = sequences.length;
  const inputIds = new Int32Array(batch * seq).fill(padId);
  const attentionMask = new Float32Array(batch * seq);
  const labels = new Int32Array(batch * seq).fill(IGNORE_INDEX);
  let tokens = 0;
  let targets = 0;
  sequences.forEach((s, b) => {
    inputIds.set(s, b * seq);
    labels.set(s, b * seq);
    attentionMask.fill(1, b * seq, b * seq + s.length);
    tokens += s.length;
    targets += Math.max(0, s.length - 1);
  });
  return { inputIds, attentionMask, labels, shape: [batch, seq], tokens, targets };
}

/**
 * Draws batches of `batchSize` indices from `size` items, epoch by epoch: at the start of each
 * epoch the order is a fresh permutation shuffled with the rng passed in, and batches take the
 * next indices in that order. Batches always have `batchSize` indices, so one may span two
 * epochs; `steps = ceil(epochs · size / batchSize)` batches cover `epochs` passes.
 *
 * The state (permutation, position) follows from the rng draws and the number of batches taken,
 * so a fresh sampler fast-forwarded with `skip` on a generator seeded like the original one is
 * in the same state and has made the same draws.
 */
export class EpochSampler {
  private readonly perm: Int32Array;
  private pos: number;
  /** Epochs started (1 after the first batch). */
  epoch = 0;
  /** Batches drawn. */
  batches = 0;

  constructor(readonly size: number, readonly batchSize: number) {
    if (!Number.isInteger(size) || size < 1) throw new Error(`EpochSampler: size must be a positive integer, got ${size}`);
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`EpochSampler: batchSize must be a positive integer, got ${batchSize}`);
    this.perm = new Int32Array(size);
    this.pos = size; // the first draw starts an epoch
  }

  next(rng: Rng): number[] {
    const out: number[] = [];
    while (out.length < this.batchSize) {
      if (this.pos === this.size) {
        for (let i = 0; i < this.size; i++) this.perm[i] = i;
        rng.shuffle(this.perm);
        this.pos = 0;
        this.epoch++;
      }
      out.push(this.perm[this.pos++]);
    }
    this.batches++;
    return out;
  }

  /** Draws `batches` batches and discards them (resuming). */
  skip(batches: number, rng: Rng): void {
    for (let i = 0; i < batches; i++) this.next(rng);
  }
}

/** Consecutive slices of at most `batchSize` items, in order (evaluation). */
export function* sequentialBatches<T>(items: readonly T[], batchSize: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += batchSize) yield items.slice(i, i + batchSize);
}
