// Fine-tuning jobs for the server: one job trains one adapter on the served base model in a
// worker_thread, so serving goes on while it trains (the native kernels' thread pool is shared by
// the process; a kernel call that finds it busy runs on its own thread, with the same result).
// The caller (the job manager) gets events, opaque checkpoints to store, and the adapter as the
// bytes of adapter_config.json and adapter_model.safetensors; resuming from a checkpoint gives
// the bytes an uninterrupted run gives. The training itself is in finetune-worker.ts.
import { Worker } from 'node:worker_threads';
import { VeraError } from '../io/errors.js';

export interface FineTuneSpec {
  /** The base model folder (config.json, weights, tokenizer.json; tokenizer_config.json's chat_template when it has one). */
  modelDir: string;
  /** The training file's JSONL text (OpenAI's chat or prompt/completion format). */
  trainingData: string;
  /** Its id, for error messages ("training_file file-abc line 3: …"). */
  trainingFile: string;
  method: 'vera' | 'lora';
  r: number;
  learningRate: number;
  epochs: number;
  batchSize: number;
  seed: number;
  /** VeRA: the server's key, so the adapter fits the engine's shared pair. */
  projectionPrngKey: number | bigint;
  targetModules: string[];
  /** Post a checkpoint every this many steps (0: never). */
  checkpointEvery: number;
  /** LoRA's lora_alpha; default 2·r. */
  loraAlpha?: number;
  /** Examples are cut to this many tokens; default the model's context length. */
  maxSeqLength?: number;
  /** base_model_name_or_path written into adapter_config.json; default null. */
  baseModelName?: string | null;
}

/** Opaque to the caller: trainable values, AdamW state, sampler position and step (one safetensors blob). */
export interface FineTuneCheckpoint {
  step: number;
  bytes: Uint8Array;
}

export interface FineTuneResult {
  /** adapter_config.json text (PEFT's format; VeRA with save_projection false). */
  config: string;
  /** adapter_model.safetensors bytes (F32). */
  weights: Uint8Array;
  /** Tokens of the examples trained on, over all steps (OpenAI's trained_tokens). */
  trainedTokens: number;
  steps: number;
  /** Mean loss of the last step. */
  trainLoss: number;
}

export interface FineTuneEvent {
  level: 'info' | 'warn' | 'error';
  message: string;
}

export interface FineTuneRun {
  onEvent(cb: (e: FineTuneEvent) => void): void;
  onCheckpoint(cb: (c: FineTuneCheckpoint) => void): void;
  /** The adapter; rejects with FineTuneCancelledError after cancel(), with a VeraError on any failure. */
  readonly result: Promise<FineTuneResult>;
  /** Stops before the next step (or before training starts); idempotent. */
  cancel(): void;
}

/** The rejection of a cancelled run's result: `step` steps were done. */
export class FineTuneCancelledError extends Error {
  constructor(readonly step: number) {
    super(`fine-tuning cancelled after step ${step}`);
    this.name = 'FineTuneCancelledError';
  }
}

/** What the worker is started with (worker-thread data: structured-cloneable). */
export interface FineTuneWorkerData {
  kind: 'vera-finetune';
  spec: FineTuneSpec;
  resume: FineTuneCheckpoint | null;
  /** Int32 [0]: set to 1 to cancel. */
  cancel: Int32Array;
}

/** Messages from the worker. */
export type FineTuneWorkerMessage =
  | { type: 'event'; event: FineTuneEvent }
  | { type: 'checkpoint'; checkpoint: FineTuneCheckpoint }
  | { type: 'result'; result: FineTuneResult }
  | { type: 'cancelled'; step: number }
  | { type: 'error'; message: string };

/** dist/src/serve/finetune.js → dist/src/serve/finetune-worker.js (the compiled worker beside this file). */
const WORKER_URL = new URL('./finetune-worker.js', import.meta.url);

/**
 * Starts training `spec` in a worker thread, from `resumeFrom` when given (a checkpoint this spec's
 * run posted). Events and checkpoints posted before a callback is registered are kept for it.
 */
export function startFineTune(spec: FineTuneSpec, resumeFrom: FineTuneCheckpoint | null): FineTuneRun {
  const cancelFlag = new Int32Array(new SharedArrayBuffer(4));
  const data: FineTuneWorkerData = { kind: 'vera-finetune', spec, resume: resumeFrom, cancel: cancelFlag };
  const events = new Listeners<FineTuneEvent>();
  const checkpoints = new Listeners<FineTuneCheckpoint>();
  let settled = false;
  const result = new Promise<FineTuneResult>((resolve, reject) => {
    let worker: Worker;
    try {
      worker = new Worker(WORKER_URL, { workerData: data });
    } catch (e) {
      reject(new VeraError(`fine-tuning: cannot start the worker (${(e as Error)?.message ?? String(e)})`));
      return;
    }
    const settle = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      fn();
    };
    worker.on('message', (m: FineTuneWorkerMessage) => {
      if (m.type === 'event') events.emit(m.event);
      else if (m.type === 'checkpoint') checkpoints.emit(m.checkpoint);
      else if (m.type === 'result') settle(() => resolve(m.result));
      else if (m.type === 'cancelled') settle(() => reject(new FineTuneCancelledError(m.step)));
      else if (m.type === 'error') settle(() => reject(new VeraError(m.message)));
    });
    // an uncaught error in the worker (it catches its own): the parent only sees a rejection
    worker.on('error', (e) => settle(() => reject(new VeraError(`fine-tuning worker failed: ${e?.message ?? String(e)}`))));
    worker.on('exit', (code) => settle(() => reject(new VeraError(`fine-tuning worker exited (code ${code}) without a result`))));
  });
  return {
    onEvent: (cb) => events.add(cb),
    onCheckpoint: (cb) => checkpoints.add(cb),
    result,
    cancel: () => {
      Atomics.store(cancelFlag, 0, 1);
    },
  };
}

/** Callbacks, with what arrived before the first one replayed to it. */
class Listeners<T> {
  private readonly cbs: ((x: T) => void)[] = [];
  private pending: T[] = [];

  add(cb: (x: T) => void): void {
    this.cbs.push(cb);
    const early = this.pending;
    this.pending = [];
    for (const x of early) cb(x);
  }

  emit(x: T): void {
    if (this.cbs.length === 0) this.pending.push(x);
    for (const cb of this.cbs) cb(x);
  }
}
