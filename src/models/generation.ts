// Autoregressive generation for the decoders (GPT-2, the Llama family), as transformers'
// `generate` with greedy search or multinomial sampling: the prompt runs once into a KV cache, then
// each step feeds only the newest token. Sampling applies transformers' logits warpers in their
// order (temperature, top-k, top-p) and draws with our seeded Rng, so a seed reproduces a run.
import { Rng, noGrad, type Tensor } from '../tensor/index.js';
import { fail } from '../io/errors.js';
import { KVCache, type CausalLMForwardOptions } from './kv-cache.js';

/** What generation needs of a model: GPT2LMHeadModel and LlamaForCausalLM provide it. */
export interface CausalLM {
  training: boolean;
  train(mode?: boolean): unknown;
  /** Logits (batch, seq, vocab). */
  forward(inputIds: Int32Array, shape: readonly [number, number], opts?: CausalLMForwardOptions): Tensor;
  /** Longest sequence (prompt + new tokens) the model takes, or null for no limit. */
  readonly contextLength: number | null;
  /** config.json's eos_token_id(s). */
  readonly eosTokenIds: readonly number[];
  readonly config: { readonly vocabSize: number };
}

/** Whether `model` (a loaded model of any family) is a decoder that can generate. */
export function isCausalLM<M extends object>(model: M): model is M & CausalLM {
  return 'eosTokenIds' in model && 'contextLength' in model;
}

export interface GenerationOptions {
  /** Tokens to generate at most (default 20, transformers' max_length default). */
  maxNewTokens?: number;
  /** false (default): greedy; true: sample from the warped distribution. */
  doSample?: boolean;
  /** Divides the logits before sampling (default 1). */
  temperature?: number;
  /** Keep the k most likely tokens (ties with the k-th kept); 0 turns it off. Default 50, as transformers. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches topP; 1 (default) turns it off. */
  topP?: number;
  /** Tokens that end generation (kept in `tokens`, not in `text`); default the model's eos_token_id. */
  eosTokenIds?: readonly number[];
  /** Generation ends once the generated text contains one of these (it stays in the text, as transformers' stop_strings). Needs `decode`. */
  stopStrings?: readonly string[];
  /** Token ids → text; gives each step a text delta and the result a text. */
  decode?: (ids: readonly number[]) => string;
  /** Generator for sampling (default: a new one seeded with `seed`). */
  rng?: Rng;
  /** Seed of the sampling generator when no `rng` is given (default 0). */
  seed?: number;
  /** Called with every step, as the stream yields it. */
  onToken?: (step: GenerationStep) => void;
}

export interface GenerationStep {
  token: number;
  /** Text this token added (empty while a multi-byte character is incomplete, and for eos). */
  text: string;
}

export type FinishReason = 'eos' | 'stop_string' | 'length';

export interface GenerationResult {
  /** Generated token ids (the prompt excluded; a final eos included). */
  tokens: number[];
  /** Decoded generated text without the eos token; null without `decode`. */
  text: string | null;
  finishReason: FinishReason;
}

// ---------------------------------------------------------------- logits warpers

/** Scores below the k-th largest become -Infinity (transformers' TopKLogitsWarper). */
export function topKFilter(scores: Float32Array, k: number): Float32Array {
  if (k <= 0 || k >= scores.length) return scores;
  const kth = Float32Array.from(scores).sort((a, b) => b - a)[k - 1];
  return scores.map((s) => (s < kth ? -Infinity : s));
}

/**
 * Nucleus filtering as transformers' TopPLogitsWarper: sort ascending, drop the tokens whose
 * cumulative probability stays ≤ 1 − topP, always keep the most likely one.
 */
export function topPFilter(scores: Float32Array, topP: number): Float32Array {
  if (topP >= 1) return scores;
  const order = Array.from(scores.keys()).sort((a, b) => scores[a] - scores[b]);
  const probs = softmax(scores);
  const out = Float32Array.from(scores);
  let cumulative = 0;
  for (let i = 0; i < order.length - 1; i++) {
    cumulative += probs[order[i]];
    if (cumulative > 1 - topP) break;
    out[order[i]] = -Infinity;
  }
  return out;
}

/** Softmax in double (entries at -Infinity get 0). */
export function softmax(scores: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) max = Math.max(max, scores[i]);
  const out = new Float64Array(scores.length);
  let sum = 0;
  for (let i = 0; i < scores.length; i++) sum += out[i] = Math.exp(scores[i] - max);
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

/** The sampling distribution for one row of logits: temperature, then top-k, then top-p. */
export function samplingProbabilities(logits: Float32Array, opts: { temperature?: number; topK?: number; topP?: number }): Float64Array {
  const temperature = opts.temperature ?? 1;
  let scores = temperature === 1 ? logits : logits.map((x) => x / temperature);
  scores = topKFilter(scores, opts.topK ?? 50);
  scores = topPFilter(scores, opts.topP ?? 1);
  return softmax(scores);
}

/** One draw from `probs` (multinomial) with a uniform from `rng`. */
export function sampleIndex(probs: Float64Array, rng: Rng): number {
  const u = rng.random();
  let cumulative = 0;
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue;
    cumulative += probs[i];
    last = i;
    if (u < cumulative) return i;
  }
  return last; // rounding left u just above the total
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

// ---------------------------------------------------------------- generation

function checkOptions(opts: GenerationOptions): void {
  const { maxNewTokens = 20, temperature = 1, topK = 50, topP = 1 } = opts;
  if (!Number.isSafeInteger(maxNewTokens) || maxNewTokens < 1) fail(`generate: maxNewTokens must be a positive integer, got ${maxNewTokens}`);
  if (!(Number.isFinite(temperature) && temperature > 0)) fail(`generate: temperature must be a number > 0, got ${temperature}`);
  if (!Number.isSafeInteger(topK) || topK < 0) fail(`generate: topK must be a non-negative integer, got ${topK}`);
  if (!(topP > 0 && topP <= 1)) fail(`generate: topP must be in (0, 1], got ${topP}`);
  if (opts.stopStrings?.length && !opts.decode) fail('generate: stopStrings need a decode function');
  if (opts.stopStrings?.some((s) => s === '')) fail('generate: a stop string must not be empty');
}

/**
 * Generates after `prompt` (token ids, batch 1) step by step; each step is yielded (and passed to
 * `onToken`) as soon as it is chosen, and the generator returns the result. `model` may be a
 * PeftModel (its adapters run, or are merged) or anything with a CausalLM `model`.
 */
export function* generateStream(model: CausalLM | { readonly model: CausalLM }, prompt: readonly number[], opts: GenerationOptions = {}): Generator<GenerationStep, GenerationResult> {
  const lm = 'forward' in model ? model : model.model;
  checkOptions(opts);
  const maxNewTokens = opts.maxNewTokens ?? 20;
  if (prompt.length === 0) fail('generate: the prompt is empty (a causal LM needs at least one token to start from)');
  const limit = lm.contextLength;
  if (limit !== null && prompt.length + maxNewTokens > limit) {
    fail(`generate: prompt of ${prompt.length} tokens + ${maxNewTokens} new tokens exceeds the model's context of ${limit} positions`);
  }
  const eos = new Set(opts.eosTokenIds ?? lm.eosTokenIds);
  const rng = opts.rng ?? new Rng(opts.seed ?? 0);
  const decode = opts.decode;
  const cache = new KVCache();
  const tokens: number[] = [];
  let emitted = ''; // text handed out so far
  let decodedLength = 0; // length of the text decoded at the previous step
  const longestStop = Math.max(0, ...(opts.stopStrings ?? []).map((s) => s.length));
  let finishReason: FinishReason = 'length';
  const wasTraining = lm.training;
  lm.train(false); // dropout off while generating
  try {
    let input = Int32Array.from(prompt);
    for (let step = 0; step < maxNewTokens; step++) {
      const row = noGrad(() => lm.forward(input, [1, input.length], { cache, logitsToKeep: 1 }).toFloat32Array());
      const token = opts.doSample ? sampleIndex(samplingProbabilities(row, opts), rng) : argmax(row);
      tokens.push(token);
      input = Int32Array.of(token);
      let text = '';
      if (eos.has(token)) finishReason = 'eos';
      else if (decode) {
        const full = decode(tokens);
        // a token that ends inside a multi-byte character decodes to U+FFFD until the rest arrives
        if (!full.endsWith('\uFFFD')) {
          text = full.startsWith(emitted) ? full.slice(emitted.length) : '';
          if (text !== '') emitted = full;
        }
        // only occurrences that reach into this token's text are new
        const from = Math.max(0, decodedLength - longestStop + 1);
        decodedLength = full.length;
        if ((opts.stopStrings ?? []).some((s) => full.indexOf(s, from) >= 0)) finishReason = 'stop_string';
      }
      const event = { token, text };
      opts.onToken?.(event);
      yield event;
      if (finishReason !== 'length') break;
    }
  } finally {
    lm.train(wasTraining);
  }
  const textTokens = finishReason === 'eos' ? tokens.slice(0, -1) : tokens;
  // some decoders refuse an empty list
  return { tokens, text: decode ? (textTokens.length === 0 ? '' : decode(textTokens)) : null, finishReason };
}

/**
 * `generateStream` as an async iterator (`for await`): the same steps, with the event loop let run
 * between them so output written per step reaches a terminal or socket while generation goes on.
 */
export async function* generateAsync(model: CausalLM | { readonly model: CausalLM }, prompt: readonly number[], opts: GenerationOptions = {}): AsyncGenerator<GenerationStep, GenerationResult> {
  const stream = generateStream(model, prompt, opts);
  for (;;) {
    const next = stream.next();
    if (next.done) return next.value;
    yield next.value;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/** Runs `generateStream` to the end and returns its result. */
export function generate(model: CausalLM | { readonly model: CausalLM }, prompt: readonly number[], opts: GenerationOptions = {}): GenerationResult {
  const stream = generateStream(model, prompt, opts);
  for (;;) {
    const next = stream.next();
    if (next.done) return next.value;
  }
}
