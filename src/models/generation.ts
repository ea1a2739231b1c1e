// Autoregressive generation for the decoders (GPT-2, the Llama family), as transformers'
// `generate` with greedy search, multinomial sampling or beam search: the prompt runs once into a
// KV cache, then each step feeds only the newest token (of every beam). Sampling applies
// transformers' logits warpers in their order (temperature, top-k, top-p) and draws with our
// seeded Rng, so a seed reproduces a run. Beam search follows transformers' BeamSearchScorer
// (v4.30 semantics: the length penalty divides by the whole sequence's length, prompt included).
import { Rng, argmaxOf, noGrad, type Tensor } from '../tensor/index.js';
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
  /** Beams of beam search; 1 (default) is greedy search or sampling. Beam search is deterministic (no doSample). */
  numBeams?: number;
  /** Beam search: a finished hypothesis scores sum(log p) / length^lengthPenalty, length counting the prompt (default 1). */
  lengthPenalty?: number;
  /** Beam search's stopping rule, as transformers' early_stopping: true, false (default: heuristic) or 'never'. */
  earlyStopping?: boolean | 'never';
  /** Never repeat an n-gram of this size (prompt included), as transformers' no_repeat_ngram_size; 0 (default) turns it off. */
  noRepeatNgramSize?: number;
}

export interface GenerationStep {
  token: number;
  /** Text this token added (empty while a multi-byte character is incomplete, and for eos). */
  text: string;
}

export type FinishReason = 'eos' | 'stop_string' | 'length' | 'cancelled';

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

/**
 * Tokens that would repeat an n-gram of `sequence` (transformers' NoRepeatNGramLogitsProcessor):
 * the tokens that followed an earlier occurrence of the sequence's last n−1 tokens.
 */
export function bannedNgramTokens(sequence: readonly number[], n: number): number[] {
  if (n <= 0 || sequence.length + 1 < n) return [];
  const tail = sequence.slice(sequence.length - n + 1);
  const banned: number[] = [];
  for (let start = 0; start + n <= sequence.length; start++) {
    let same = true;
    for (let j = 0; j < n - 1 && same; j++) same = sequence[start + j] === tail[j];
    if (same) banned.push(sequence[start + n - 1]);
  }
  return banned;
}

// ---------------------------------------------------------------- generation

/** Refuses out-of-range generation options with one line (shared by generate and the engine). */
export function checkGenerationOptions(opts: GenerationOptions): void {
  const { maxNewTokens = 20, temperature = 1, topK = 50, topP = 1 } = opts;
  if (!Number.isSafeInteger(maxNewTokens) || maxNewTokens < 1) fail(`generate: maxNewTokens must be a positive integer, got ${maxNewTokens}`);
  if (!(Number.isFinite(temperature) && temperature > 0)) fail(`generate: temperature must be a number > 0, got ${temperature}`);
  if (!Number.isSafeInteger(topK) || topK < 0) fail(`generate: topK must be a non-negative integer, got ${topK}`);
  if (!(topP > 0 && topP <= 1)) fail(`generate: topP must be in (0, 1], got ${topP}`);
  if (opts.stopStrings?.length && !opts.decode) fail('generate: stopStrings need a decode function');
  if (opts.stopStrings?.some((s) => s === '')) fail('generate: a stop string must not be empty');
  const { numBeams = 1, lengthPenalty = 1, noRepeatNgramSize = 0 } = opts;
  if (!Number.isSafeInteger(numBeams) || numBeams < 1) fail(`generate: numBeams must be a positive integer, got ${numBeams}`);
  if (!Number.isFinite(lengthPenalty)) fail(`generate: lengthPenalty must be a finite number, got ${lengthPenalty}`);
  if (!Number.isSafeInteger(noRepeatNgramSize) || noRepeatNgramSize < 0) fail(`generate: noRepeatNgramSize must be a non-negative integer, got ${noRepeatNgramSize}`);
  if (numBeams > 1 && opts.doSample) fail('generate: beam search (numBeams > 1) does not sample; drop doSample');
  if (numBeams > 1 && opts.stopStrings?.length) fail('generate: stop strings are for greedy search and sampling, not beam search');
}

/**
 * Generates after `prompt` (token ids, batch 1) step by step; each step is yielded (and passed to
 * `onToken`) as soon as it is chosen, and the generator returns the result. `model` may be a
 * PeftModel (its adapters run, or are merged) or anything with a CausalLM `model`.
 */
export function* generateStream(model: CausalLM | { readonly model: CausalLM }, prompt: readonly number[], opts: GenerationOptions = {}): Generator<GenerationStep, GenerationResult> {
  const lm = startGeneration(model, prompt, opts);
  if ((opts.numBeams ?? 1) > 1) return yield* replay(beamSearch(lm, prompt, opts), opts);
  const run = new SamplingRun(lm, prompt, opts);
  try {
    while (run.input !== null) {
      const input = run.input;
      const row = noGrad(() => lm.forward(input, [1, input.length], { cache: run.cache, logitsToKeep: 1 }).toFloat32Array());
      yield run.step(row);
    }
  } finally {
    run.end();
  }
  return run.tracker.result();
}

/** Validates a generation and returns the causal LM to run. */
function startGeneration(model: CausalLM | { readonly model: CausalLM }, prompt: readonly number[], opts: GenerationOptions): CausalLM {
  const lm = 'forward' in model ? model : model.model;
  checkGenerationOptions(opts);
  const maxNewTokens = opts.maxNewTokens ?? 20;
  if (prompt.length === 0) fail('generate: the prompt is empty (a causal LM needs at least one token to start from)');
  const limit = lm.contextLength;
  if (limit !== null && prompt.length + maxNewTokens > limit) {
    fail(`generate: prompt of ${prompt.length} tokens + ${maxNewTokens} new tokens exceeds the model's context of ${limit} positions`);
  }
  return lm;
}

/**
 * Greedy search or sampling, one step per logits row of the newest position: the sync and async
 * generators share it and differ only in how they read that row.
 */
class SamplingRun {
  readonly cache = new KVCache();
  readonly tracker: TokenTextTracker;
  /** The tokens to feed next; null once generation is over. */
  input: Int32Array | null;
  private readonly rng: Rng;
  private readonly ngram: number;
  private readonly maxNewTokens: number;
  private readonly wasTraining: boolean;
  private steps = 0;

  constructor(private readonly lm: CausalLM, private readonly prompt: readonly number[], private readonly opts: GenerationOptions) {
    this.rng = opts.rng ?? new Rng(opts.seed ?? 0);
    this.ngram = opts.noRepeatNgramSize ?? 0;
    this.maxNewTokens = opts.maxNewTokens ?? 20;
    this.tracker = new TokenTextTracker(opts.eosTokenIds ?? lm.eosTokenIds, opts.decode, opts.stopStrings);
    this.wasTraining = lm.training;
    lm.train(false); // dropout off while generating
    this.input = Int32Array.from(prompt);
  }

  step(row: Float32Array): GenerationStep {
    if (this.ngram > 0) for (const t of bannedNgramTokens([...this.prompt, ...this.tracker.tokens], this.ngram)) row[t] = -Infinity;
    const token = chooseToken(row, this.opts, this.rng);
    const event = this.tracker.push(token);
    this.opts.onToken?.(event);
    this.steps++;
    this.input = this.tracker.finishReason !== null || this.steps >= this.maxNewTokens ? null : Int32Array.of(token);
    return event;
  }

  end(): void {
    this.lm.train(this.wasTraining);
  }
}

/** Greedy (argmax) or a draw from the warped distribution (temperature, top-k, top-p). */
export function chooseToken(row: Float32Array, opts: { doSample?: boolean; temperature?: number; topK?: number; topP?: number }, rng: Rng): number {
  return opts.doSample ? sampleIndex(samplingProbabilities(row, opts), rng) : argmaxOf(row); // greedy: the first maximum, NaNs skipped
}

/**
 * Follows one generation's tokens: each token's text delta (held back while a multi-byte character
 * is incomplete), and its end at an eos token or at a stop string reaching into the new text.
 */
export class TokenTextTracker {
  readonly tokens: number[] = [];
  /** Set once a token ends the generation. */
  finishReason: FinishReason | null = null;
  private readonly eos: ReadonlySet<number>;
  private emitted = ''; // text handed out so far
  private decodedLength = 0; // length of the text decoded at the previous token
  private readonly longestStop: number;

  constructor(
    eosTokenIds: readonly number[],
    private readonly decode?: (ids: readonly number[]) => string,
    private readonly stopStrings: readonly string[] = [],
  ) {
    this.eos = new Set(eosTokenIds);
    this.longestStop = Math.max(0, ...stopStrings.map((x) => x.length));
  }

  push(token: number): GenerationStep {
    this.tokens.push(token);
    let text = '';
    if (this.eos.has(token)) this.finishReason = 'eos';
    else if (this.decode) {
      const full = this.decode(this.tokens);
      // a token that ends inside a multi-byte character decodes to U+FFFD until the rest arrives
      if (!full.endsWith('\uFFFD')) {
        text = full.startsWith(this.emitted) ? full.slice(this.emitted.length) : '';
        if (text !== '') this.emitted = full;
      }
      // only occurrences that reach into this token's text are new
      const from = Math.max(0, this.decodedLength - this.longestStop + 1);
      this.decodedLength = full.length;
      if (this.stopStrings.some((x) => full.indexOf(x, from) >= 0)) this.finishReason = 'stop_string';
    }
    return { token, text };
  }

  /** The result so far; an unfinished generation ended by its token budget ('length'). */
  result(finishReason: FinishReason = this.finishReason ?? 'length'): GenerationResult {
    const tokens = [...this.tokens];
    const textTokens = finishReason === 'eos' ? tokens.slice(0, -1) : tokens;
    // some decoders refuse an empty list
    return { tokens, text: this.decode ? (textTokens.length === 0 ? '' : this.decode(textTokens)) : null, finishReason };
  }
}

/** Yields the tokens of a finished (beam search) result as steps, with their text deltas. */
function* replay(result: GenerationResult, opts: GenerationOptions): Generator<GenerationStep, GenerationResult> {
  const last = result.tokens[result.tokens.length - 1];
  // the search's own eos ended it even when opts names none
  const eos = [...(opts.eosTokenIds ?? []), ...(result.finishReason === 'eos' && last !== undefined ? [last] : [])];
  const tracker = new TokenTextTracker(eos, opts.decode);
  for (const token of result.tokens) {
    const event = tracker.push(token);
    opts.onToken?.(event);
    yield event;
  }
  return result;
}

// ---------------------------------------------------------------- beam search

/** A finished hypothesis: its generated tokens (eos excluded) and its length-penalized score. */
interface Hypothesis {
  tokens: number[];
  score: number;
  eos: number | null;
}

/** The best `numBeams` finished hypotheses (transformers' BeamHypotheses). */
class Hypotheses {
  readonly list: Hypothesis[] = [];
  private worst = 1e9;

  constructor(
    private readonly numBeams: number,
    private readonly lengthPenalty: number,
    private readonly earlyStopping: boolean | 'never',
    private readonly maxLength: number,
  ) {}

  /** `length` is the whole sequence's (prompt + generated, eos excluded). */
  add(tokens: number[], sumLogprobs: number, length: number, eos: number | null): void {
    const score = sumLogprobs / length ** this.lengthPenalty;
    if (this.list.length < this.numBeams || score > this.worst) {
      this.list.push({ tokens, score, eos });
      if (this.list.length > this.numBeams) {
        const order = this.list.map((h, i) => [h.score, i] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        this.list.splice(order[0][1], 1);
        this.worst = order[1][0];
      } else this.worst = Math.min(score, this.worst);
    }
  }

  /** Whether no running beam can beat the worst kept hypothesis any more. */
  isDone(bestSumLogprobs: number, curLength: number): boolean {
    if (this.list.length < this.numBeams) return false;
    if (this.earlyStopping === true) return true;
    // false: the heuristic bound from the current length; 'never': the exact bound
    const length = this.earlyStopping === 'never' && this.lengthPenalty > 0 ? this.maxLength : curLength;
    return this.worst >= bestSumLogprobs / length ** this.lengthPenalty;
  }

  /** The best hypothesis (of equal scores, the one added last, as transformers' sort-and-pop). */
  best(): Hypothesis {
    let best = this.list[0];
    for (const h of this.list) if (h.score >= best.score) best = h;
    return best;
  }
}

/** Log-softmax of each row of `logits` (rows·vocab) in double. */
function logSoftmaxRows(logits: Float32Array, rows: number, vocab: number): Float64Array {
  const out = new Float64Array(rows * vocab);
  for (let r = 0; r < rows; r++) {
    let max = -Infinity;
    for (let v = 0; v < vocab; v++) max = Math.max(max, logits[r * vocab + v]);
    let sum = 0;
    for (let v = 0; v < vocab; v++) sum += Math.exp(logits[r * vocab + v] - max);
    const lse = max + Math.log(sum);
    for (let v = 0; v < vocab; v++) out[r * vocab + v] = logits[r * vocab + v] - lse;
  }
  return out;
}

/** Indices of the k largest scores, best first (ties: the lower index first). */
function topIndices(scores: Float64Array, k: number): number[] {
  const top: number[] = [];
  for (let i = 0; i < scores.length; i++) {
    const s = scores[i];
    if (top.length === k && !(s > scores[top[k - 1]])) continue;
    let at = top.length === k ? k - 1 : top.length;
    while (at > 0 && s > scores[top[at - 1]]) at--;
    top.splice(at, 0, i);
    if (top.length > k) top.pop();
  }
  return top;
}

/**
 * Beam search as transformers' `generate(num_beams=…)` with BeamSearchScorer: every step scores
 * each beam's log-softmax plus its running sum, keeps the best 2·numBeams candidates of all beams,
 * sends candidates ending in eos (ranked within the first numBeams) to the finished hypotheses and
 * continues with the best numBeams others. The beams run as one batch over a shared KV cache whose
 * rows are reordered to follow their parents.
 */
export function beamSearch(model: CausalLM | { readonly model: CausalLM }, prompt: readonly number[], opts: GenerationOptions = {}): GenerationResult {
  const lm = 'forward' in model ? model : model.model;
  checkGenerationOptions(opts);
  const numBeams = opts.numBeams ?? 1;
  const maxNewTokens = opts.maxNewTokens ?? 20;
  if (prompt.length === 0) fail('generate: the prompt is empty (a causal LM needs at least one token to start from)');
  const limit = lm.contextLength;
  if (limit !== null && prompt.length + maxNewTokens > limit) {
    fail(`generate: prompt of ${prompt.length} tokens + ${maxNewTokens} new tokens exceeds the model's context of ${limit} positions`);
  }
  const eosIds = opts.eosTokenIds ?? lm.eosTokenIds;
  const eos = new Set(eosIds);
  const ngram = opts.noRepeatNgramSize ?? 0;
  const vocab = lm.config.vocabSize;
  const maxLength = prompt.length + maxNewTokens;
  const hyps = new Hypotheses(numBeams, opts.lengthPenalty ?? 1, opts.earlyStopping ?? false, maxLength);
  // every beam starts as the prompt; only the first counts until the beams differ
  let beams: number[][] = Array.from({ length: numBeams }, () => []);
  let beamScores = Float64Array.from({ length: numBeams }, (_, i) => (i === 0 ? 0 : -1e9));
  const cache = new KVCache();
  const candidates = Math.max(2, 1 + eos.size) * numBeams;
  let done = false;
  const wasTraining = lm.training;
  lm.train(false);
  try {
    noGrad(() => {
      // the prompt runs once (batch 1); its cache row is copied to every beam
      let logits = lm.forward(Int32Array.from(prompt), [1, prompt.length], { cache, logitsToKeep: 1 }).toFloat32Array();
      cache.selectRows(new Int32Array(numBeams));
      logits = Float32Array.from({ length: numBeams * vocab }, (_, i) => logits[i % vocab]);
      for (let generated = 0; ; ) {
        const curLength = prompt.length + generated;
        const scores = logSoftmaxRows(logits, numBeams, vocab);
        for (let b = 0; b < numBeams; b++) {
          if (ngram > 0) for (const t of bannedNgramTokens([...prompt, ...beams[b]], ngram)) scores[b * vocab + t] = -Infinity;
          for (let v = 0; v < vocab; v++) scores[b * vocab + v] += beamScores[b];
        }
        const nextBeams: number[][] = [];
        const nextScores: number[] = [];
        const parents: number[] = [];
        const nextTokens: number[] = [];
        const top = topIndices(scores, candidates);
        for (let rank = 0; rank < top.length && nextBeams.length < numBeams; rank++) {
          const parent = Math.floor(top[rank] / vocab);
          const token = top[rank] % vocab;
          if (eos.has(token)) {
            if (rank < numBeams) hyps.add([...beams[parent]], scores[top[rank]], curLength, token);
          } else {
            nextBeams.push([...beams[parent], token]);
            nextScores.push(scores[top[rank]]);
            parents.push(parent);
            nextTokens.push(token);
          }
        }
        if (nextBeams.length < numBeams) fail(`generate: fewer than ${numBeams} beams can continue (more eos candidates than beams)`);
        done = hyps.isDone(scores[top[0]], curLength);
        beams = nextBeams;
        beamScores = Float64Array.from(nextScores);
        generated++;
        if (done || generated >= maxNewTokens) break;
        cache.selectRows(Int32Array.from(parents));
        logits = lm.forward(Int32Array.from(nextTokens), [numBeams, 1], { cache, logitsToKeep: 1 }).toFloat32Array();
      }
    });
  } finally {
    lm.train(wasTraining);
  }
  if (!done) for (let b = 0; b < numBeams; b++) hyps.add(beams[b], beamScores[b], prompt.length + beams[b].length, null);
  const best = hyps.best();
  // transformers appends eos to a hypothesis shorter than max_length: one that ended in eos
  const finished = best.tokens.length < maxNewTokens;
  const tokens = finished ? [...best.tokens, best.eos ?? eosIds[0]] : best.tokens;
  const decode = opts.decode;
  return { tokens, text: decode ? (best.tokens.length === 0 ? '' : decode(best.tokens)) : null, finishReason: finished ? 'eos' : 'length' };
}

/**
 * `generateStream` as an async iterator (`for await`): the same steps, with the event loop let run
 * between them so output written per step reaches a terminal or socket while generation goes on.
 * Greedy search and sampling read each step's logits row asynchronously (`dataAsync`), which GPU
 * backends need; beam search reads synchronously (a CPU backend).
 */
export async function* generateAsync(model: CausalLM | { readonly model: CausalLM }, prompt: readonly number[], opts: GenerationOptions = {}): AsyncGenerator<GenerationStep, GenerationResult> {
  const lm = startGeneration(model, prompt, opts);
  if ((opts.numBeams ?? 1) > 1) {
    const stream = generateStream(lm, prompt, opts);
    for (;;) {
      const next = stream.next();
      if (next.done) return next.value;
      yield next.value;
      await yieldToEventLoop();
    }
  }
  const run = new SamplingRun(lm, prompt, opts);
  try {
    while (run.input !== null) {
      const input = run.input;
      const logits = noGrad(() => lm.forward(input, [1, input.length], { cache: run.cache, logitsToKeep: 1 }));
      const row = await logits.dataAsync(); // a fresh copy: step() may ban tokens in it
      yield run.step(row);
      await yieldToEventLoop();
    }
  } finally {
    run.end();
  }
  return run.tracker.result();
}

/** setImmediate where there is one (Node: pending I/O runs), else a timer (browsers). */
function yieldToEventLoop(): Promise<void> {
  return new Promise<void>((resolve) => (typeof setImmediate === 'function' ? setImmediate(resolve) : setTimeout(resolve, 0)));
}

/** Runs `generateStream` to the end and returns its result. */
export function generate(model: CausalLM | { readonly model: CausalLM }, prompt: readonly number[], opts: GenerationOptions = {}): GenerationResult {
  const stream = generateStream(model, prompt, opts);
  for (;;) {
    const next = stream.next();
    if (next.done) return next.value;
  }
}
