// What the task builders share: the task and data-format names, the options of `prepareTask`, and
// `PreparedTask`, which is everything the Trainer needs of a task (its examples by index, the loss
// of a batch of them, the evaluation) plus what a caller writes beside the result (counts, data logs).
//
// A batch is the list of example indices the sampler drew; collation happens in `loss`, so the
// sampler (and so checkpoints and resume) is the same for every task.
import type { WeightFormat } from '../../tensor/quant.js';
import type { E2eGroup } from '../../data/e2e.js';
import type { GlueTask } from '../../data/glue.js';
import { fail } from '../../io/errors.js';
import type { CheckpointInfo, JsonObject } from '../../models/index.js';
import type { Module } from '../../nn/index.js';
import { noGrad, type Tensor } from '../../tensor/index.js';

export const TASKS = ['causal-lm', 'seq-cls', 'img-cls'] as const;
export type TaskName = (typeof TASKS)[number];
export const DATA_FORMATS = ['jsonl', 'e2e', 'glue', 'idx'] as const;
export type DataFormat = (typeof DATA_FORMATS)[number];
export const DEFAULT_FORMAT: Record<TaskName, DataFormat> = { 'causal-lm': 'jsonl', 'seq-cls': 'glue', 'img-cls': 'idx' };
export const FORMATS_OF: Record<TaskName, readonly DataFormat[]> = { 'causal-lm': ['jsonl', 'e2e'], 'seq-cls': ['glue'], 'img-cls': ['idx'] };
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
  /** causal-lm: the format of the frozen base's linear weights (loadPretrained's `weights`). */
  weights?: WeightFormat;
  doubleQuant?: boolean;
  /** causal-lm JSONL: eos after each line, everything concatenated and cut into blocks of seqLen tokens (run_clm's group_texts). */
  pack?: boolean;
  /**
   * causal-lm JSONL without packing: which rows get the eos id after their tokens (before
   * truncation, so a row cut at seqLen gets none). Default 'text': rows of "text" end with eos
   * (the model learns to stop), "input_ids" rows are taken as given.
   */
  appendEos?: AppendEos;
  /** Messages (notices, the count of truncated rows); the CLI prints them on stderr. */
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


/** Runs `fn` under noGrad with the model in eval mode, restoring its mode after. */
export function inEvalMode<T>(model: Module, fn: () => T): T {
  const wasTraining = model.training;
  model.eval();
  try {
    return noGrad(fn);
  } finally {
    model.train(wasTraining);
  }
}

/** Which rows of causal-LM JSONL get the eos id appended: every row, only "text" rows (the default), or none. */
export type AppendEos = 'all' | 'text' | 'none';
