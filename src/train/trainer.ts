// A model-agnostic training loop: it sees trainable tensors, an optimizer and two callbacks (draw a
// micro-batch, compute its loss), and owns everything around them — lr schedule, gradient
// accumulation and clipping, evaluation, progress, checkpoints and exact resumption.
//
// Reproducibility. Batches come from a ReplayRng seeded with `seed`, checkpointed as
// (seed, draw count) and restored by replaying draws. Dropout and anything else drawing from the
// global defaultRng() gets `manualSeed(hash(seed, step))` before every optimizer step instead: its
// draws happen deep inside models and cannot be counted from here, and re-seeding per step makes
// a resumed run draw exactly what the uninterrupted one did. Tasks must therefore keep no sampling
// state of their own: a batch must be a function of the rng draws only.
import { Tensor, F, noGrad, manualSeed, type Rng } from '../tensor/index.js';
import { fail } from '../io/errors.js';
import type { AdamW } from './optim.js';
import { lrMultiplier, SCHEDULE_KINDS, type ScheduleKind } from './schedule.js';
import { clipGradNorm, gradNorm } from './clip.js';
import { ProgressReporter, type ProgressStream } from './progress.js';
import { ReplayRng } from './replay-rng.js';
import { loadCheckpoint, saveCheckpoint, type HistoryEntry, type TrainerState } from './checkpoint.js';

export type { HistoryEntry } from './checkpoint.js';

export interface TrainerOptions {
  /** Optimizer steps (callers convert epochs to steps). */
  steps: number;
  /** Micro-batches per optimizer step; each loss is scaled by 1/n. Default 1. */
  gradAccumulation?: number;
  /** Default 'constant'. */
  schedule?: ScheduleKind;
  warmupSteps?: number;
  /** Clip the global gradient norm to this value when set. */
  maxGradNorm?: number | null;
  /** Evaluate every this many steps; the last step is always evaluated when the task can. */
  evalEvery?: number;
  /** History row (and non-terminal progress line) every this many steps. Default ≈ steps/50. */
  logEvery?: number;
  /** Default 42 (as the Hugging Face Trainer). */
  seed?: number;
  /** Checkpoint directory; without resume, a checkpoint already there is overwritten. */
  checkpointDir?: string | null;
  /** Save every this many steps; the last step is always saved when checkpointDir is set. */
  checkpointEvery?: number;
  /** Continue from checkpointDir (a missing or broken checkpoint is an error). */
  resume?: boolean;
  /** Show progress (stderr). Default true. */
  progress?: boolean;
  /** What TrainTask.loss's `items` counts, for throughput. Default 'samples'. */
  throughputUnit?: string;
  /** Where progress goes; default process.stderr. */
  progressStream?: ProgressStream;
  /** Progress as one JSON object per line (see ProgressReporter). */
  progressJson?: boolean;
}

/** What one optimizer step did; trainSteps yields it, and a `true` sent back stops the run after this step. */
export interface StepInfo {
  step: number;
  totalSteps: number;
  /** Mean loss over the step's micro-batches. */
  loss: number;
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  items: number;
  /** Eval metrics (eval_-prefixed) when this step evaluated, else null. */
  metrics: Record<string, number> | null;
  /** Whether a checkpoint was written at this step. */
  checkpointSaved: boolean;
}

export interface TrainTask<B> {
  /** Draws a micro-batch; must depend only on the draws from `rng` (see the file comment). */
  nextBatch(rng: Rng): B;
  /** Scalar loss (mean over the micro-batch) and the items it covered (tokens, samples). */
  loss(batch: B): { loss: Tensor; items: number };
  /** Metrics such as {loss, accuracy}; runs under noGrad. Switch dropout off and on here. */
  evaluate?(): Record<string, number>;
}

export interface TrainResult {
  history: HistoryEntry[];
  /** Mean loss over the micro-batches of the last optimizer step. */
  finalLoss: number;
  /** Optimizer steps completed (including those before a resume). */
  steps: number;
  /** Wall time of this call. */
  seconds: number;
  /** Items per second during this call. */
  itemsPerSecond: number;
  /** Stopped before `steps` because the driver asked (early stopping). */
  stoppedEarly: boolean;
}

interface Resolved {
  steps: number;
  accum: number;
  schedule: ScheduleKind;
  warmup: number;
  maxGradNorm: number | null;
  evalEvery: number;
  logEvery: number;
  seed: number;
  checkpointDir: string | null;
  checkpointEvery: number;
}

function resolve(o: TrainerOptions): Resolved {
  const int = (v: number | undefined, what: string, dflt: number, min: number): number => {
    const x = v ?? dflt;
    if (!(Number.isSafeInteger(x) && x >= min)) fail(`training option ${what} must be an integer ≥ ${min}, got ${x}`);
    return x;
  };
  const steps = int(o.steps, 'steps', 0, 0);
  const schedule = o.schedule ?? 'constant';
  if (!SCHEDULE_KINDS.includes(schedule)) fail(`training option schedule must be one of ${SCHEDULE_KINDS.join(', ')}, got '${schedule}'`);
  const maxGradNorm = o.maxGradNorm ?? null;
  if (maxGradNorm !== null && !(maxGradNorm > 0 && Number.isFinite(maxGradNorm))) fail(`training option maxGradNorm must be > 0, got ${maxGradNorm}`);
  const checkpointDir = o.checkpointDir ?? null;
  if (o.resume && checkpointDir === null) fail('training option resume needs a checkpoint directory');
  return {
    steps,
    accum: int(o.gradAccumulation, 'gradAccumulation', 1, 1),
    schedule,
    warmup: int(o.warmupSteps, 'warmupSteps', 0, 0),
    maxGradNorm,
    evalEvery: int(o.evalEvery, 'evalEvery', 0, 0),
    logEvery: int(o.logEvery, 'logEvery', Math.max(1, Math.ceil(steps / 50)), 1),
    seed: int(o.seed, 'seed', 42, 0),
    checkpointDir,
    checkpointEvery: int(o.checkpointEvery, 'checkpointEvery', 0, 0),
  };
}

/** Per-step seed for defaultRng (murmur3's finalizer over seed and step). */
export function stepSeed(seed: number, step: number): number {
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ step) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function checkParams(params: readonly [string, Tensor][], optimizer: AdamW): void {
  if (params.length === 0) fail('training: no trainable parameters');
  const names = new Set<string>();
  for (const [n] of params) {
    if (names.has(n)) fail(`training: duplicate parameter name '${n}'`);
    names.add(n);
  }
  // Checkpoints save `params` and the optimizer's state; both must cover the same tensors.
  const inOpt = new Set(optimizer.params());
  for (const [n, t] of params) if (!inOpt.has(t)) fail(`training: parameter '${n}' is not in the optimizer`);
  if (inOpt.size !== params.length) fail(`training: the optimizer holds ${inOpt.size} parameters but ${params.length} were given to train`);
}

export function train<B>(params: [string, Tensor][], optimizer: AdamW, task: TrainTask<B>, opts: TrainerOptions): TrainResult {
  const steps = trainSteps(params, optimizer, task, opts);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/**
 * train(), yielding to the event loop after every optimizer step, so signal handlers (the CLI's
 * Ctrl-C) and timers run during a long run; the results are the same as train()'s.
 */
export async function trainAsync<B>(params: [string, Tensor][], optimizer: AdamW, task: TrainTask<B>, opts: TrainerOptions): Promise<TrainResult> {
  const steps = trainSteps(params, optimizer, task, opts);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/**
 * The training loop as a generator: it yields each optimizer step's StepInfo and returns the
 * result. Sending `true` into next() stops the run after that step (its eval and checkpoint, if
 * any, are done; a checkpoint is saved then when checkpointDir is set), as the Trainer's early
 * stopping does.
 */
export function* trainSteps<B>(params: [string, Tensor][], optimizer: AdamW, task: TrainTask<B>, opts: TrainerOptions): Generator<StepInfo, TrainResult, boolean | undefined> {
  const o = resolve(opts);
  checkParams(params, optimizer);
  const tensors = params.map(([, t]) => t);

  let state: TrainerState;
  let rng: ReplayRng;
  if (opts.resume) {
    state = loadCheckpoint(o.checkpointDir!, params, optimizer);
    const where = `${o.checkpointDir}: checkpoint`;
    if (opts.seed !== undefined && opts.seed !== state.seed) fail(`${where} was trained with seed ${state.seed}, not ${opts.seed}`);
    if (state.gradAccumulation !== o.accum) fail(`${where} used gradient accumulation ${state.gradAccumulation}, not ${o.accum}`);
    if (state.step > o.steps) fail(`${where} is at step ${state.step}, beyond the requested ${o.steps} steps`);
    o.seed = state.seed;
    rng = ReplayRng.restore(state.rng, `${o.checkpointDir}/trainer_state.json`);
  } else {
    rng = new ReplayRng(o.seed);
    state = {
      step: 0, seed: o.seed, totalSteps: o.steps, gradAccumulation: o.accum, schedule: o.schedule, warmupSteps: o.warmup,
      rng: rng.state(), history: [], window: { lossSum: 0, steps: 0 }, lastLoss: NaN,
    };
  }
  Object.assign(state, { totalSteps: o.steps, schedule: o.schedule, warmupSteps: o.warmup });

  const reporter = new ProgressReporter({
    total: o.steps, start: state.step, unit: opts.throughputUnit ?? 'samples', quiet: opts.progress === false,
    logEvery: o.logEvery, stream: opts.progressStream, json: opts.progressJson,
  });
  if (opts.resume) reporter.log(`resumed from ${o.checkpointDir} at step ${state.step}`);
  const zero = (): void => {
    optimizer.zeroGrad();
    for (const t of tensors) t.grad = null;
  };
  const t0 = performance.now();
  let items = 0;
  let stoppedEarly = false;
  try {
    zero();
    while (state.step < o.steps) {
      const step = state.step + 1;
      optimizer.setLrMultiplier(lrMultiplier(o.schedule, state.step, o.warmup, o.steps));
      const lr = optimizer.lrs()[0] ?? 0;
      manualSeed(stepSeed(o.seed, step));

      let lossSum = 0;
      let stepItems = 0;
      for (let i = 0; i < o.accum; i++) {
        const out = task.loss(task.nextBatch(rng));
        const loss = out.loss;
        if (loss.size !== 1) fail(`training: the task's loss must be a scalar, got shape [${loss.shape.join(', ')}]`);
        if (!loss.requiresGrad) fail('training: the loss does not depend on any trainable parameter (all frozen?)');
        const value = loss.item();
        if (!Number.isFinite(value)) fail(`training: loss is ${value} at step ${step}; lower the learning rate or set a max gradient norm`);
        (o.accum === 1 ? loss : F.scale(loss, 1 / o.accum)).backward();
        lossSum += value;
        stepItems += out.items;
      }
      const norm = o.maxGradNorm !== null ? clipGradNorm(tensors, o.maxGradNorm) : gradNorm(tensors);
      optimizer.step();
      zero(); // frees gradient memory before evaluation
      const loss = lossSum / o.accum;
      items += stepItems;
      state.step = step;
      state.lastLoss = loss;
      state.window.lossSum += loss;
      state.window.steps++;

      const last = step === o.steps;
      const metrics = task.evaluate && (last || (o.evalEvery > 0 && step % o.evalEvery === 0)) ? evaluate(task) : null;
      if (last || metrics !== null || step % o.logEvery === 0) {
        state.history.push({ step, loss: state.window.lossSum / state.window.steps, lr, gradNorm: norm, ...(metrics ?? {}) });
        state.window = { lossSum: 0, steps: 0 };
      }
      reporter.update(step, { loss, items: stepItems, extra: { lr }, metrics });
      const save = (): void => {
        state.rng = rng.state();
        saveCheckpoint(o.checkpointDir!, params, optimizer, state);
      };
      const saved = o.checkpointDir !== null && (last || (o.checkpointEvery > 0 && step % o.checkpointEvery === 0));
      if (saved) save();
      const stop = yield { step, totalSteps: o.steps, loss, lr, gradNorm: norm, items: stepItems, metrics, checkpointSaved: saved };
      if (stop === true && !last) {
        stoppedEarly = true;
        // the history's last row is this step's
        if (state.window.steps > 0) {
          state.history.push({ step, loss: state.window.lossSum / state.window.steps, lr, gradNorm: norm });
          state.window = { lossSum: 0, steps: 0 };
        }
        if (o.checkpointDir !== null && !saved) save();
        reporter.log(`stopped early at step ${step} of ${o.steps}`);
        break;
      }
    }
  } finally {
    reporter.stop();
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    history: state.history,
    finalLoss: state.lastLoss,
    steps: state.step,
    seconds,
    itemsPerSecond: seconds > 0 ? items / seconds : 0,
    stoppedEarly,
  };
}

function evaluate<B>(task: TrainTask<B>): Record<string, number> {
  const raw = noGrad(() => task.evaluate!());
  const out: Record<string, number> = {};
  // prefixed so an eval "loss" does not overwrite the training loss in the history row
  for (const [k, v] of Object.entries(raw)) out[`eval_${k}`] = v;
  return out;
}

/** Fraction of rows of `logits` (..., C) whose argmax equals the label; negative labels are ignored. */
export function accuracy(logits: Tensor, labels: Int32Array): number {
  const cols = logits.shape[logits.ndim - 1] ?? 1;
  const rows = cols === 0 ? 0 : logits.size / cols;
  if (rows !== labels.length) throw new Error(`accuracy: ${labels.length} labels for ${rows} rows of logits`);
  const predicted = F.argmax(logits);
  let correct = 0;
  let counted = 0;
  for (let r = 0; r < rows; r++) {
    if (labels[r] < 0) continue;
    counted++;
    if (predicted[r] === labels[r]) correct++;
  }
  return counted === 0 ? NaN : correct / counted;
}
