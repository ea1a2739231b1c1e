// The three tasks of `vera train --task`: each reads its data, loads the model it trains and says
// how to batch, score and evaluate it. A batch is the list of example indices the sampler drew;
// collation happens in `loss`, so the sampler (and so resume) is the same for every task.
//   causal-lm  GPT-2 / Llama family on JSONL ("input_ids"/"text"; one sequence per line, or packed
//              into --seq-len blocks) or the E2E NLG CSV (loss on the reference only); the model may
//              be built from config.json alone (--from-scratch)
//   seq-cls    BERT / RoBERTa on a GLUE task's TSV files; the task's GLUE metric on --eval-data
//   img-cls    vera_cnn / vera_mlp / ViT on IDX images (Fashion-MNIST)
import * as fs from 'node:fs';
import * as path from 'node:path';
import { collateCausalLm, IGNORE_INDEX, packSequences, readCausalLmJsonl, sequentialBatches, type CausalLmData } from '../../data/jsonl.js';
import { e2ePrompt, encodeE2e, groupReferences, readE2eCsv, type E2eEncoded, type E2eGroup } from '../../data/e2e.js';
import { e2eMetrics } from '../../data/text-metrics.js';
import { GLUE_SPECS, readGlueTsv, type GlueData, type GlueTask } from '../../data/glue.js';
import { glueMetric } from '../../data/metrics.js';
import { loadFashionMnist } from '../../data/fashion-mnist.js';
import { readIdx } from '../../data/idx.js';
import { loadTokenizer, type Tokenizer } from '../../data/tokenizer.js';
import { readJsonFile } from '../../io/atomic.js';
import { fail } from '../../io/errors.js';
import { loadCheckpointTensors } from '../../io/safetensors.js';
import {
  bertCheckpointPath, bertNewlyInitialized, causalLmLoss, generate, isCausalLM, loadCheckpointInto, loadPretrained, modelFromConfig, robertaCheckpointPath, robertaNewlyInitialized,
  type BertForSequenceClassification, type CausalLM, type CheckpointInfo, type CNN, type JsonObject, type MLP, type RobertaForSequenceClassification, type ViTForImageClassification,
} from '../../models/index.js';
import { asJsonObject } from '../../models/config.js';
import { labelSmoothedCrossEntropy, type Module } from '../../nn/index.js';
import { F, Rng, Tensor, defaultRng, noGrad } from '../../tensor/index.js';

export const TASKS = ['causal-lm', 'seq-cls', 'img-cls'] as const;
export type TaskName = (typeof TASKS)[number];
export const DATA_FORMATS = ['jsonl', 'e2e', 'glue', 'idx'] as const;
export type DataFormat = (typeof DATA_FORMATS)[number];
export const DEFAULT_FORMAT: Record<TaskName, DataFormat> = { 'causal-lm': 'jsonl', 'seq-cls': 'glue', 'img-cls': 'idx' };
const FORMATS_OF: Record<TaskName, readonly DataFormat[]> = { 'causal-lm': ['jsonl', 'e2e'], 'seq-cls': ['glue'], 'img-cls': ['idx'] };
export const DEFAULT_SEQ_LEN = 128;
/** Tokens generated per MR in the E2E eval (LoRA's E2E setup generates up to 64). */
export const DEFAULT_MAX_NEW_TOKENS = 64;

export interface TaskOptions {
  task: TaskName;
  model: string;
  data: string;
  evalData?: string;
  dataFormat: DataFormat;
  glueTask?: GlueTask;
  seqLen?: number;
  batchSize: number;
  /** ε of label smoothing on the training loss (0: none). */
  labelSmoothing?: number;
  /** causal-lm on E2E with eval data: how the eval MRs are generated for BLEU / ROUGE-L. */
  generation?: E2eGenerationOptions;
  /** causal-lm: build the model from config.json with its family's random initialization (seeded by initSeed) instead of loading weights. */
  fromScratch?: boolean;
  initSeed?: number;
  /** causal-lm JSONL: eos after each line, everything concatenated and cut into blocks of seqLen tokens (run_clm's group_texts). */
  pack?: boolean;
  /** causal-lm JSONL without packing: eos after each line's tokens. */
  appendEos?: boolean;
  log: (line: string) => void;
}

/** Beam search settings of the E2E generation eval (LoRA's and VeRA's: 10 beams, 0.9, no 4-gram repeats). */
export interface E2eGenerationOptions {
  numBeams: number;
  lengthPenalty: number;
  noRepeatNgramSize: number;
  /** Default: 64, or fewer when the model's context leaves less after the longest prompt. */
  maxNewTokens?: number;
  /** Generate for the first n MRs of the eval file only. */
  limit?: number;
}

/** The E2E generation eval: one text per MR, and the metrics against that MR's references. */
export interface E2eEvaluation {
  groups: E2eGroup[];
  predictions: string[];
  metrics: { bleu: number; nist: number; rouge_l: number; cider: number };
  maxNewTokens: number;
}

/** What runTrain needs from a task. */
export interface PreparedTask {
  model: Module;
  /** PEFT's task_type for the adapter config. */
  peftTaskType: string | null;
  /** Modules trained fully and saved with the adapter because of the task (the classifier head, as PEFT's SEQ_CLS does). */
  headModules: string[];
  /** Training examples. */
  size: number;
  unit: 'tokens' | 'samples';
  /** Mean loss of the examples `indices` (model in train mode) and the items it covers. */
  loss(indices: number[]): { loss: Tensor; items: number };
  /** Eval metrics (loss, and the task's), run under noGrad; null without --eval-data. */
  evaluate: (() => Record<string, number>) | null;
  /** causal-lm on E2E with eval data: generates for each eval MR and scores the texts. */
  evaluateGeneration?: (onProgress?: (done: number, total: number) => void) => E2eEvaluation;
  /** The sequence length used (causal-lm, seq-cls). */
  seqLen: number | null;
  /**
   * causal-lm: what writing the whole model back needs (--method full): config.json as read and
   * the loaded checkpoint's key map (null for a model built from scratch). Null for the other tasks.
   */
  pretrained: { configJson: JsonObject; checkpoint: CheckpointInfo | null } | null;
  /** Training examples are --seq-len blocks of packed lines (--pack). */
  packed: boolean;
  counts: { examples: number; skipped: number; truncated: number; evalExamples: number | null };
  /** For training_log.json. */
  dataLog: Record<string, unknown>;
  evalDataLog: Record<string, unknown> | null;
}

export function checkDataFormat(task: TaskName, format: DataFormat): void {
  if (!FORMATS_OF[task].includes(format)) fail(`--data-format ${format} is not for --task ${task} (use ${FORMATS_OF[task].join(' or ')})`);
}

export async function prepareTask(o: TaskOptions): Promise<PreparedTask> {
  if (o.task === 'causal-lm') return prepareCausalLm(o);
  if (o.task === 'seq-cls') return prepareSeqCls(o);
  return prepareImgCls(o);
}

/** Runs `fn` with the model in eval mode, restoring its mode after. */
function inEvalMode<T>(model: Module, fn: () => T): T {
  const wasTraining = model.training;
  model.eval();
  try {
    return noGrad(fn);
  } finally {
    model.train(wasTraining);
  }
}

// ---------------------------------------------------------------- causal-lm

/** One training sequence; labels null means every token is a target. */
interface LmSequence {
  ids: Int32Array;
  labels: Int32Array | null;
}

function collateLm(seqs: readonly LmSequence[], padId: number): ReturnType<typeof collateCausalLm> {
  const batch = collateCausalLm(seqs.map((s) => s.ids), padId);
  const seq = batch.shape[1];
  let targets = 0;
  seqs.forEach((s, b) => {
    if (s.labels) batch.labels.set(s.labels, b * seq);
    for (let t = 1; t < s.ids.length; t++) if (batch.labels[b * seq + t] !== IGNORE_INDEX) targets++;
  });
  batch.targets = targets;
  return batch;
}

/** Positions whose arg-max logit is the next label (labels at IGNORE_INDEX do not count). */
function nextTokenHits(logits: Tensor, labels: Int32Array, [batch, seq]: readonly [number, number]): number {
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

async function prepareCausalLm(o: TaskOptions): Promise<PreparedTask> {
  const loaded = o.fromScratch ? buildFromScratch(o.model, o.initSeed ?? 0) : loadPretrained(o.model, { log: o.log });
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
  if ((o.pack || o.appendEos) && eosId === null) {
    const why = model.eosTokenIds.length === 0 ? 'has no eos_token_id' : `has eos_token_id ${model.eosTokenIds.join(', ')}, outside the vocabulary [0, ${vocabSize})`;
    fail(`${o.pack ? '--pack' : '--append-eos'} needs the model's eos token: ${path.join(o.model, 'config.json')} ${why}`);
  }

  let tokenizer: Promise<Tokenizer | null> | null = null;
  const getTokenizer = (): Promise<Tokenizer | null> => (tokenizer ??= loadTokenizer(o.model));
  type Read = { sequences: LmSequence[]; log: Record<string, unknown>; skipped: number; truncated: number; groups?: E2eGroup[]; tokenizer?: Tokenizer };
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
      return { sequences: enc.sequences, log, skipped: enc.skipped, truncated: enc.truncated, groups: groupReferences(rows), tokenizer: tok };
    }
    const appendEos = o.pack || o.appendEos ? eosId : null;
    const data: CausalLmData = await readCausalLmJsonl(file, { vocabSize, seqLen, tokenizerDir: o.model, tokenizer: getTokenizer, appendEos, truncate: !o.pack });
    if (o.pack) {
      const packed = packSequences(data.sequences, seqLen);
      if (packed.blocks.length === 0) fail(`${file}: ${packed.tokens} tokens (an eos after each line included) do not fill one --pack block of --seq-len ${seqLen}`);
      const log = { file, records: data.records, packed: true, blockSize: seqLen, blocks: packed.blocks.length, tokens: packed.tokens, droppedTokens: packed.dropped, skipped: data.skipped };
      return { sequences: packed.blocks.map((ids) => ({ ids, labels: null })), log, skipped: data.skipped, truncated: 0 };
    }
    if (data.sequences.length === 0) fail(`${file}: no sequence with at least 2 tokens (${data.records} lines read, ${data.skipped} too short)`);
    const log = { file, records: data.records, sequences: data.sequences.length, skipped: data.skipped, truncated: data.truncated, tokens: data.tokens, ...(appendEos !== null ? { appendEos } : {}) };
    return { sequences: data.sequences.map((ids) => ({ ids, labels: null })), log, skipped: data.skipped, truncated: data.truncated };
  };
  const train = await read(o.data);
  const evalSet = o.evalData !== undefined ? await read(o.evalData) : null;
  const evaluateGeneration = evalSet?.groups && o.generation ? e2eGenerationEval(model, evalSet.groups, evalSet.tokenizer!, eosId, o.generation, o.evalData!) : undefined;

  const evaluate = (set: Read) => (): Record<string, number> =>
    inEvalMode(model, () => {
      let sum = 0;
      let count = 0;
      let correct = 0;
      for (const seqs of sequentialBatches(set.sequences, o.batchSize)) {
        const batch = collateLm(seqs, padId);
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
    loss(indices) {
      const batch = collateLm(indices.map((i) => train.sequences[i]), padId);
      const logits = model.forward(batch.inputIds, batch.shape, { attentionMask: batch.attentionMask });
      return { loss: causalLmLoss(logits, batch.inputIds, batch.shape, IGNORE_INDEX, batch.labels, o.labelSmoothing ?? 0), items: batch.tokens };
    },
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
function e2eGenerationEval(model: CausalLM, allGroups: E2eGroup[], tokenizer: Tokenizer, eosId: number | null, g: E2eGenerationOptions, file: string): (onProgress?: (done: number, total: number) => void) => E2eEvaluation {
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

// ---------------------------------------------------------------- seq-cls

type SeqClsModel = BertForSequenceClassification | RobertaForSequenceClassification;
const ENCODER_LOADING = {
  bert: { checkpointPath: bertCheckpointPath, newlyInitialized: bertNewlyInitialized },
  roberta: { checkpointPath: robertaCheckpointPath, newlyInitialized: robertaNewlyInitialized },
} as const;

/**
 * Loads a BERT/RoBERTa folder for a GLUE task as transformers' run_glue does
 * (AutoConfig.from_pretrained(num_labels=…)): config.json's label fields are set to the task's, and
 * a head the checkpoint lacks or stores for another label count is freshly initialized.
 */
function loadForTask(dir: string, task: GlueTask, log: (line: string) => void): SeqClsModel {
  const configFile = path.join(dir, 'config.json');
  const json = readJsonFile(configFile, 'model config') as Record<string, unknown>;
  const type = json['model_type'];
  if (type !== 'bert' && type !== 'roberta') {
    const hint = type === 'gpt2' ? ' (use --task causal-lm)' : type === 'vit' || type === 'vera_cnn' || type === 'vera_mlp' ? ' (use --task img-cls)' : '';
    fail(`${configFile}: model_type ${JSON.stringify(type)} is not a sequence classifier; --task seq-cls trains bert or roberta${hint}`);
  }
  const spec = GLUE_SPECS[task];
  const names = spec.labelNames ?? ['score'];
  const patched = {
    ...json,
    num_labels: names.length,
    id2label: Object.fromEntries(names.map((n, i) => [String(i), n])),
    label2id: Object.fromEntries(names.map((n, i) => [n, i])),
    problem_type: spec.labelNames === null ? 'regression' : 'single_label_classification',
    finetuning_task: task,
  };
  const ckpt = loadCheckpointTensors(dir);
  const model = modelFromConfig(patched, configFile, { init: false, checkpoint: ckpt }) as SeqClsModel;
  const { checkpointPath, newlyInitialized } = ENCODER_LOADING[type];
  const info = loadCheckpointInto(model, ckpt, checkpointPath, newlyInitialized);
  if (info.newlyInitialized.length > 0) {
    const fresh = new Set(info.newlyInitialized.map((p) => p.path));
    model.initWeights(defaultRng(), (p) => fresh.has(p));
    log(`vera: newly initialized ${[...fresh].join(', ')} for ${task} (${names.length} label${names.length > 1 ? 's' : ''}): trained with the adapter`);
  }
  model.eval();
  return model;
}

interface EncodedExample {
  ids: number[];
  typeIds: number[];
  label: number;
}

async function prepareSeqCls(o: TaskOptions): Promise<PreparedTask> {
  if (o.glueTask === undefined) fail('--task seq-cls needs --glue-task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte or wnli)');
  const task = o.glueTask;
  const model = loadForTask(o.model, task, o.log);
  const tokenizer = await loadTokenizer(o.model);
  if (tokenizer === null) fail(`--task seq-cls needs a tokenizer.json in ${o.model}`);
  const c = model.config;
  // RoBERTa's positions start after padding_idx, so it has two positions fewer
  const maxPositions = c.modelType === 'roberta' ? c.maxPositionEmbeddings - (c.padTokenId ?? 1) - 1 : c.maxPositionEmbeddings;
  if (o.seqLen !== undefined && o.seqLen > maxPositions) fail(`--seq-len ${o.seqLen} exceeds the model's ${maxPositions} positions`);
  const seqLen = o.seqLen ?? Math.min(DEFAULT_SEQ_LEN, maxPositions, tokenizer.modelMaxLength ?? Infinity);
  const padId = tokenizer.specialTokens.pad?.id ?? c.padTokenId ?? 0;
  const useTypes = c.typeVocabSize > 1;

  const read = (file: string): { data: GlueData; examples: EncodedExample[]; truncated: number } => {
    const data = readGlueTsv(file, task);
    if (!data.hasLabels) fail(`${file}: has no "${GLUE_SPECS[task].label}" column (a test split?); training and evaluation need labels`);
    let truncated = 0;
    const examples = data.examples.map((ex) => {
      const full = tokenizer.encodeWithTypes(ex.textA, ex.textB);
      const enc = full.ids.length > seqLen ? (truncated++, tokenizer.encodeWithTypes(ex.textA, ex.textB, { maxLength: seqLen })) : full;
      const bad = enc.ids.find((id) => id >= c.vocabSize);
      if (bad !== undefined) fail(`${file}:${ex.line}: ${tokenizer.file} gave token id ${bad}, outside the model's vocabulary [0, ${c.vocabSize})`);
      return { ids: enc.ids, typeIds: enc.typeIds, label: ex.label! };
    });
    return { data, examples, truncated };
  };
  const train = read(o.data);
  const evalSet = o.evalData !== undefined ? read(o.evalData) : null;
  const regression = GLUE_SPECS[task].labelNames === null;
  if (regression && o.labelSmoothing) fail(`--label-smoothing is for classification; --glue-task ${task} is a regression`);

  const forward = (rows: readonly EncodedExample[]): Tensor => {
    const seq = Math.max(...rows.map((r) => r.ids.length));
    const inputIds = new Int32Array(rows.length * seq).fill(padId);
    const attentionMask = new Float32Array(rows.length * seq);
    const tokenTypeIds = new Int32Array(rows.length * seq);
    rows.forEach((r, b) => {
      inputIds.set(r.ids, b * seq);
      if (useTypes) tokenTypeIds.set(r.typeIds, b * seq);
      attentionMask.fill(1, b * seq, b * seq + r.ids.length);
    });
    return model.forward(inputIds, [rows.length, seq], { attentionMask, tokenTypeIds });
  };
  const labelsOf = (rows: readonly EncodedExample[]): Int32Array | Float32Array =>
    regression ? Float32Array.from(rows, (r) => r.label) : Int32Array.from(rows, (r) => r.label);

  const evaluate = (set: { examples: EncodedExample[] }) => (): Record<string, number> =>
    inEvalMode(model, () => {
      const predictions: number[] = [];
      let lossSum = 0;
      for (const rows of sequentialBatches(set.examples, o.batchSize)) {
        const logits = forward(rows);
        lossSum += model.loss(logits, labelsOf(rows)).item() * rows.length;
        if (regression) predictions.push(...logits.toFloat32Array());
        else predictions.push(...F.argmax(logits));
      }
      const metrics = glueMetric(task, predictions, set.examples.map((e) => e.label));
      return { loss: lossSum / set.examples.length, ...metrics };
    });

  const dataLog = (s: ReturnType<typeof read>): Record<string, unknown> => ({ file: s.data.file, format: 'glue', glueTask: task, examples: s.examples.length, truncated: s.truncated });
  return {
    model,
    peftTaskType: 'SEQ_CLS',
    headModules: ['classifier'],
    size: train.examples.length,
    unit: 'samples',
    loss(indices) {
      const rows = indices.map((i) => train.examples[i]);
      const logits = forward(rows);
      // single-label classification's loss is cross-entropy, which label smoothing generalizes
      const loss = o.labelSmoothing ? labelSmoothedCrossEntropy(logits, Int32Array.from(rows, (r) => r.label), o.labelSmoothing) : model.loss(logits, labelsOf(rows));
      return { loss, items: rows.length };
    },
    evaluate: evalSet ? evaluate(evalSet) : null,
    seqLen,
    pretrained: null,
    packed: false,
    counts: { examples: train.examples.length, skipped: 0, truncated: train.truncated, evalExamples: evalSet?.examples.length ?? null },
    dataLog: dataLog(train),
    evalDataLog: evalSet ? dataLog(evalSet) : null,
  };
}

// ---------------------------------------------------------------- img-cls

interface ImageSet {
  /** count·channels·rows·cols in [0, 1]. */
  images: Float32Array;
  labels: Int32Array;
  count: number;
  rows: number;
  cols: number;
  source: string;
}

/**
 * `fashion-mnist:DIR` (the train split, or for evaluation the t10k test split, of the standard
 * gzipped IDX files) or `IMAGES,LABELS` (two IDX files, gzipped or not).
 */
function readImages(spec: string, split: 'train' | 'test', flag: string): ImageSet {
  if (spec.startsWith('fashion-mnist:')) {
    const dir = spec.slice('fashion-mnist:'.length);
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) fail(`${flag} ${spec}: ${dir} is not a folder`);
    const s = loadFashionMnist(dir, split);
    return { ...s, source: `${dir} (${split} split)` };
  }
  const parts = spec.split(',');
  if (parts.length !== 2) fail(`${flag} ${spec}: expected fashion-mnist:DIR or IMAGES,LABELS (two IDX files)`);
  const [imagesFile, labelsFile] = parts;
  const img = readIdx(imagesFile);
  if (img.dims.length !== 3) fail(`${imagesFile}: expected 3 dimensions (count x rows x cols), found ${img.dims.length}`);
  const lab = readIdx(labelsFile);
  if (lab.dims.length !== 1) fail(`${labelsFile}: expected 1 dimension (count), found ${lab.dims.length}`);
  const [count, rows, cols] = img.dims;
  if (lab.dims[0] !== count) fail(`${labelsFile}: ${lab.dims[0]} labels for the ${count} images of ${imagesFile}`);
  const images = Float32Array.from(img.data, (v) => v / 255);
  return { images, labels: Int32Array.from(lab.data), count, rows, cols, source: spec };
}

type ImageModel = CNN | MLP | ViTForImageClassification;

async function prepareImgCls(o: TaskOptions): Promise<PreparedTask> {
  const loaded = loadPretrained(o.model, { log: o.log });
  if (loaded.modelType !== 'vera_cnn' && loaded.modelType !== 'vera_mlp' && loaded.modelType !== 'vit') {
    const hint = loaded.modelType === 'gpt2' ? 'causal-lm' : 'seq-cls';
    fail(`${o.model}: model_type "${loaded.modelType}" is not an image classifier; --task img-cls trains vera_cnn, vera_mlp or vit (use --task ${hint})`);
  }
  const model: ImageModel = loaded.model;
  const numClasses = model.modelType === 'vit' ? model.config.numLabels : model.config.numClasses;
  if (o.seqLen !== undefined) fail('--seq-len is for text tasks, not --task img-cls');

  const train = readImages(o.data, 'train', '--data');
  const evalSet = o.evalData !== undefined ? readImages(o.evalData, 'test', '--eval-data') : null;
  for (const set of [train, evalSet]) {
    if (!set) continue;
    const bad = set.labels.findIndex((l) => l < 0 || l >= numClasses);
    if (bad >= 0) fail(`${set.source}: label ${set.labels[bad]} of image ${bad} is outside the model's ${numClasses} classes`);
    if (model.modelType === 'vera_cnn' && (set.rows !== 28 || set.cols !== 28)) fail(`${set.source}: images are ${set.rows}x${set.cols}; vera_cnn takes 28x28`);
    if (model.modelType === 'vera_mlp' && set.rows * set.cols !== model.config.inputSize) fail(`${set.source}: images have ${set.rows * set.cols} pixels; the MLP's input_size is ${model.config.inputSize}`);
    if (model.modelType === 'vit' && (set.rows !== model.config.imageSize || set.cols !== model.config.imageSize)) {
      fail(`${set.source}: images are ${set.rows}x${set.cols}; the ViT's image_size is ${model.config.imageSize} (images are not resized)`);
    }
  }

  /** The model's input for images `indices` of `set`: (N, 1, H, W), (N, H·W), or (N, C, H, W) with the grey channel repeated for ViT. */
  const input = (set: ImageSet, indices: readonly number[]): Tensor => {
    const px = set.rows * set.cols;
    const channels = model.modelType === 'vit' ? model.config.numChannels : 1;
    const x = new Float32Array(indices.length * channels * px);
    indices.forEach((idx, n) => {
      const image = set.images.subarray(idx * px, (idx + 1) * px);
      for (let ch = 0; ch < channels; ch++) x.set(image, (n * channels + ch) * px);
    });
    return model.modelType === 'vera_mlp' ? Tensor.fromArray(x, [indices.length, px]) : Tensor.fromArray(x, [indices.length, channels, set.rows, set.cols]);
  };
  const lossOf = (logits: Tensor, labels: Int32Array): Tensor => (model.modelType === 'vit' ? model.loss(logits, labels) : F.crossEntropy(logits, labels));

  const evaluate = (set: ImageSet) => (): Record<string, number> =>
    inEvalMode(model, () => {
      let lossSum = 0;
      let hits = 0;
      const all = Array.from({ length: set.count }, (_, i) => i);
      for (const idx of sequentialBatches(all, o.batchSize)) {
        const logits = model.forward(input(set, idx));
        const labels = Int32Array.from(idx, (i) => set.labels[i]);
        lossSum += lossOf(logits, labels).item() * idx.length;
        const predicted = F.argmax(logits);
        idx.forEach((_, n) => (hits += predicted[n] === labels[n] ? 1 : 0));
      }
      return { loss: lossSum / set.count, accuracy: hits / set.count };
    });

  const dataLog = (s: ImageSet): Record<string, unknown> => ({ source: s.source, format: 'idx', images: s.count, rows: s.rows, cols: s.cols });
  return {
    model,
    peftTaskType: null,
    headModules: model.modelType === 'vit' ? ['classifier'] : [],
    size: train.count,
    unit: 'samples',
    loss(indices) {
      const logits = model.forward(input(train, indices));
      const labels = Int32Array.from(indices, (i) => train.labels[i]);
      return { loss: o.labelSmoothing ? labelSmoothedCrossEntropy(logits, labels, o.labelSmoothing) : lossOf(logits, labels), items: indices.length };
    },
    evaluate: evalSet ? evaluate(evalSet) : null,
    seqLen: null,
    pretrained: null,
    packed: false,
    counts: { examples: train.count, skipped: 0, truncated: 0, evalExamples: evalSet?.count ?? null },
    dataLog: dataLog(train),
    evalDataLog: evalSet ? dataLog(evalSet) : null,
  };
}
