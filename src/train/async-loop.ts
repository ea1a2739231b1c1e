// A training loop that never blocks on the device: for GPU backends (WebGPU), whose reads are
// asynchronous. The loss is read back only every `readEvery` steps (and at the last), so the
// steps in between are encoded and submitted without a wait; between steps the loop yields to the
// event loop (a page stays responsive, and collected tensors return their buffers to the pool).
// Gradient clipping (maxGradNorm) stays on the device too: the norm is read back with the loss.
import { manualSeed, type Rng } from '../tensor/index.js';
import { fail } from '../io/errors.js';
import type { AdamW } from './optim.js';
import { clipGradNormOnDevice } from './clip.js';
import { lrMultiplier, type ScheduleKind } from './schedule.js';
import { stepSeed, type TrainTask } from './trainer.js';

export interface AsyncTrainOptions {
  steps: number;
  /** Draws the batches (as the trainer's). */
  rng: Rng;
  /** Seeds each step's dropout as the trainer does (stepSeed(seed, step)); default: leave the global generator alone. */
  seed?: number;
  /** Read the loss every this many steps (and at the last); default 10. */
  readEvery?: number;
  schedule?: ScheduleKind;
  warmup?: number;
  /** Clip the gradients' global L2 norm to this before each update (on the device: clipGradNormOnDevice). */
  maxGradNorm?: number;
  /** Called with each loss read back (and, when clipping, the gradient norm before clipping). */
  onLoss?: (step: number, loss: number, gradNorm?: number) => void;
}

export interface AsyncTrainLoss {
  step: number;
  loss: number;
  /** The gradient norm before clipping, when maxGradNorm is set. */
  gradNorm?: number;
}

/** Runs `steps` optimizer steps of `task`; resolves with the losses read back (step, loss). */
export async function trainStepsAsync<B>(task: TrainTask<B>, optimizer: AdamW, opts: AsyncTrainOptions): Promise<AsyncTrainLoss[]> {
  const readEvery = opts.readEvery ?? 10;
  if (!Number.isSafeInteger(opts.steps) || opts.steps < 1) fail(`trainStepsAsync: steps must be a positive integer, got ${opts.steps}`);
  if (!Number.isSafeInteger(readEvery) || readEvery < 1) fail(`trainStepsAsync: readEvery must be a positive integer, got ${readEvery}`);
  if (opts.maxGradNorm !== undefined && !(opts.maxGradNorm > 0)) fail(`trainStepsAsync: maxGradNorm must be > 0, got ${opts.maxGradNorm}`);
  const losses: AsyncTrainLoss[] = [];
  for (let step = 1; step <= opts.steps; step++) {
    optimizer.setLrMultiplier(lrMultiplier(opts.schedule ?? 'constant', step - 1, opts.warmup ?? 0, opts.steps));
    if (opts.seed !== undefined) manualSeed(stepSeed(opts.seed, step));
    const { loss } = task.loss(task.nextBatch(opts.rng));
    if (loss.size !== 1) fail(`trainStepsAsync: the task's loss must be a scalar, got shape [${loss.shape.join(', ')}]`);
    loss.backward();
    const norm = opts.maxGradNorm !== undefined ? clipGradNormOnDevice(optimizer.params(), opts.maxGradNorm) : null;
    optimizer.step();
    optimizer.zeroGrad();
    if (step % readEvery === 0 || step === opts.steps) {
      const value = await loss.itemAsync();
      if (!Number.isFinite(value)) fail(`trainStepsAsync: loss is ${value} at step ${step}; lower the learning rate`);
      const gradNorm = norm === null ? undefined : await norm.itemAsync();
      losses.push(gradNorm === undefined ? { step, loss: value } : { step, loss: value, gradNorm });
      opts.onLoss?.(step, value, gradNorm);
    }
    // a task turn every step, also after a read (on a CPU backend itemAsync resolves at once, a
    // microtask): messages (a page's Stop) and FinalizationRegistry callbacks, which free the
    // collected tensors' backend memory (WebAssembly), run only between tasks
    await new Promise<void>((resolve) => setTimeout(resolve, 0));
  }
  return losses;
}
