// The Trainer: transformers' Trainer in spirit, on top of the step engine in trainer.ts (which owns
// the schedule, accumulation, clipping, evaluation, checkpoints and exact resume). The Trainer adds
// what sits around a run: which parameters train (a PeftModel's trainable ones, or every parameter
// of a plain model), the optimizer, epochs → steps, the batch sampler (and its fast-forward on
// resume), callbacks, early stopping, and saving the best and last adapters.
//
// Data comes in one of two forms: a `task` (examples by index, a loss of a batch of indices, an
// evaluation; what the task builders in ./tasks return), or rows + a collator + a loss function.
// Either way a batch is a list of example indices drawn by an EpochSampler from the run's seed, so
// the batch order, checkpoints and resume are the same for every task.
import { path } from '../io/node.js';
import { EpochSampler, sequentialBatches } from '../data/jsonl.js';
import { readJsonFile, writeDirAtomic } from '../io/atomic.js';
import { fail } from '../io/errors.js';
import { pretrainedFiles } from '../models/index.js';
import type { Module } from '../nn/index.js';
import { PeftModel } from '../peft/index.js';
import { noGrad, type Tensor } from '../tensor/index.js';
import { hasCheckpoint, TRAINER_STATE_FILE } from './checkpoint.js';
import { AdamW, type ParamGroup } from './optim.js';
import { ReplayRng } from './replay-rng.js';
import type { ScheduleKind } from './schedule.js';
import { trainSteps, type HistoryEntry, type StepInfo, type TrainResult } from './trainer.js';
import type { ProgressStream } from './progress.js';

/** What the Trainer needs of a task: examples by index, the loss of a batch of them, an evaluation. */
export interface IndexedTask {
  /** Number of training examples. */
  readonly size: number;
  /** What `items` counts (throughput): 'tokens', 'samples'. */
  readonly unit?: string;
  /** Mean loss of the examples `indices` (the model in train mode) and the items it covers. */
  loss(indices: number[]): { loss: Tensor; items: number };
  /** Eval metrics (loss, and the task's); run under noGrad. Null or absent: no evaluation. */
  evaluate?: (() => Record<string, number>) | null;
}

/** A named optimizer group: its own learning rate (and weight decay), its parameters with their names. */
export interface NamedParamGroup {
  name: string;
  lr: number;
  weightDecay?: number;
  params: [string, Tensor][];
}

export interface TrainingArgs {
  /** Optimizer steps; or give `epochs` (default: 1 epoch). */
  steps?: number;
  /** Passes over the data: ceil(epochs · examples / (batchSize · gradAccumulation)) steps. */
  epochs?: number;
  /** Examples per micro-batch. Default 8. */
  batchSize?: number;
  /** Learning rate of the single group (ignored with paramGroups). Default 1e-3. */
  lr?: number;
  /** AdamW decoupled weight decay. Default 0. */
  weightDecay?: number;
  /** Optimizer groups (e.g. an adapter and a head at their own lrs); default: one group of every trainable parameter at `lr`. */
  paramGroups?: NamedParamGroup[];
  /** Default 'constant'. */
  schedule?: ScheduleKind;
  warmupSteps?: number;
  /** Warmup as a fraction of the steps, rounded up (when warmupSteps is not given). */
  warmupRatio?: number;
  /** Micro-batches per optimizer step. Default 1. */
  gradAccumulation?: number;
  /** Clip the global gradient norm; null or 0: no clipping. Default 1.0 (as the Hugging Face Trainer). */
  maxGradNorm?: number | null;
  /** Evaluate every this many steps (and always at the last step) when there is eval data. */
  evalEvery?: number;
  /** History row (and progress line) every this many steps. Default ≈ steps/50. */
  logEvery?: number;
  /** Batch order, dropout. Default 42. */
  seed?: number;
  /** Where the last adapter (`last/`) and the best one (`best/`, with saveBest) are written. */
  outputDir?: string;
  /** Keep the adapter of the best evaluation: the metric (with or without the eval_ prefix) and its direction (default: lower is better for a loss or perplexity, else higher). */
  saveBest?: { metric: string; greaterIsBetter?: boolean };
  /** Storage dtype of saved adapters. Default 'f32'. */
  saveDtype?: 'f32' | 'f16' | 'bf16';
  /** Trainer-state checkpoints (resumable), every checkpointEvery steps and at the end. */
  checkpointDir?: string;
  checkpointEvery?: number;
  /** Continue from the checkpoint in checkpointDir (a missing or broken checkpoint is an error). */
  resume?: boolean;
  /** Progress on stderr. Default true. */
  progress?: boolean;
  /** Progress as one JSON object per line (on stdout unless progressStream is given). */
  json?: boolean;
  progressStream?: ProgressStream;
}

/** A save the Trainer made: the best or last adapter, or a trainer-state checkpoint. */
export interface SaveEvent {
  kind: 'best' | 'last' | 'checkpoint';
  dir: string;
  step: number;
}

export interface TrainerCallbacks {
  /** After every optimizer step (before its eval callback). */
  onStep?(info: StepInfo): void;
  /** After an evaluation, with its eval_-prefixed metrics. */
  onEval?(metrics: Record<string, number>, step: number): void;
  /** After each save. */
  onSave?(event: SaveEvent): void;
}

/** Stop when `metric` has not improved by more than `threshold` for `patience` evaluations in a row. */
export interface EarlyStoppingOptions {
  metric: string;
  patience: number;
  /** Minimum improvement that counts. Default 0. */
  threshold?: number;
  greaterIsBetter?: boolean;
}

/** Rows, how to batch them, and how to score a batch. */
export interface DatasetInput<M, T, B> {
  task?: undefined;
  /** Training rows (an iterable is read once into an array: batches are drawn at random). */
  trainDataset: readonly T[] | Iterable<T>;
  collator: (rows: readonly T[]) => B;
  /** The batch's scalar mean loss (the model in train mode) and the items it covers (tokens, samples). */
  loss: (model: M, batch: B) => { loss: Tensor; items: number };
  evalDataset?: readonly T[] | Iterable<T>;
  /** Eval metrics on evalDataset (under noGrad, the model in eval mode). Default: {loss}, the items-weighted mean of `loss` over eval batches. */
  computeMetrics?: (model: M, evalDataset: readonly T[]) => Record<string, number>;
  /** What `items` counts. Default 'samples'. */
  unit?: string;
}

export interface TaskInput {
  task: IndexedTask;
}

export type TrainerInit<M extends Module, T = never, B = never> = {
  /** A plain model (every parameter trains) or a PeftModel (its trainable parameters train). */
  model: M | PeftModel<M>;
  args?: TrainingArgs;
  callbacks?: TrainerCallbacks;
  earlyStopping?: EarlyStoppingOptions;
  /** Files of a save (default: a PeftModel's adapter files; a plain model's config.json + model.safetensors by parameter path). */
  saveFiles?: () => Record<string, Uint8Array | string>;
} & (TaskInput | DatasetInput<M, T, B>);

/** What train() returns. */
export interface TrainerLog extends TrainResult {
  /** Epochs the steps amount to. */
  epochs: number;
  /** The metrics of the last evaluation (eval_-prefixed), or null without eval data. */
  evalMetrics: Record<string, number> | null;
  /** saveBest / earlyStopping metric: its best value and step (null when never evaluated). */
  bestMetric: { name: string; value: number; step: number } | null;
  /** The step the run resumed from, or null. */
  resumedFromStep: number | null;
  /** Where the last and best adapters were written (outputDir), or null. */
  lastDir: string | null;
  bestDir: string | null;
}

const withPrefix = (m: string): string => (m.startsWith('eval_') ? m : `eval_${m}`);
/** As transformers: lower is better for a loss (and here a perplexity), higher for anything else. */
const defaultGreater = (m: string): boolean => !/(loss|perplexity)$/.test(m);

export class Trainer<M extends Module, T = never, B = never> {
  readonly model: M;
  readonly peft: PeftModel<M> | null;
  readonly task: IndexedTask;
  readonly optimizer: AdamW;
  /** Trained parameters in the optimizer's order, with their names (checkpoint keys). */
  readonly params: [string, Tensor][];
  readonly groups: NamedParamGroup[];
  readonly steps: number;
  readonly epochs: number;
  readonly warmupSteps: number;
  private readonly args: TrainingArgs;
  private readonly init: TrainerInit<M, T, B>;

  constructor(init: TrainerInit<M, T, B>) {
    this.init = init;
    const args = (this.args = init.args ?? {});
    this.peft = init.model instanceof PeftModel ? init.model : null;
    this.model = init.model instanceof PeftModel ? init.model.model : init.model;
    this.task = init.task !== undefined ? init.task : datasetTask(this.model, init);
    if (!(this.task.size > 0)) fail('Trainer: the training data is empty');

    const batchSize = args.batchSize ?? 8;
    const accum = args.gradAccumulation ?? 1;
    const perStep = batchSize * accum;
    this.epochs = args.steps === undefined ? (args.epochs ?? 1) : (args.steps * perStep) / this.task.size;
    this.steps = args.steps ?? Math.ceil((this.epochs * this.task.size) / perStep);
    this.warmupSteps = args.warmupSteps ?? (args.warmupRatio !== undefined ? Math.ceil(args.warmupRatio * this.steps) : 0);
    if (this.warmupSteps > this.steps) fail(`--warmup-steps ${this.warmupSteps} exceeds the ${this.steps} training steps`);

    if (args.paramGroups) this.groups = args.paramGroups;
    else {
      let params: [string, Tensor][];
      if (this.peft) params = this.peft.trainableParameters();
      else {
        // a plain model trains whole; nothing else may hold a gradient
        this.model.requiresGrad_(true);
        params = this.model.namedParameters();
      }
      this.groups = [{ name: this.peft ? 'adapter' : 'model', lr: args.lr ?? 1e-3, params }];
    }
    this.params = this.groups.flatMap((g) => g.params);
    const optGroups: (ParamGroup & { name: string })[] = this.groups.map((g) => ({
      name: g.name, lr: g.lr, params: g.params.map(([, t]) => t), ...(g.weightDecay === undefined ? {} : { weightDecay: g.weightDecay }),
    }));
    this.optimizer = new AdamW(optGroups, { weightDecay: args.weightDecay ?? 0 });
  }

  /** The files a save writes. */
  files(): Record<string, Uint8Array | string> {
    if (this.init.saveFiles) return this.init.saveFiles();
    if (this.peft) return this.peft.adapterFiles({ dtype: this.args.saveDtype ?? 'f32' });
    const dtype = (this.args.saveDtype ?? 'f32').toUpperCase() as 'F32' | 'F16' | 'BF16';
    return pretrainedFiles(this.model, {}, undefined, { dtype });
  }

  /** Runs the training and returns its log; writes last/ (and best/) under outputDir when set. */
  async train(): Promise<TrainerLog> {
    const a = this.args;
    const { callbacks = {}, earlyStopping } = this.init;
    const seed = a.seed ?? 42;
    const accum = a.gradAccumulation ?? 1;
    const sampler = new EpochSampler(this.task.size, a.batchSize ?? 8);
    let resumedFromStep: number | null = null;
    if (a.resume && a.checkpointDir !== undefined && hasCheckpoint(a.checkpointDir)) resumedFromStep = fastForward(sampler, a.checkpointDir, seed, accum);

    const best = a.saveBest ?? (earlyStopping ? { metric: earlyStopping.metric, greaterIsBetter: earlyStopping.greaterIsBetter } : null);
    const bestName = best ? withPrefix(best.metric) : null;
    const greater = best ? (best.greaterIsBetter ?? defaultGreater(bestName!)) : true;
    const esGreater = earlyStopping ? (earlyStopping.greaterIsBetter ?? defaultGreater(withPrefix(earlyStopping.metric))) : true;
    let bestMetric: TrainerLog['bestMetric'] = null;
    let esBest: number | null = null;
    let esBad = 0;
    const outputDir = a.outputDir ?? null;
    const bestDir = outputDir !== null && a.saveBest ? path.join(outputDir, 'best') : null;

    const onMetrics = (metrics: Record<string, number>, step: number): boolean => {
      if (bestName !== null) {
        const v = metrics[bestName];
        if (v === undefined) fail(`Trainer: the evaluation has no metric '${bestName}' (it has ${Object.keys(metrics).join(', ')})`);
        if (bestMetric === null || (greater ? v > bestMetric.value : v < bestMetric.value)) {
          bestMetric = { name: bestName, value: v, step };
          if (bestDir !== null) {
            writeDirAtomic(bestDir, { ...this.files(), 'best.json': `${JSON.stringify({ step, metric: bestName, value: v }, null, 2)}\n` }, { mode: 'replace' });
            callbacks.onSave?.({ kind: 'best', dir: bestDir, step });
          }
        }
      }
      if (!earlyStopping) return false;
      const v = metrics[withPrefix(earlyStopping.metric)];
      if (v === undefined) fail(`Trainer: early stopping on '${earlyStopping.metric}', which the evaluation does not give (it has ${Object.keys(metrics).join(', ')})`);
      const threshold = earlyStopping.threshold ?? 0;
      if (esBest === null || (esGreater ? v - esBest > threshold : esBest - v > threshold)) {
        esBest = v;
        esBad = 0;
        return false;
      }
      esBad++;
      return esBad >= earlyStopping.patience;
    };

    this.model.train();
    const run = trainSteps(this.params, this.optimizer, { nextBatch: (rng) => sampler.next(rng), loss: (indices) => this.task.loss(indices), evaluate: this.task.evaluate ?? undefined }, {
      steps: this.steps,
      gradAccumulation: accum,
      schedule: a.schedule,
      warmupSteps: this.warmupSteps,
      maxGradNorm: a.maxGradNorm === undefined ? 1.0 : a.maxGradNorm === 0 ? null : a.maxGradNorm,
      evalEvery: a.evalEvery ?? 0,
      logEvery: a.logEvery,
      seed,
      checkpointDir: a.checkpointDir ?? null,
      checkpointEvery: a.checkpointEvery ?? 0,
      resume: a.resume ?? false,
      progress: a.progress ?? true,
      progressJson: a.json,
      progressStream: a.progressStream ?? (a.json ? process.stdout : undefined),
      throughputUnit: this.task.unit ?? 'samples',
    });
    let result: TrainResult;
    let stop = false;
    for (;;) {
      const r = run.next(stop);
      if (r.done) {
        result = r.value;
        break;
      }
      const info = r.value;
      callbacks.onStep?.(info);
      if (info.metrics) {
        callbacks.onEval?.(info.metrics, info.step);
        stop = onMetrics(info.metrics, info.step);
      }
      if (info.checkpointSaved && a.checkpointDir !== undefined) callbacks.onSave?.({ kind: 'checkpoint', dir: a.checkpointDir, step: info.step });
      // lets signal handlers (Ctrl-C) and timers run between steps
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    this.model.eval();

    // the engine evaluates at the last step; a resumed run that had nothing left to do evaluates here
    let evalMetrics: Record<string, number> | null = null;
    if (this.task.evaluate) {
      const last = result.history.at(-1);
      if (last && last.step === result.steps && hasEval(last)) {
        evalMetrics = Object.fromEntries(Object.entries(last).filter(([k, v]) => k.startsWith('eval_') && typeof v === 'number')) as Record<string, number>;
      } else {
        const raw = noGrad(() => this.task.evaluate!());
        evalMetrics = Object.fromEntries(Object.entries(raw).map(([k, v]) => [`eval_${k}`, v]));
        callbacks.onEval?.(evalMetrics, result.steps);
        onMetrics(evalMetrics, result.steps);
      }
    }
    let lastDir: string | null = null;
    if (outputDir !== null) {
      lastDir = path.join(outputDir, 'last');
      const log = { steps: result.steps, finalLoss: result.finalLoss, evalMetrics, bestMetric, stoppedEarly: result.stoppedEarly, history: result.history };
      writeDirAtomic(lastDir, { ...this.files(), 'training_log.json': `${JSON.stringify(log, finiteOrNull, 2)}\n` }, { mode: 'replace' });
      callbacks.onSave?.({ kind: 'last', dir: lastDir, step: result.steps });
    }
    return { ...result, epochs: this.epochs, evalMetrics, bestMetric, resumedFromStep, lastDir, bestDir: bestMetric !== null ? bestDir : null };
  }
}

const hasEval = (h: HistoryEntry): boolean => Object.keys(h).some((k) => k.startsWith('eval_'));

function finiteOrNull(_key: string, value: unknown): unknown {
  return typeof value === 'number' && !Number.isFinite(value) ? null : value;
}

/** An IndexedTask over rows: the sampler's indices pick rows, the collator batches them. */
function datasetTask<M extends Module, T, B>(model: M, d: DatasetInput<M, T, B>): IndexedTask {
  const rows: readonly T[] = Array.isArray(d.trainDataset) ? (d.trainDataset as readonly T[]) : [...d.trainDataset];
  const evalRows: readonly T[] | null = d.evalDataset === undefined ? null : Array.isArray(d.evalDataset) ? (d.evalDataset as readonly T[]) : [...d.evalDataset];
  const evaluate = (): Record<string, number> => {
    const wasTraining = model.training;
    model.eval();
    try {
      if (d.computeMetrics) return d.computeMetrics(model, evalRows!);
      let sum = 0;
      let items = 0;
      for (const group of sequentialBatches(evalRows!, 8)) {
        const out = d.loss(model, d.collator(group));
        sum += out.loss.item() * out.items;
        items += out.items;
      }
      return { loss: sum / items };
    } finally {
      model.train(wasTraining);
    }
  };
  return {
    size: rows.length,
    unit: d.unit ?? 'samples',
    loss: (indices) => d.loss(model, d.collator(indices.map((i) => rows[i]))),
    evaluate: evalRows ? evaluate : null,
  };
}

/**
 * Puts a fresh sampler where the checkpointed run's was: it draws the batches of the steps already
 * taken from a generator seeded as the engine's, and checks that this makes exactly the draws the
 * checkpoint recorded (different data, batch size or accumulation would not). A checkpoint with a
 * different seed or accumulation is left to the engine, which names the mismatch.
 */
export function fastForward(sampler: EpochSampler, dir: string, seed: number, accum: number): number | null {
  const file = path.join(dir, TRAINER_STATE_FILE);
  const state = readJsonFile(file, 'trainer state') as { step?: unknown; seed?: unknown; gradAccumulation?: unknown; rng?: { draws?: unknown } } | null;
  const step = state?.step;
  if (typeof step !== 'number' || !Number.isSafeInteger(step) || step < 0) return null; // the engine reports it
  if (state?.seed !== seed || state?.gradAccumulation !== accum) return step;
  const sim = new ReplayRng(seed);
  sampler.skip(step * accum, sim);
  if (sim.state().draws !== state?.rng?.draws) {
    fail(`${dir}: checkpoint does not match this run's data (it was made with a different --data, --batch-size or --grad-accum)`);
  }
  return step;
}
