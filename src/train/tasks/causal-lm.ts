// The causal-LM task: GPT-2 / the Llama family on JSONL ("input_ids" / "text" rows; one sequence
// per row, or packed into seqLen blocks) or on the E2E NLG CSV (loss on the reference only), the
// model loaded from a folder or built from config.json alone (pretraining). Evaluation: loss,
// perplexity and next-token accuracy; on E2E also the generation eval (beam search, BLEU, NIST,
// ROUGE-L, CIDEr).
import { path } from '../../io/node.js';
import { collateCausalLm, IGNORE_INDEX, packSequences, readCausalLmJsonl, sequentialBatches, type CausalLmBatch, type CausalLmData } from '../../data/jsonl.js';
import { e2ePrompt, encodeE2e, groupReferences, readE2eCsv, type E2eEncoded, type E2eGroup } from '../../data/e2e.js';
import { e2eMetrics } from '../../data/text-metrics.js';
import { loadTokenizer, type Tokenizer } from '../../data/tokenizer.js';
import { readJsonFile } from '../../io/atomic.js';
import { fail } from '../../io/errors.js';
import { causalLmForwardLoss, causalLmLoss, generate, isCausalLM, loadPretrained, modelFromConfig, type CausalLM, type JsonObject } from '../../models/index.js';
import { asJsonObject } from '../../models/config.js';
import { F, Rng, type Tensor } from '../../tensor/index.js';
import { DEFAULT_MAX_NEW_TOKENS, DEFAULT_SEQ_LEN, inEvalMode, type E2eEvaluation, type E2eGenerationOptions, type PreparedTask, type TaskOptions } from './common.js';

// ---------------------------------------------------------------- causal-lm

/** One causal-LM example: token ids, and per-position labels (null: every token is a target; IGNORE_INDEX: not scored). */
export interface LmExample {
  ids: Int32Array;
  labels: Int32Array | null;
}

/** The causal-LM collator: right-padded with `padId`, attention mask 0 and label IGNORE_INDEX on padding, an example's own labels where it has them. */
export function collateLmExamples(examples: readonly LmExample[], padId: number): CausalLmBatch {
  const batch = collateCausalLm(examples.map((s) => s.ids), padId);
  const seq = batch.shape[1];
  let targets = 0;
  examples.forEach((s, b) => {
    if (s.labels) batch.labels.set(s.labels, b * seq);
    for (let t = 1; t < s.ids.length; t++) if (batch.labels[b * seq + t] !== IGNORE_INDEX) targets++;
  });
  batch.targets = targets;
  return batch;
}

/** `collateLmExamples` bound to a pad id, for the Trainer's `collator`. */
export function causalLmCollator(padId: number): (examples: readonly LmExample[]) => CausalLmBatch {
  return (examples) => collateLmExamples(examples, padId);
}

/** Mean next-token loss of one collated batch (labels shifted inside), with optional label smoothing ε. */
export function causalLmBatchLoss(model: CausalLM, batch: CausalLmBatch, labelSmoothing = 0): { loss: Tensor; items: number } {
  const loss = causalLmForwardLoss(model, batch.inputIds, batch.shape, { attentionMask: batch.attentionMask, ignoreIndex: IGNORE_INDEX, labels: batch.labels, labelSmoothing });
  return { loss, items: batch.tokens };
}

/** Positions whose arg-max logit is the next label (labels at IGNORE_INDEX do not count). */
export function nextTokenHits(logits: Tensor, labels: Int32Array, [batch, seq]: readonly [number, number]): number {
  const predicted = F.argmax(logits);
  let hits = 0;
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t + 1 < seq; t++) {
      const target = labels[b * seq + t + 1];
      if (target !== IGNORE_INDEX && predicted[b * seq + t] === target) hits++;
    }
  }
  return hits;
}

/** A model built from `dir/config.json` alone with its family's initialization, drawn from a generator seeded with `seed` (pretraining). */
function buildFromScratch(dir: string, seed: number): { model: ReturnType<typeof modelFromConfig>; modelType: string; configJson: JsonObject; checkpoint: null } {
  const configFile = path.join(dir, 'config.json');
  const configJson = asJsonObject(readJsonFile(configFile, 'model config'), configFile);
  const model = modelFromConfig(configJson, configFile, { rng: new Rng(seed) });
  return { model, modelType: model.modelType, configJson, checkpoint: null };
}

export async function prepareCausalLm(o: TaskOptions): Promise<PreparedTask> {
  const loaded = o.fromScratch ? buildFromScratch(o.model, o.initSeed ?? 0) : loadPretrained(o.model, { log: o.log, weights: o.weights, doubleQuant: o.doubleQuant });
  const model = loaded.model;
  if (!isCausalLM(model)) {
    const hint = loaded.modelType === 'bert' || loaded.modelType === 'roberta' ? 'seq-cls' : 'img-cls';
    fail(`${o.model}: model_type "${loaded.modelType}" is not a causal language model; --task causal-lm trains GPT-2 and the Llama family (use --task ${hint})`);
  }
  const { vocabSize } = model.config;
  const maxLen = model.contextLength;
  if (o.seqLen !== undefined && maxLen !== null && o.seqLen > maxLen) fail(`--seq-len ${o.seqLen} exceeds the model's context length (${maxLen})`);
  const seqLen = o.seqLen ?? Math.min(DEFAULT_SEQ_LEN, maxLen ?? DEFAULT_SEQ_LEN);
  const eosId = model.eosTokenIds.find((id) => id < vocabSize) ?? null;
  const padId = eosId ?? 0;
  // "text" rows get eos by default when the model has one; asking for it explicitly without one is an error
  const eosMode = o.appendEos ?? 'text';
  if ((o.pack || eosMode === 'all') && eosId === null) {
    const why = model.eosTokenIds.length === 0 ? 'has no eos_token_id' : `has eos_token_id ${model.eosTokenIds.join(', ')}, outside the vocabulary [0, ${vocabSize})`;
    fail(`${o.pack ? '--pack' : '--append-eos'} needs the model's eos token: ${path.join(o.model, 'config.json')} ${why}`);
  }

  let tokenizer: Promise<Tokenizer | null> | null = null;
  const getTokenizer = (): Promise<Tokenizer | null> => (tokenizer ??= loadTokenizer(o.model));
  type Read = { rows: number; sequences: LmExample[]; log: Record<string, unknown>; skipped: number; truncated: number; groups?: E2eGroup[]; tokenizer?: Tokenizer };
  const read = async (file: string): Promise<Read> => {
    if (o.dataFormat === 'e2e') {
      const tok = await getTokenizer();
      if (tok === null) fail(`--data-format e2e needs a tokenizer.json in ${o.model}`);
      const rows = readE2eCsv(file);
      const enc: E2eEncoded = encodeE2e(rows, tok, { seqLen, eosId }, file);
      const bad = enc.sequences.flatMap((s) => [...s.ids]).find((id) => id >= vocabSize);
      if (bad !== undefined) fail(`${file}: ${tok.file} gave token id ${bad}, outside the model's vocabulary [0, ${vocabSize})`);
      if (enc.sequences.length === 0) fail(`${file}: no row fits --seq-len ${seqLen} (every MR prompt is longer)`);
      const log = { file, format: 'e2e', rows: rows.length, sequences: enc.sequences.length, skipped: enc.skipped, truncated: enc.truncated, targetTokens: enc.targetTokens };
      return { rows: rows.length, sequences: enc.sequences, log, skipped: enc.skipped, truncated: enc.truncated, groups: groupReferences(rows), tokenizer: tok };
    }
    const appendEos = o.pack || eosMode !== 'none' ? eosId : null;
    const appendEosTo = o.pack ? 'all' : eosMode === 'all' ? 'all' : 'text';
    const data: CausalLmData = await readCausalLmJsonl(file, { vocabSize, seqLen, tokenizerDir: o.model, tokenizer: getTokenizer, appendEos, appendEosTo, truncate: !o.pack });
    if (o.pack) {
      const packed = packSequences(data.sequences, seqLen);
      if (packed.blocks.length === 0) fail(`${file}: ${packed.tokens} tokens (an eos after each line included) do not fill one --pack block of --seq-len ${seqLen}`);
      const log = { file, records: data.records, packed: true, blockSize: seqLen, blocks: packed.blocks.length, tokens: packed.tokens, droppedTokens: packed.dropped, skipped: data.skipped };
      return { rows: data.records, sequences: packed.blocks.map((ids) => ({ ids, labels: null })), log, skipped: data.skipped, truncated: 0 };
    }
    if (data.sequences.length === 0) fail(`${file}: no sequence with at least 2 tokens (${data.records} lines read, ${data.skipped} too short)`);
    const eosLog = appendEos === null ? {} : appendEosTo === 'all' ? { appendEos } : data.textRows > 0 ? { appendEos, appendEosTo } : {};
    const log = { file, records: data.records, sequences: data.sequences.length, skipped: data.skipped, truncated: data.truncated, tokens: data.tokens, ...eosLog };
    return { rows: data.records, sequences: data.sequences.map((ids) => ({ ids, labels: null })), log, skipped: data.skipped, truncated: data.truncated };
  };
  const train = await read(o.data);
  const evalSet = o.evalData !== undefined ? await read(o.evalData) : null;
  for (const [what, set] of [['data', train], ['eval data', evalSet]] as const) {
    if (set && set.truncated > 0) o.log(`${what}: ${set.truncated} of ${set.rows} rows were longer than --seq-len ${seqLen} and were cut`);
  }
  const evaluateGeneration = evalSet?.groups && o.generation ? e2eGenerationEval(model, evalSet.groups, evalSet.tokenizer!, eosId, o.generation, o.evalData!) : undefined;

  const evaluate = (set: Read) => (): Record<string, number> =>
    inEvalMode(model, () => {
      let sum = 0;
      let count = 0;
      let correct = 0;
      for (const seqs of sequentialBatches(set.sequences, o.batchSize)) {
        const batch = collateLmExamples(seqs, padId);
        const logits = model.forward(batch.inputIds, batch.shape, { attentionMask: batch.attentionMask });
        sum += causalLmLoss(logits, batch.inputIds, batch.shape, IGNORE_INDEX, batch.labels).item() * batch.targets;
        count += batch.targets;
        correct += nextTokenHits(logits, batch.labels, batch.shape);
      }
      const loss = sum / count;
      return { loss, perplexity: Math.exp(loss), accuracy: correct / count };
    });

  return {
    model,
    peftTaskType: 'CAUSAL_LM',
    headModules: [],
    size: train.sequences.length,
    unit: 'tokens',
    loss: (indices) => causalLmBatchLoss(model, collateLmExamples(indices.map((i) => train.sequences[i]), padId), o.labelSmoothing ?? 0),
    evaluate: evalSet ? evaluate(evalSet) : null,
    evaluateGeneration,
    seqLen,
    pretrained: { configJson: loaded.configJson, checkpoint: loaded.checkpoint },
    packed: o.pack ?? false,
    counts: { examples: train.sequences.length, skipped: train.skipped, truncated: train.truncated, evalExamples: evalSet?.sequences.length ?? null },
    dataLog: train.log,
    evalDataLog: evalSet?.log ?? null,
  };
}

/**
 * The E2E generation eval of LoRA's and VeRA's papers: beam search from each distinct MR's prompt
 * (the first `limit` MRs), the text up to eos, scored with BLEU, NIST, ROUGE-L and CIDEr against all of that
 * MR's references. Prompt lengths are checked here, before training.
 */
export function e2eGenerationEval(model: CausalLM, allGroups: E2eGroup[], tokenizer: Tokenizer, eosId: number | null, g: E2eGenerationOptions, file: string): (onProgress?: (done: number, total: number) => void) => E2eEvaluation {
  const groups = allGroups.slice(0, g.limit ?? allGroups.length);
  const noRefs = groups.findIndex((x) => x.refs.length === 0);
  if (noRefs >= 0) fail(`${file}: MR ${noRefs + 1} has no reference (the file needs a "ref" column to be scored)`);
  const prompts = groups.map((x) => tokenizer.encode(e2ePrompt(x.mr)));
  const longest = Math.max(...prompts.map((p) => p.length));
  const context = model.contextLength ?? Infinity;
  const maxNewTokens = g.maxNewTokens ?? Math.min(DEFAULT_MAX_NEW_TOKENS, context - longest);
  if (longest + maxNewTokens > context || maxNewTokens < 1) {
    fail(`${file}: an MR prompt of ${longest} tokens + ${maxNewTokens < 1 ? 'a generated token' : `--max-new-tokens ${maxNewTokens}`} exceeds the model's context of ${context} positions`);
  }
  return (onProgress) => {
    const opts = { numBeams: g.numBeams, lengthPenalty: g.lengthPenalty, noRepeatNgramSize: g.noRepeatNgramSize, maxNewTokens, eosTokenIds: eosId === null ? [] : [eosId] };
    const predictions = prompts.map((prompt, i) => {
      const result = generate(model, prompt, opts);
      onProgress?.(i + 1, prompts.length);
      const ids = result.finishReason === 'eos' ? result.tokens.slice(0, -1) : result.tokens;
      // one line per MR in the predictions file
      return ids.length === 0 ? '' : tokenizer.decode(ids).replace(/\s+/g, ' ').trim();
    });
    const metrics = e2eMetrics(predictions, groups.map((x) => x.refs));
    return { groups, predictions, metrics, maxNewTokens };
  };
}

