// `vera train`: finetune a model with a VeRA or LoRA adapter for one of three tasks (causal-lm:
// GPT-2 on JSONL or E2E; seq-cls: BERT/RoBERTa on GLUE; img-cls: CNN/MLP/ViT on IDX images; see
// src/train/tasks/) and write the adapter in PEFT's layout (adapter_config.json +
// adapter_model.safetensors) plus training_log.json; or (--method full, causal-lm) train every
// parameter, from a checkpoint or from config.json alone (--from-scratch), and write a Hugging Face
// model folder. Every flag is checked and every input read before training starts, and the
// output folder is written only at the end, so a run that fails leaves no output behind.
import type { WeightFormat } from '../../tensor/quant.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { GLUE_TASKS, type GlueTask } from '../../data/glue.js';
import { GLUE_METRICS } from '../../data/metrics.js';
import { writeDirAtomic, type WriteDirOptions } from '../../io/atomic.js';
import { checkNoOverlap, OVERWRITE_HELP, prepareOut, preparePlotFile, type PlotTarget } from '../out.js';
import { trainingCurveSpec } from '../plots.js';
import { renderSvg, writeSvg } from '../../plot/index.js';
import { fail } from '../../io/errors.js';
import { pretrainedFiles, readCompanionFiles, weightFilesIn } from '../../models/index.js';
import { Linear, type Module } from '../../nn/index.js';
import {
  ADAPTER_CONFIG,
  ADAPTER_WEIGHTS,
  getPeftModel,
  isModuleToSave,
  isTargetModule,
  TargetModulesError,
  loraConfig,
  veraConfig,
  type BasePeftConfig,
  type BiasMode,
  type PeftModel,
  type ProjectionInit,
  type VeraAblation,
} from '../../peft/index.js';
import { manualSeed, type Tensor } from '../../tensor/index.js';
import { checkCheckpointDir, Trainer, type ParamGroup, type ScheduleKind } from '../../train/index.js';
import { DOUBLE_QUANT_HELP, WEIGHTS_HELP, weightFormat, finiteNumber, intList, nameList, noRepeatNgramSizeOption, nonNegativeInt, nonNegativeNumber, parseTargetModules, positiveInt, positiveNumber, probability } from '../options.js';
import { checkDataFormat, DATA_FORMATS, DEFAULT_FORMAT, DEFAULT_SEQ_LEN, prepareTask, TASKS, type DataFormat, type PreparedTask, type TaskName } from '../../train/tasks/index.js';

export const TRAINING_LOG = 'training_log.json';
/** --save-best: the best evaluation's adapter (or model) in this sub-folder of --out, with best.json ({ step, metric, value }). */
export const BEST_DIR = 'best';
export const BEST_INFO = 'best.json';
/** The E2E generation eval's outputs: one generated text per eval MR, and the references as e2e-metrics reads them. */
export const E2E_PREDICTIONS = 'e2e_predictions.txt';
export const E2E_REFERENCES = 'e2e_references.txt';
/** The E2E generation flags (only with --data-format e2e and --eval-data). */
const GENERATION_FLAGS: [string, string][] = [
  ['numBeams', '--num-beams'],
  ['lengthPenalty', '--length-penalty'],
  ['noRepeatNgramSize', '--no-repeat-ngram-size'],
  ['maxNewTokens', '--max-new-tokens'],
  ['evalLimit', '--eval-limit'],
];

const METHODS = ['vera', 'lora', 'full'] as const;
type Method = (typeof METHODS)[number];
const DEFAULT_LR: Record<Method, number> = { vera: 1e-2, lora: 1e-3, full: 1e-3 };
/** What --method full writes: a Hugging Face model folder. */
const MODEL_CONFIG = 'config.json';
const MODEL_WEIGHTS = 'model.safetensors';
const TORCH_DTYPE = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' } as const;

/** The parsed flags (commander's camelCase names). */
export interface TrainCliOptions {
  model: string;
  /** --weights: the frozen base's linear weights (f32, bf16, int8, nf4). */
  weights?: WeightFormat;
  doubleQuant?: boolean;
  task?: TaskName;
  /** --data or its alias --train. */
  data?: string;
  train?: string;
  dataFormat?: DataFormat;
  glueTask?: GlueTask;
  method: Method;
  /** Required for vera and lora; refused with full. */
  r?: number;
  targetModules?: string;
  fromScratch?: boolean;
  pack?: boolean;
  appendEos?: boolean;
  out: string;
  steps?: number;
  epochs?: number;
  batchSize: number;
  seqLen?: number;
  lr?: number;
  headLr?: number;
  weightDecay: number;
  schedule: ScheduleKind;
  warmupSteps?: number;
  warmupRatio?: number;
  gradAccum: number;
  maxGradNorm: number;
  evalData?: string;
  eval?: string;
  evalEvery?: number;
  /** Stop after this many evaluations without improvement of --early-stopping-metric. */
  earlyStoppingPatience?: number;
  earlyStoppingMetric?: string;
  earlyStoppingThreshold?: number;
  /** --save-best [METRIC]: true (eval_loss) or the metric; the best adapter goes to --out/best/. */
  saveBest?: string | boolean;
  labelSmoothing?: number;
  numBeams: number;
  lengthPenalty: number;
  noRepeatNgramSize: number;
  maxNewTokens?: number;
  evalLimit?: number;
  seed: number;
  dInitial: number;
  projectionPrngKey: number;
  saveProjection: boolean;
  veraDropout: number;
  ablation?: 'only_d' | 'only_b';
  uniqueProjections?: boolean;
  useDora?: boolean;
  projectionInit: ProjectionInit;
  loraAlpha: number;
  loraDropout: number;
  modulesToSave?: string[];
  bias: BiasMode;
  layersToTransform?: number[];
  checkpointDir?: string;
  checkpointEvery?: number;
  resume?: boolean;
  dtype: 'f32' | 'f16' | 'bf16';
  quiet?: boolean;
  json?: boolean;
  overwrite?: boolean;
  /** --plot: an SVG of the loss curve. */
  plot?: string;
}

/** The figures printed at the end (and, with --json, the one object on stdout). */
export interface TrainSummary {
  task: TaskName;
  method: Method;
  steps: number;
  epochs: number;
  trainLoss: number;
  evalLoss: number | null;
  evalPerplexity: number | null;
  /** Next-token accuracy (causal-lm) or classification accuracy on the eval data. */
  evalAccuracy: number | null;
  /** Every metric of the last evaluation (eval_loss, eval_accuracy, eval_f1, eval_matthews_correlation, eval_pearson, eval_spearmanr, …). */
  evalMetrics: Record<string, number> | null;
  /** Tokens (causal-lm) or samples trained on in this run, and per second. */
  unit: 'tokens' | 'samples';
  items: number;
  itemsPerSecond: number;
  /** causal-lm: the same as items / itemsPerSecond; null for the other tasks. */
  tokens: number | null;
  tokensPerSecond: number | null;
  seconds: number;
  sequences: number;
  skippedSequences: number;
  truncatedSequences: number;
  evalSequences: number | null;
  /** The E2E generation eval (causal-lm, --data-format e2e, with eval data); null otherwise. */
  e2e: { bleu: number; nist: number; rougeL: number; cider: number; mrs: number; predictions: string; numBeams: number; lengthPenalty: number; noRepeatNgramSize: number; maxNewTokens: number; evalLimit: number | null } | null;
  /** --pack: the training and eval examples are blocks of --seq-len tokens. */
  packed: boolean;
  trainableParams: number;
  allParams: number;
  /** The output folder (--out): the adapter, or with --method full the model. */
  adapter: string;
  /** Bytes of its weights file (adapter_model.safetensors, or model.safetensors with --method full). */
  adapterBytes: number;
  resumedFromStep: number | null;
  /** The run ended before --steps because --early-stopping-patience evaluations in a row did not improve. */
  stoppedEarly: boolean;
  /** --save-best: the best evaluation and the folder holding its adapter (--out/best); null without the flag. */
  best: { metric: string; value: number; step: number; dir: string } | null;
}

/** An eval metric name as the task's evaluation gives it, with or without the eval_ prefix. */
function metricName(value: string): string {
  if (!/^[a-z][a-z0-9_]*$/.test(value)) throw new InvalidArgumentError('must be a metric name such as eval_loss or accuracy');
  return value.startsWith('eval_') ? value : `eval_${value}`;
}

/** The metrics each task's evaluation gives during training (the E2E text metrics come after it). */
function taskMetrics(task: TaskName, glueTask: GlueTask | undefined): string[] {
  const names = task === 'causal-lm' ? ['loss', 'perplexity', 'accuracy'] : task === 'img-cls' ? ['loss', 'accuracy'] : ['loss', ...(glueTask ? GLUE_METRICS[glueTask] : [])];
  return names.map((n) => `eval_${n}`);
}

function fraction(value: string): number {
  const n = finiteNumber(value);
  if (n < 0 || n > 1) throw new InvalidArgumentError('must be in [0, 1]');
  return n;
}

const HELP_AFTER = `
Tasks (--task, default causal-lm) and their data (--data or --train; --eval-data or --eval):
  causal-lm  GPT-2, Llama/Mistral/Qwen2.  --data-format jsonl (default): one JSON object per
             line, each one sequence:
               {"input_ids": [464, 3290, 318]}   token ids in [0, vocab_size)
               {"text": "The cat sat."}          tokenized with the model folder's tokenizer.json
             Empty lines are skipped; sequences with fewer than 2 tokens are skipped.
             Each "text" line ends with the model's eos id by default (per line, so the model
             learns to stop; a line cut at --seq-len gets none; none when config.json has no
             eos_token_id); "input_ids" lines are taken as given. --append-eos: eos after every
             line, "input_ids" too; --no-append-eos: after none. Lines longer than --seq-len are
             cut, and their count is printed.
             --pack: instead of one padded sequence per line, the eos id after each line, every
             line concatenated, and cut into blocks of exactly --seq-len tokens; the last partial
             block is dropped (transformers' run_clm group_texts). --eval-data is packed too.
             Both need an eos_token_id in config.json.
             --data-format e2e: the E2E NLG CSV (columns mr, ref): each row is "MR ||" + " ref" +
             <|endoftext|>, the loss on the reference tokens only.
             Evaluation: loss, perplexity and next-token accuracy; for e2e also beam search
             (--num-beams, --length-penalty, --no-repeat-ngram-size, --max-new-tokens) on each
             eval MR (--eval-limit: the first n), BLEU, NIST, ROUGE-L and CIDEr against its
             references, the texts in <out>/${E2E_PREDICTIONS}.
  seq-cls    BERT / RoBERTa (config.json + model.safetensors + tokenizer.json).  --glue-task
             cola|sst2|mrpc|stsb|qqp|mnli|qnli|rte|wnli, --data/--eval-data the task's GLUE TSV
             files (train.tsv, dev.tsv; MNLI dev_matched.tsv). The head is sized for the task
             (STS-B: 1 output, regression) and trained fully with the adapter (modules_to_save
             classifier, as PEFT's SEQ_CLS); --head-lr gives it its own learning rate.
             Evaluation: loss and the task's GLUE metric (CoLA: Matthews correlation; STS-B:
             Pearson and Spearman; MRPC, QQP: accuracy and F1; the others: accuracy).
  img-cls    vera_cnn / vera_mlp / ViT.  --data fashion-mnist:DIR (the train split of the
             standard IDX files in DIR; as --eval-data, the t10k test split) or IMAGES,LABELS
             (two IDX files). ViT trains its classifier fully too. Evaluation: loss and accuracy.
Sequences are cut to --seq-len tokens (default ${DEFAULT_SEQ_LEN}, or the model's positions if fewer;
GLUE pairs with longest_first truncation). Batches are padded to their longest sequence; padding
is masked out of attention and loss. Each epoch visits the examples in a new random order drawn
from --seed; --epochs E means ceil(E * examples / (batch-size * grad-accum)) optimizer steps
(default: 1 epoch).

--target-modules: a comma list of module names; a name matches a module whose path is the name
or ends with "." + name (c_attn, or attn.c_proj for the attention projection only). A value
with any of * + ? ^ $ ( ) [ ] { } | \\ is instead one regular expression that must match the
whole module path, as PEFT treats a string (e.g. '.*\\.h\\.[01]\\.attn\\.c_attn'). all-linear adapts
every linear layer but the output layer. Without the flag, PEFT's default for the model_type
applies (c_attn for gpt2; query,value for bert/roberta/vit; q_proj,v_proj for the Llama family).

--head-lr: parameters of the --modules-to-save modules (and of the task's head) train in their
own optimizer group with this learning rate (the paper's separate classifier-head lr); the
adapter uses --lr.

Method flags: --d-initial, --projection-prng-key, --no-save-projection, --vera-dropout,
--ablation, --unique-projections and --projection-init are for --method vera; --lora-alpha and
--lora-dropout for --method lora. --r is required for both. --use-dora adds DoRA's magnitude to
either (DoRA for lora, DVoRA for vera).

--method full (causal-lm): every parameter of the model trains (no adapter; a tied embedding is
one parameter, trained once); default --lr ${DEFAULT_LR.full}; --weight-decay applies to the weight matrices
and embeddings, not to biases and norm weights (as the Hugging Face Trainer). The adapter flags
(--r, --target-modules, --modules-to-save, --bias, --layers-to-transform, --head-lr and the
method flags above) are refused. --from-scratch: --model holds config.json (and the tokenizer
files) but no weights; the model is built from config.json with its family's initialization
(Llama: N(0, initializer_range)), drawn from --seed. Example (pretraining):
  vera train --method full --from-scratch --model tiny-llama --data corpus.jsonl --pack \\
    --seq-len 256 --batch-size 16 --epochs 1 --schedule cosine --warmup-ratio 0.05 --out tiny-llama-trained

Output (--out): adapter_config.json + adapter_model.safetensors (PEFT's layout; load with
PeftModel.from_pretrained) and ${TRAINING_LOG}, written when training ends. With --method full:
a Hugging Face model folder: ${MODEL_CONFIG}, ${MODEL_WEIGHTS} (in --dtype; a model loaded from a
checkpoint keeps its tensor names), the --model folder's tokenizer files and
generation_config.json copied unchanged, and ${TRAINING_LOG}; vera generate and vera perplexity
load it (--model OUT). With
--checkpoint-dir the trainer state is saved every --checkpoint-every steps and at the end;
--resume continues from it (same flags) to the adapter (or model) an uninterrupted run would give.

With --eval-data and --eval-every: --early-stopping-patience N ends the run after N evaluations in
a row in which --early-stopping-metric (default eval_loss) did not improve by more than
--early-stopping-threshold (default 0); --out then holds the adapter as it was at that step.
--save-best [METRIC] (default eval_loss; lower is better for a loss or perplexity, higher for the
others) also writes the adapter of the best evaluation to <out>/best/ (the same files, and
best.json: {step, metric, value}); <out> itself keeps the last adapter, and the whole folder is
written at once at the end. Neither combines with --resume.`;

export function registerTrain(program: Command): void {
  program
    .command('train')
    .description('finetune a model with a VeRA or LoRA adapter (causal LM, GLUE sequence classification, image classification) and write the adapter in PEFT layout; or train a causal LM whole (--method full, also from scratch) and write the model')
    .requiredOption('--model <dir>', 'base model folder (config.json + model.safetensors; tokenizer.json for text; --from-scratch: config.json alone)')
    .addOption(new Option('--task <task>', 'what to train (see below)').choices(TASKS).default('causal-lm'))
    .option('--data <file>', 'training data (see below for each task)')
    .addOption(new Option('--train <file>', 'the same as --data').conflicts('data'))
    .addOption(new Option('--data-format <format>', 'format of --data and --eval-data (default: jsonl for causal-lm, glue for seq-cls, idx for img-cls)').choices(DATA_FORMATS))
    .addOption(new Option('--glue-task <task>', 'seq-cls: which GLUE task the TSV files are').choices(GLUE_TASKS))
    .addOption(new Option('--method <method>', 'adapter type, or full: train every parameter of the model (causal-lm)').choices(METHODS).makeOptionMandatory())
    .option('--r <n>', 'rank (VeRA: of the shared random projections; LoRA: of A and B); required for vera and lora', positiveInt)
    .option('--target-modules <names>', "modules to adapt: comma list of names, a regex, or all-linear (default: PEFT's default for the model_type, see below)")
    .option('--weights <format>', WEIGHTS_HELP, weightFormat)
    .option('--double-quant', DOUBLE_QUANT_HELP)
    .option('--from-scratch', '--method full: build the model from --model/config.json with random initialization (seeded by --seed) instead of loading weights')
    .option('--pack', 'causal-lm JSONL: eos after each line, concatenate, cut into --seq-len blocks (see below)')
    .option('--append-eos', "causal-lm JSONL: the model's eos id after every line's tokens (\"input_ids\" lines too); \"text\" lines get it by default")
    .option('--no-append-eos', 'causal-lm JSONL: no eos after "text" lines either')
    .requiredOption('--out <dir>', 'output folder for the adapter (or, with --method full, the model) and training_log.json')
    .addOption(new Option('--steps <n>', 'optimizer steps').argParser(positiveInt).conflicts('epochs'))
    .addOption(new Option('--epochs <n>', 'passes over the data, converted to steps (default 1)').argParser(positiveNumber))
    .option('--batch-size <n>', 'sequences per micro-batch', positiveInt, 8)
    .option('--seq-len <n>', `maximum tokens per sequence (default ${DEFAULT_SEQ_LEN}, at most the model's n_positions)`, positiveInt)
    .option('--lr <x>', `learning rate of the adapter or model (default ${DEFAULT_LR.vera} for vera, ${DEFAULT_LR.lora} for lora, ${DEFAULT_LR.full} for full)`, positiveNumber)
    .option('--head-lr <x>', 'learning rate of the --modules-to-save parameters (own optimizer group)', positiveNumber)
    .option('--weight-decay <x>', 'AdamW decoupled weight decay', nonNegativeNumber, 0)
    .addOption(new Option('--schedule <kind>', 'learning-rate schedule').choices(['constant', 'linear', 'cosine']).default('constant'))
    .addOption(new Option('--warmup-steps <n>', 'linear warmup steps (default 0)').argParser(nonNegativeInt).conflicts('warmupRatio'))
    .option('--warmup-ratio <x>', 'warmup as a fraction of the steps (rounded up)', fraction)
    .option('--grad-accum <n>', 'micro-batches per optimizer step', positiveInt, 1)
    .option('--max-grad-norm <x>', 'clip the global gradient norm (0: no clipping)', nonNegativeNumber, 1.0)
    .option('--eval-data <file>', "evaluation data (same format); evaluated at the end with the task's metrics")
    .addOption(new Option('--eval <file>', 'the same as --eval-data').conflicts('evalData'))
    .option('--eval-every <n>', 'also evaluate every n steps (needs --eval-data)', positiveInt)
    .option('--early-stopping-patience <n>', 'stop after n evaluations in a row without improvement of --early-stopping-metric (needs --eval-data and --eval-every)', positiveInt)
    .option('--early-stopping-metric <name>', 'the eval metric early stopping watches (default eval_loss; lower is better for a loss or perplexity, higher for the others)', metricName)
    .option('--early-stopping-threshold <x>', 'the least change that counts as an improvement (default 0)', nonNegativeNumber)
    .option('--save-best [metric]', 'also write the adapter of the best evaluation (default metric eval_loss) to <out>/best/, with best.json (needs --eval-data and --eval-every)', metricName)
    .option('--label-smoothing <x>', "label smoothing ε of the training loss (torch's CrossEntropyLoss(label_smoothing)); classification and causal-lm", fraction)
    .option('--num-beams <n>', 'E2E eval: beams of the beam search generating each MR (1 = greedy)', positiveInt, 10)
    .option('--length-penalty <x>', 'E2E eval: beam length penalty (score / length^x)', finiteNumber, 0.9)
    .addOption(noRepeatNgramSizeOption(4, 'E2E eval: never repeat an n-gram (0 = off)'))
    .option('--max-new-tokens <n>', "E2E eval: tokens generated per MR at most (default 64, or what the model's context leaves after the longest prompt)", positiveInt)
    .option('--eval-limit <n>', 'E2E eval: generate for the first n MRs of the eval file only', positiveInt)
    .option('--seed <n>', 'seed for batch order, dropout, LoRA init and --from-scratch init', nonNegativeInt, 42)
    .option('--d-initial <x>', 'VeRA: initial value of every λd entry', finiteNumber, 0.1)
    .option('--projection-prng-key <n>', 'VeRA: seed of the shared random projections A and B', nonNegativeInt, 0)
    .option('--no-save-projection', 'VeRA: leave A and B out of the adapter file (regenerated from the key on load)')
    .option('--vera-dropout <p>', 'VeRA: dropout on the adapter input', probability, 0)
    .addOption(new Option('--ablation <which>', 'VeRA: train only λd (λb fixed at 1) or only λb (λd fixed at 1)').choices(['only_d', 'only_b']))
    .option('--unique-projections', 'VeRA: one random pair per layer instead of one shared pair')
    .addOption(new Option('--projection-init <init>', 'VeRA: distribution of A and B').choices(['kaiming_uniform', 'kaiming_normal', 'uniform']).default('kaiming_uniform'))
    .option('--use-dora', 'DoRA (--method lora) or DVoRA (--method vera): also train a magnitude per output row (use_dora; PEFT cannot load DVoRA)')
    .option('--lora-alpha <x>', 'LoRA: scaling numerator (scaling = alpha / r)', positiveNumber, 8)
    .option('--lora-dropout <p>', 'LoRA: dropout on the adapter input', probability, 0)
    .option('--modules-to-save <names>', 'modules trained fully and saved with the adapter (e.g. a head), comma list', nameList)
    .addOption(new Option('--bias <mode>', 'which biases to train').choices(['none', 'all', 'vera_only', 'lora_only']).default('none'))
    .option('--layers-to-transform <list>', 'adapt only these layer indices, comma list (with a list of --target-modules names)', intList)
    .option('--checkpoint-dir <dir>', 'save the trainer state here (resumable)')
    .option('--checkpoint-every <n>', 'checkpoint every n steps (and at the end); needs --checkpoint-dir', positiveInt)
    .option('--resume', 'continue from the checkpoint in --checkpoint-dir')
    .addOption(new Option('--dtype <dtype>', 'storage dtype of the saved adapter (--method full: of the model)').choices(['f32', 'f16', 'bf16']).default('f32'))
    .option('--overwrite', OVERWRITE_HELP)
    .option('--plot <file>', 'draw the loss curve (train loss per logged step, eval loss and metrics where evaluated) into this SVG file; inside --out it is written with the adapter')
    .option('--quiet', 'no progress and no messages; only errors (and the --json object)')
    .option('--json', 'print one JSON object with the results on stdout instead of the summary')
    .addHelpText('after', HELP_AFTER)
    .action(async (o: TrainCliOptions, cmd: Command) => {
      const given = (key: string): boolean => cmd.getOptionValueSource(key) === 'cli';
      await runTrain(o, given);
    });
}

// ---------------------------------------------------------------- flag checks

const VERA_ONLY: [string, string][] = [
  ['dInitial', '--d-initial'],
  ['projectionPrngKey', '--projection-prng-key'],
  ['saveProjection', '--no-save-projection'],
  ['veraDropout', '--vera-dropout'],
  ['ablation', '--ablation'],
  ['uniqueProjections', '--unique-projections'],
  ['projectionInit', '--projection-init'],
];
const LORA_ONLY: [string, string][] = [
  ['loraAlpha', '--lora-alpha'],
  ['loraDropout', '--lora-dropout'],
];

/** The flags after aliases (--train, --eval) and per-task defaults are resolved. */
interface ResolvedFlags {
  task: TaskName;
  data: string;
  evalData: string | undefined;
  dataFormat: DataFormat;
  targets: string[] | string | null;
  /** How --out is written (create, or replace with --overwrite). */
  write: WriteDirOptions;
  /** Where --plot goes (a file of its own, or a file of --out). */
  plot: PlotTarget | undefined;
}

/** Flags of the adapter methods, refused with --method full (every parameter trains, nothing is adapted). */
const ADAPTER_ONLY: [string, string][] = [
  ['r', '--r'],
  ['targetModules', '--target-modules'],
  ['modulesToSave', '--modules-to-save'],
  ['bias', '--bias'],
  ['layersToTransform', '--layers-to-transform'],
  ['headLr', '--head-lr'],
  ['useDora', '--use-dora'],
  ...VERA_ONLY,
  ...LORA_ONLY,
];

function checkFlags(o: TrainCliOptions, given: (key: string) => boolean): ResolvedFlags {
  const task = o.task ?? 'causal-lm';
  if (o.method === 'full') {
    if (o.weights !== undefined && o.weights !== 'f32') fail(`--weights ${o.weights} freezes the base's linear weights; --method full trains them (use --method vera or lora)`);
    if (task !== 'causal-lm') fail(`--method full is for --task causal-lm; --task ${task} trains an adapter (--method vera or lora)`);
    for (const [key, flag] of ADAPTER_ONLY) if (given(key)) fail(`${flag} is for --method vera or lora; --method full trains every parameter of the model`);
  } else {
    const wrong = o.method === 'vera' ? LORA_ONLY : VERA_ONLY;
    for (const [key, flag] of wrong) if (given(key)) fail(`${flag} applies to --method ${o.method === 'vera' ? 'lora' : 'vera'}, not --method ${o.method}`);
    if (o.r === undefined) fail(`--r is required with --method ${o.method}: the rank`);
    if (o.fromScratch) fail('--from-scratch is for --method full (an adapter trains on pretrained weights)');
  }
  if (o.method === 'vera' && o.bias === 'lora_only') fail('--bias lora_only is for --method lora (use vera_only)');
  if (o.method === 'lora' && o.bias === 'vera_only') fail('--bias vera_only is for --method vera (use lora_only)');
  if (o.method === 'full') {
    // a folder with weights and --from-scratch could mean either; one without them needs the flag
    const weights = weightFilesIn(o.model);
    if (o.fromScratch && weights.length > 0) fail(`--from-scratch: ${o.model} holds weights (${weights.join(', ')}); drop --from-scratch to train from them, or give a folder with config.json alone`);
    if (!o.fromScratch && weights.length === 0 && fs.existsSync(path.join(o.model, 'config.json'))) {
      fail(`${o.model}: no model.safetensors or model.safetensors.index.json found (give --from-scratch to initialize the model from config.json)`);
    }
  }
  const data = o.data ?? o.train;
  if (data === undefined) fail('--data (or --train) is required: the training data');
  const evalData = o.evalData ?? o.eval;
  const dataFormat = o.dataFormat ?? DEFAULT_FORMAT[task];
  checkDataFormat(task, dataFormat);
  for (const [on, flag] of [[o.pack, '--pack'], [o.appendEos, '--append-eos']] as const) {
    if (!on) continue;
    if (task !== 'causal-lm') fail(`${flag} is for --task causal-lm`);
    if (dataFormat !== 'jsonl') fail(`${flag} is for --data-format jsonl (E2E rows already end with eos)`);
  }
  if (o.glueTask !== undefined && task !== 'seq-cls') fail(`--glue-task is for --task seq-cls, not --task ${task}`);
  if (o.evalEvery !== undefined && evalData === undefined) fail('--eval-every needs --eval-data');
  checkBestFlags(o, task, evalData);
  const generationEval = task === 'causal-lm' && dataFormat === 'e2e' && evalData !== undefined;
  for (const [key, flag] of GENERATION_FLAGS) {
    if (given(key) && !generationEval) fail(`${flag} is for the E2E generation eval (--task causal-lm --data-format e2e with --eval-data)`);
  }
  if (o.checkpointEvery !== undefined && o.checkpointDir === undefined) fail('--checkpoint-every needs --checkpoint-dir');
  if (o.resume && o.checkpointDir === undefined) fail('--resume needs --checkpoint-dir (the folder holding the checkpoint)');
  const targets = o.targetModules === undefined ? null : parseTargetModules(o.targetModules);
  if (typeof targets === 'string' && o.layersToTransform !== undefined) {
    fail('--layers-to-transform needs --target-modules as a list of names, not a regex (put the layer numbers in the regex)');
  }
  const inputs = [['--model', o.model], ['--data', data], ['--eval-data', evalData]] as const;
  const write = prepareOut('--out', o.out, inputs, o.overwrite === true);
  if (o.checkpointDir !== undefined) {
    // the checkpoint folder is replaced whole at each save: it must not overlap an input or --out
    checkNoOverlap('--checkpoint-dir', o.checkpointDir, [...inputs, ['--out', o.out]]);
    checkCheckpointDir(o.checkpointDir, `--checkpoint-dir ${o.checkpointDir}`);
  }
  if (task !== 'img-cls') {
    for (const file of [data, evalData]) {
      if (file === undefined) continue;
      if (!fs.existsSync(file)) fail(`${file}: not found`);
      if (fs.statSync(file).isDirectory()) fail(`${file}: is a folder, expected a ${dataFormat === 'jsonl' ? 'JSONL' : dataFormat === 'e2e' ? 'CSV' : 'TSV'} file`);
    }
  }
  const plot = o.plot === undefined ? undefined : preparePlotFile('--plot', o.plot, [...inputs, ['--checkpoint-dir', o.checkpointDir]], o.overwrite === true, { flag: '--out', dir: o.out });
  return { task, data, evalData, dataFormat, targets, write, plot };
}

/** --early-stopping-* and --save-best: they act on evaluations during the run, so they need --eval-data and --eval-every. */
function checkBestFlags(o: TrainCliOptions, task: TaskName, evalData: string | undefined): void {
  if (o.earlyStoppingPatience === undefined) {
    if (o.earlyStoppingMetric !== undefined) fail('--early-stopping-metric needs --early-stopping-patience');
    if (o.earlyStoppingThreshold !== undefined) fail('--early-stopping-threshold needs --early-stopping-patience');
  }
  const uses: [string, string | undefined][] = [];
  if (o.earlyStoppingPatience !== undefined) uses.push(['--early-stopping-patience', o.earlyStoppingMetric ?? 'eval_loss']);
  if (o.saveBest !== undefined && o.saveBest !== false) uses.push(['--save-best', typeof o.saveBest === 'string' ? o.saveBest : 'eval_loss']);
  for (const [flag, metric] of uses) {
    if (evalData === undefined) fail(`${flag} needs --eval-data (it acts on the evaluations)`);
    if (o.evalEvery === undefined) fail(`${flag} needs --eval-every (one evaluation at the end leaves nothing to compare)`);
    if (o.resume) fail(`${flag} cannot be combined with --resume (the checkpoint does not hold the best evaluation so far)`);
    const known = taskMetrics(task, o.glueTask);
    if (metric !== undefined && !known.includes(metric)) fail(`${flag}: --task ${task} evaluates ${known.join(', ')}, not ${metric}`);
  }
}

// ---------------------------------------------------------------- the command

export async function runTrain(o: TrainCliOptions, given: (key: string) => boolean = () => false): Promise<TrainSummary> {
  const flags = checkFlags(o, given);
  const { task: taskName, targets } = flags;
  const log = (line: string): void => {
    if (!o.quiet) process.stderr.write(`${line}\n`);
  };

  // dropout layers take their generator when built: seed it first so runs reproduce
  manualSeed(o.seed);
  const task: PreparedTask = await prepareTask({
    task: taskName, model: o.model, data: flags.data, evalData: flags.evalData, dataFormat: flags.dataFormat, glueTask: o.glueTask, seqLen: o.seqLen, batchSize: o.batchSize, log,
    labelSmoothing: o.labelSmoothing,
    generation: { numBeams: o.numBeams, lengthPenalty: o.lengthPenalty, noRepeatNgramSize: o.noRepeatNgramSize, maxNewTokens: o.maxNewTokens, limit: o.evalLimit },
    // full training needs float32 weights: a bitsandbytes folder is dequantized for it
    weights: o.method === 'full' ? 'f32' : o.weights, doubleQuant: o.doubleQuant,
    fromScratch: o.fromScratch, initSeed: o.seed, pack: o.pack, appendEos: o.appendEos === undefined ? undefined : o.appendEos ? 'all' : 'none',
  });

  // ---- what trains: an adapter (and the task's head, PEFT's SEQ_CLS classifier, fully beside it), or with --method full the whole model
  const lr = o.lr ?? DEFAULT_LR[o.method];
  const trainee = o.method === 'full' ? fullTrainee(o, task, lr) : adapterTrainee(o, task, targets, lr);
  const { groups, counts } = trainee;

  // ---- training: the library's Trainer over the prepared task
  // --save-best keeps the best evaluation's files in memory (an adapter is small); they are written
  // into --out/best/ with everything else, in the one atomic write at the end
  const bestMetric = o.saveBest === undefined || o.saveBest === false ? null : typeof o.saveBest === 'string' ? o.saveBest : 'eval_loss';
  const lowerIsBetter = (m: string): boolean => /(loss|perplexity)$/.test(m);
  const kept: { best: { value: number; step: number; files: Record<string, Uint8Array | string> } | null } = { best: null };
  const onEval = (metrics: Record<string, number>, step: number): void => {
    if (bestMetric === null) return;
    const v = metrics[bestMetric];
    if (v === undefined || Number.isNaN(v)) return;
    const b = kept.best;
    if (b === null || (lowerIsBetter(bestMetric) ? v < b.value : v > b.value)) kept.best = { value: v, step, files: trainee.files() };
  };
  const trainer = new Trainer({
    model: trainee.model,
    task,
    callbacks: { onEval },
    ...(o.earlyStoppingPatience === undefined
      ? {}
      : { earlyStopping: { metric: o.earlyStoppingMetric ?? 'eval_loss', patience: o.earlyStoppingPatience, threshold: o.earlyStoppingThreshold ?? 0 } }),
    args: {
      steps: o.steps,
      epochs: o.epochs,
      batchSize: o.batchSize,
      weightDecay: o.weightDecay,
      paramGroups: groups.map((g) => ({ name: g.name, lr: g.lr, ...(g.weightDecay === undefined ? {} : { weightDecay: g.weightDecay }), params: g.names.map((n, i): [string, Tensor] => [n, g.params[i]]) })),
      schedule: o.schedule,
      warmupSteps: o.warmupSteps,
      warmupRatio: o.warmupRatio,
      gradAccumulation: o.gradAccum,
      maxGradNorm: o.maxGradNorm > 0 ? o.maxGradNorm : null,
      evalEvery: o.evalEvery ?? 0,
      seed: o.seed,
      checkpointDir: o.checkpointDir,
      checkpointEvery: o.checkpointEvery ?? 0,
      resume: o.resume ?? false,
      progress: !o.quiet,
      json: o.json,
    },
  });
  const { steps, epochs, warmupSteps } = trainer;
  if (!o.json && !o.quiet) process.stderr.write(`${paramCountLine(counts)}\n`);
  const result = await trainer.train();
  const resumedFromStep = result.resumedFromStep;
  let evalMetrics = result.evalMetrics;
  // the E2E generation eval: beam search for each eval MR, the E2E metrics against its references
  const generated = task.evaluateGeneration?.((done, total) => {
    if (!o.quiet && (done === total || done % 10 === 0)) process.stderr.write(`\rvera: E2E eval: generated ${done}/${total} MRs${done === total ? '\n' : ''}`);
  });
  if (generated) evalMetrics = { ...evalMetrics, eval_bleu: generated.metrics.bleu, eval_nist: generated.metrics.nist, eval_rouge_l: generated.metrics.rouge_l, eval_cider: generated.metrics.cider };
  const evalLoss = evalMetrics?.['eval_loss'] ?? null;

  // a Ctrl-C during the synchronous evaluation is handled here, before anything is written
  await new Promise<void>((resolve) => setImmediate(resolve));

  // ---- output: the adapter, then the log beside it
  // every output file goes into --out in one atomic step, after the log that names them is built
  const outFiles = trainee.files();
  const bestRun = kept.best;
  if (bestMetric !== null && bestRun !== null) {
    for (const [name, data] of Object.entries(bestRun.files)) outFiles[`${BEST_DIR}/${name}`] = data;
    outFiles[`${BEST_DIR}/${BEST_INFO}`] = `${JSON.stringify({ step: bestRun.step, metric: bestMetric, value: bestRun.value }, null, 2)}\n`;
  }
  const adapterBytes = (outFiles[trainee.weightsFile] as Uint8Array).byteLength;
  if (generated) {
    outFiles[E2E_PREDICTIONS] = generated.predictions.map((p) => `${p}\n`).join('');
    // e2e-metrics' reference format: each MR's references one per line, MRs separated by an empty line
    outFiles[E2E_REFERENCES] = generated.groups.map((g) => g.refs.map((r) => `${r}\n`).join('')).join('\n');
  }
  const itemsThisRun = Math.round(result.itemsPerSecond * result.seconds);
  const lm = taskName === 'causal-lm';
  const summary: TrainSummary = {
    task: taskName,
    method: o.method,
    steps: result.steps,
    epochs,
    trainLoss: result.finalLoss,
    evalLoss,
    evalPerplexity: lm && evalLoss !== null ? (evalMetrics?.['eval_perplexity'] ?? Math.exp(evalLoss)) : null,
    evalAccuracy: evalMetrics?.['eval_accuracy'] ?? null,
    evalMetrics,
    unit: task.unit,
    items: itemsThisRun,
    itemsPerSecond: result.itemsPerSecond,
    tokens: lm ? itemsThisRun : null,
    tokensPerSecond: lm ? result.itemsPerSecond : null,
    seconds: result.seconds,
    sequences: task.counts.examples,
    skippedSequences: task.counts.skipped,
    truncatedSequences: task.counts.truncated,
    evalSequences: task.counts.evalExamples,
    packed: task.packed,
    e2e: generated
      ? { bleu: generated.metrics.bleu, nist: generated.metrics.nist, rougeL: generated.metrics.rouge_l, cider: generated.metrics.cider, mrs: generated.predictions.length, predictions: path.join(o.out, E2E_PREDICTIONS), numBeams: o.numBeams, lengthPenalty: o.lengthPenalty, noRepeatNgramSize: o.noRepeatNgramSize, maxNewTokens: generated.maxNewTokens, evalLimit: o.evalLimit ?? null }
      : null,
    trainableParams: counts.trainable,
    allParams: counts.all,
    adapter: o.out,
    adapterBytes,
    resumedFromStep,
    stoppedEarly: result.stoppedEarly,
    best: bestMetric !== null && bestRun !== null ? { metric: bestMetric, value: bestRun.value, step: bestRun.step, dir: path.join(o.out, BEST_DIR) } : null,
  };
  const otherMethodKeys = new Set([...trainee.unusedFlags, ...(generated ? [] : GENERATION_FLAGS)].map(([k]) => k));
  const resolved = { ...o, task: taskName, data: flags.data, evalData: flags.evalData, dataFormat: flags.dataFormat, seqLen: task.seqLen, lr, steps, warmupSteps, ...trainee.resolved };
  const trainingLog = {
    command: 'vera train',
    summary,
    options: Object.fromEntries(Object.entries(resolved).filter(([k, v]) => !otherMethodKeys.has(k) && k !== 'train' && k !== 'eval' && v !== undefined)),
    paramGroups: groups.map((g) => ({ name: g.name, lr: g.lr, params: g.names })),
    data: task.dataLog,
    evalData: task.evalDataLog,
    history: result.history,
  };
  outFiles[TRAINING_LOG] = `${JSON.stringify(trainingLog, jsonNumbers, 2)}\n`;
  // --plot: inside --out it is one more file of the same atomic write; elsewhere written right after
  const plotSvg = flags.plot && (await renderSvg(trainingCurveSpec(result.history, evalMetrics, result.steps, `vera train --method ${o.method} on ${path.basename(path.resolve(o.model))}`)));
  if (flags.plot?.kind === 'in-out' && plotSvg) outFiles[flags.plot.name] = plotSvg;
  writeDirAtomic(o.out, outFiles, flags.write);
  if (flags.plot?.kind === 'file' && plotSvg) writeSvg(flags.plot.file, plotSvg);

  if (o.json) process.stdout.write(`${JSON.stringify(summary, jsonNumbers)}\n`);
  else if (!o.quiet) printSummary(summary, flags.data);
  return summary;
}

/** A training group: its tensors in the optimizer, and their names in checkpoints and the log. */
type NamedGroup = ParamGroup & { name: string; names: string[] };

/** What a run trains and writes: an adapter (vera, lora) or the whole model (full). */
interface Trainee {
  /** What the Trainer trains: the PeftModel, or the model itself. */
  model: Module | PeftModel<Module>;
  groups: NamedGroup[];
  counts: { trainable: number; all: number };
  /** The output files, built after training: the weights and what goes with them (training_log.json is added by the caller). */
  files(): Record<string, Uint8Array | string>;
  /** Which of those files holds the weights (its size is reported). */
  weightsFile: string;
  /** Flags of the other methods, left out of training_log.json's options. */
  unusedFlags: [string, string][];
  /** Option values as resolved for this method, for training_log.json. */
  resolved: Record<string, unknown>;
}

/** PEFT's one-liner: "trainable params: N || all params: M || trainable%: P". */
function paramCountLine({ trainable, all }: { trainable: number; all: number }): string {
  return `trainable params: ${trainable.toLocaleString('en-US')} || all params: ${all.toLocaleString('en-US')} || trainable%: ${((100 * trainable) / all).toFixed(4)}`;
}

/** --method vera / lora: the adapter on the task's model, in PEFT's layout. */
function adapterTrainee(o: TrainCliOptions, task: PreparedTask, targets: string[] | string | null, lr: number): Trainee {
  const model = task.model;
  const r = o.r ?? fail(`--r is required with --method ${o.method}: the rank`); // checkFlags says so first
  const modulesToSave = [...new Set([...(o.modulesToSave ?? []), ...task.headModules])];
  if (o.headLr !== undefined && modulesToSave.length === 0) fail('--head-lr needs --modules-to-save (the modules it applies to)');
  const base: Omit<BasePeftConfig, 'peftType'> = {
    targetModules: targets,
    layersToTransform: o.layersToTransform ?? null,
    layersPattern: null,
    modulesToSave: modulesToSave.length > 0 ? modulesToSave : null,
    bias: o.bias,
    fanInFanOut: false,
    baseModelNameOrPath: o.model,
    taskType: task.peftTaskType,
    inferenceMode: false,
  };
  const linearNames = new Set<string>();
  let fanInFanOut = false;
  for (const [p, m] of model.namedModules()) {
    if (!(m instanceof Linear)) continue;
    linearNames.add(p.slice(p.lastIndexOf('.') + 1));
    if (isTargetModule({ ...base, peftType: 'VERA' }, p)) fanInFanOut ||= m.fanInFanOut;
  }
  base.fanInFanOut = fanInFanOut; // GPT-2's Conv1D stores weights (in, out), as PEFT records it
  if (o.modulesToSave !== undefined) {
    const matched = [...model.namedModules()].some(([p]) => p !== '' && isModuleToSave({ ...base, modulesToSave: o.modulesToSave ?? null, peftType: 'VERA' }, p));
    if (!matched) fail(`--modules-to-save ${o.modulesToSave.join(',')} matched no module of the model`);
  }
  const config =
    o.method === 'vera'
      ? veraConfig({
          ...base,
          r,
          projectionPrngKey: o.projectionPrngKey,
          saveProjection: o.saveProjection,
          veraDropout: o.veraDropout,
          dInitial: o.dInitial,
          ablation: (o.ablation ?? null) as VeraAblation,
          uniqueProjections: o.uniqueProjections ?? false,
          projectionInit: o.projectionInit,
          useDora: o.useDora ?? false,
        })
      : loraConfig({ ...base, r, loraAlpha: o.loraAlpha, loraDropout: o.loraDropout, useDora: o.useDora ?? false });
  manualSeed(o.seed); // LoRA's A is drawn from the global generator
  let peft: PeftModel<Module>;
  try {
    peft = getPeftModel(model, config);
  } catch (e) {
    if (e instanceof TargetModulesError && e.matchedNothing) {
      fail(`--target-modules ${o.targetModules ?? "(the model_type's default)"} matched no linear layer of the model (its linear layers are named ${[...linearNames].join(', ')})`);
    }
    if (e instanceof TargetModulesError) fail(`--target-modules ${o.targetModules ?? "(the model_type's default)"}: ${e.message.replace(/^target_modules:?\s*/, '')}`);
    throw e;
  }

  // ---- optimizer: the adapter at --lr; with --head-lr, the modules_to_save in a group of their own
  const params = peft.trainableParameters();
  // a parameter is the head's when any module above it is saved whole (RoBERTa's classifier.dense.weight)
  const isHead = ([name]: [string, Tensor]): boolean => {
    const parts = name.split('.');
    return parts.slice(0, -1).some((_, i) => isModuleToSave(config, parts.slice(0, i + 1).join('.')));
  };
  const groups: NamedGroup[] = [];
  if (o.headLr !== undefined) {
    const adapter = params.filter((p) => !isHead(p));
    const head = params.filter(isHead);
    if (adapter.length > 0) groups.push({ name: 'adapter', lr, params: adapter.map(([, t]) => t), names: adapter.map(([n]) => n) });
    groups.push({ name: 'head', lr: o.headLr, params: head.map(([, t]) => t), names: head.map(([n]) => n) });
  } else {
    groups.push({ name: 'adapter', lr, params: params.map(([, t]) => t), names: params.map(([n]) => n) });
  }
  return {
    model: peft,
    groups,
    counts: peft.getNbTrainableParameters(),
    files: () => peft.adapterFiles({ dtype: o.dtype }),
    weightsFile: ADAPTER_WEIGHTS,
    unusedFlags: o.method === 'vera' ? LORA_ONLY : VERA_ONLY,
    resolved: { targetModules: targets, modulesToSave },
  };
}

/**
 * --method full: every parameter of the causal LM trains, and the output is a Hugging Face model
 * folder (config.json, model.safetensors, the --model folder's tokenizer files).
 */
function fullTrainee(o: TrainCliOptions, task: PreparedTask, lr: number): Trainee {
  const source = task.pretrained;
  if (source === null) fail(`--method full is for --task causal-lm`); // checkFlags says so first
  const model = task.model;
  // loading leaves every parameter trainable; made explicit, as nothing else may hold a gradient.
  // A tied embedding (lm_head.weight = embed_tokens.weight) is one tensor: listed, counted and
  // updated once, its gradient the sum of both uses.
  model.requiresGrad_(true);
  const params = model.namedParameters();
  const group = (name: string, list: [string, Tensor][], weightDecay?: number): NamedGroup => ({
    name, lr, params: list.map(([, t]) => t), names: list.map(([n]) => n), ...(weightDecay === undefined ? {} : { weightDecay }),
  });
  // as the Hugging Face Trainer: biases and norm weights (1-D) get no weight decay
  const decayed = params.filter(([, t]) => t.ndim >= 2);
  const notDecayed = params.filter(([, t]) => t.ndim < 2);
  const groups = o.weightDecay > 0 && decayed.length > 0 && notDecayed.length > 0 ? [group('model', decayed), group('no_decay', notDecayed, 0)] : [group('model', params)];
  const size = params.reduce((n, [, t]) => n + t.size, 0);
  const dtype = o.dtype.toUpperCase() as 'F32' | 'F16' | 'BF16';
  return {
    model,
    groups,
    counts: { trainable: size, all: size },
    files: () => {
      // config.json as read (or as given, from scratch), with the dtype the weights are stored in
      const configJson = { ...source.configJson, torch_dtype: TORCH_DTYPE[o.dtype], ...('dtype' in source.configJson ? { dtype: TORCH_DTYPE[o.dtype] } : {}) };
      const weights = pretrainedFiles(model, configJson, source.checkpoint ?? undefined, { dtype, label: `--out ${o.out}` });
      return { ...readCompanionFiles(o.model), ...weights };
    },
    weightsFile: MODEL_WEIGHTS,
    unusedFlags: ADAPTER_ONLY,
    resolved: {},
  };
}

/** NaN and ±Infinity are not JSON: write them as null. */
function jsonNumbers(_key: string, value: unknown): unknown {
  return typeof value === 'number' && !Number.isFinite(value) ? null : value;
}

function fmt(x: number | null, digits = 4): string {
  return x === null || !Number.isFinite(x) ? '--' : x.toFixed(digits);
}

const METRIC_LABELS: Record<string, string> = {
  eval_accuracy: 'accuracy',
  eval_f1: 'F1',
  eval_matthews_correlation: 'Matthews corr.',
  eval_pearson: 'Pearson',
  eval_spearmanr: 'Spearman',
};

function printSummary(s: TrainSummary, dataFile: string): void {
  const what = s.packed ? 'packed blocks' : s.task === 'causal-lm' ? 'sequences' : 'examples';
  const skipped = s.skippedSequences > 0 ? `; ${s.skippedSequences} ${s.packed ? 'empty lines skipped' : 'skipped as too short'}` : '';
  const resumed = s.resumedFromStep !== null ? `; resumed at step ${s.resumedFromStep}` : '';
  const lines = [
    `steps: ${s.steps} (${s.epochs.toFixed(2)} epochs over ${s.sequences} ${what} of ${dataFile}${skipped}${resumed})`,
    `train loss: ${fmt(s.trainLoss)}`,
  ];
  if (s.evalLoss !== null && s.task === 'causal-lm') {
    lines.push(`eval loss: ${fmt(s.evalLoss)}  perplexity: ${fmt(s.evalPerplexity, 2)}  next-token accuracy: ${s.evalAccuracy === null ? '-' : (100 * s.evalAccuracy).toFixed(1) + '%'}`);
  } else if (s.evalLoss !== null && s.evalMetrics) {
    const metrics = Object.entries(METRIC_LABELS).filter(([k]) => k in s.evalMetrics!).map(([k, label]) => `${label}: ${fmt(s.evalMetrics![k])}`);
    lines.push(`eval loss: ${fmt(s.evalLoss)}  ${metrics.join('  ')}`);
  }
  if (s.e2e) lines.push(`E2E (${s.e2e.mrs} MRs, ${s.e2e.numBeams} beams): BLEU ${(100 * s.e2e.bleu).toFixed(2)}  NIST ${s.e2e.nist.toFixed(4)}  ROUGE-L ${(100 * s.e2e.rougeL).toFixed(2)}  CIDEr ${s.e2e.cider.toFixed(4)}  (texts: ${s.e2e.predictions})`);
  if (s.stoppedEarly) lines.push(`stopped early at step ${s.steps} (no improvement of the early-stopping metric)`);
  if (s.best) lines.push(`best: ${s.best.metric} ${fmt(s.best.value)} at step ${s.best.step} (adapter in ${s.best.dir})`);
  lines.push(`throughput: ${s.itemsPerSecond.toFixed(0)} ${s.unit}/s (${s.items} ${s.unit} in ${s.seconds.toFixed(1)} s)`);
  if (s.method === 'full') lines.push(`model: ${s.adapter} (${MODEL_CONFIG} + ${MODEL_WEIGHTS}, ${s.adapterBytes} bytes; ${s.trainableParams} trainable params)`);
  else lines.push(`adapter: ${s.adapter} (${ADAPTER_CONFIG} + ${ADAPTER_WEIGHTS}, ${s.adapterBytes} bytes; ${s.trainableParams} trainable params)`);
  for (const line of lines) process.stdout.write(`${line}\n`);
}
