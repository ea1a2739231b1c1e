// The fine-tuning run (see finetune.ts): loads the base model, reads the training file, trains a
// VeRA or LoRA adapter with AdamW, and posts events, checkpoints and the adapter. Run as a
// worker_thread by startFineTune; `runFineTune` is the same run on the calling thread.
//
// Exact resumption, as the trainer's (train/trainer.ts): batches come from a ReplayRng restored by
// replaying its draws (the sampler is fast-forwarded with it), dropout's global generator is
// re-seeded from (seed, step) before every step, and the checkpoint holds the trainables and
// AdamW's moments in float32 with the step counts, so a resumed run computes what the
// uninterrupted one computes, bit for bit.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { createHash } from 'node:crypto';
import '../io/node-preload.js';
import '../backends/index.js';
import { parseTrainingData, chatDataOptions, type TrainingExample } from '../data/chat-data.js';
import { collateCausalLm, EpochSampler, IGNORE_INDEX } from '../data/jsonl.js';
import { VeraError, fail } from '../io/errors.js';
import { SafetensorsFile, serializeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { causalLmForwardLoss, isCausalLM, loadPretrained } from '../models/index.js';
import { getPeftModel, loraConfig, peftMethod, sortedJson, vera, veraConfig, type BasePeftConfig, type VeraConfig } from '../peft/index.js';
import { Tensor, manualSeed } from '../tensor/index.js';
import { AdamW, ReplayRng, clipGradNorm, stepSeed, type RngState } from '../train/index.js';
import { FineTuneCancelledError, type FineTuneCheckpoint, type FineTuneEvent, type FineTuneResult, type FineTuneSpec, type FineTuneWorkerData, type FineTuneWorkerMessage } from './finetune.js';

const FORMAT = 'vera-finetune';
const VERSION = 1;
const MAX_GRAD_NORM = 1;
const ADAPTER_NAME = 'default';

export interface FineTuneHooks {
  event(e: FineTuneEvent): void;
  checkpoint(c: FineTuneCheckpoint): void;
  /** Polled before each step. */
  cancelled(): boolean;
}

/** The checkpoint's JSON state (the tensors are beside it in the same safetensors blob). */
interface CheckpointState {
  format: typeof FORMAT;
  version: number;
  /** The spec and data it belongs to (a checkpoint of another job is refused). */
  fingerprint: string;
  step: number;
  rng: RngState;
  optimizerSteps: Record<string, number>;
  trainedTokens: number;
  lastLoss: number;
}

function checkSpec(s: FineTuneSpec): void {
  const posInt = (v: number, what: string, min = 1): void => {
    if (!(Number.isSafeInteger(v) && v >= min)) fail(`fine-tuning: ${what} must be an integer ≥ ${min}, got ${v}`);
  };
  if (s.method !== 'vera' && s.method !== 'lora') fail(`fine-tuning: method must be vera or lora, got ${String(s.method)}`);
  posInt(s.r, 'r');
  posInt(s.batchSize, 'batch_size');
  posInt(s.seed, 'seed', 0);
  posInt(s.checkpointEvery, 'checkpointEvery', 0);
  if (!(Number.isFinite(s.epochs) && s.epochs > 0)) fail(`fine-tuning: n_epochs must be > 0, got ${s.epochs}`);
  if (!(Number.isFinite(s.learningRate) && s.learningRate > 0)) fail(`fine-tuning: learning rate must be > 0, got ${s.learningRate}`);
  if (s.maxSeqLength !== undefined) posInt(s.maxSeqLength, 'maxSeqLength', 2);
  if (!Array.isArray(s.targetModules) || s.targetModules.length === 0 || !s.targetModules.every((t) => typeof t === 'string' && t !== '')) {
    fail('fine-tuning: targetModules must be a non-empty list of module names');
  }
}

/** What a checkpoint must agree on to be resumed (the model folder's path may move). */
function fingerprint(s: FineTuneSpec): string {
  const h = createHash('sha256');
  const fields = {
    method: s.method, r: s.r, learningRate: s.learningRate, epochs: s.epochs, batchSize: s.batchSize, seed: s.seed,
    key: BigInt(s.projectionPrngKey).toString(), targets: s.targetModules, loraAlpha: s.loraAlpha ?? null, maxSeqLength: s.maxSeqLength ?? null,
  };
  h.update(JSON.stringify(fields));
  h.update('\0');
  h.update(s.trainingData);
  return h.digest('hex');
}

/** Pads a batch; labels come from the examples (IGNORE_INDEX on untrained positions and padding). */
function collate(examples: readonly TrainingExample[], padId: number): ReturnType<typeof collateCausalLm> {
  const batch = collateCausalLm(examples.map((e) => e.ids), padId);
  const seq = batch.shape[1];
  batch.labels.fill(IGNORE_INDEX);
  examples.forEach((e, b) => batch.labels.set(e.labels, b * seq));
  batch.targets = examples.reduce((n, e) => n + e.targets, 0);
  return batch;
}

function cancelledAt(hooks: FineTuneHooks, step: number): void {
  if (hooks.cancelled()) throw new FineTuneCancelledError(step);
}

/**
 * Trains the adapter `spec` describes, from `resume` when given. Throws a VeraError for anything a
 * user can cause, FineTuneCancelledError when hooks.cancelled() turns true.
 */
export async function runFineTune(spec: FineTuneSpec, resume: FineTuneCheckpoint | null, hooks: FineTuneHooks): Promise<FineTuneResult> {
  checkSpec(spec);
  cancelledAt(hooks, resume?.step ?? 0);
  const info = (message: string): void => hooks.event({ level: 'info', message });

  // dropout layers and LoRA's A draw from the global generator: seed it before building anything
  manualSeed(spec.seed);
  const loaded = loadPretrained(spec.modelDir);
  const model = loaded.model;
  if (!isCausalLM(model)) fail(`${spec.modelDir}: model_type "${loaded.modelType}" is not a causal language model; fine-tuning trains GPT-2 and the Llama family`);
  const dataOpts = await chatDataOptions(spec.modelDir, model, spec.maxSeqLength);
  const data = parseTrainingData(spec.trainingData, spec.trainingFile, dataOpts);
  const examples = data.examples;
  const padId = dataOpts.eosTokenId ?? 0;
  const steps = Math.ceil((spec.epochs * examples.length) / spec.batchSize);
  const rendering = data.format === 'completion' ? 'prompt/completion' : dataOpts.template ? 'chat, through the chat template' : 'chat, rendered as "role: content" lines (the model has no chat template)';
  info(`Training file ${spec.trainingFile}: ${examples.length} examples (${rendering}), ${data.tokens} tokens of which ${data.targets} trained`);
  if (data.truncated > 0) hooks.event({ level: 'warn', message: `${data.truncated} examples were cut to the model's context of ${dataOpts.maxLength} tokens` });

  const base = { targetModules: [...spec.targetModules], taskType: 'CAUSAL_LM', baseModelNameOrPath: spec.baseModelName ?? null };
  const config: BasePeftConfig =
    spec.method === 'vera'
      ? veraConfig({ ...base, r: spec.r, projectionPrngKey: spec.projectionPrngKey, saveProjection: false })
      : loraConfig({ ...base, r: spec.r, loraAlpha: spec.loraAlpha ?? 2 * spec.r });
  manualSeed(spec.seed);
  const peft = getPeftModel(model, config, ADAPTER_NAME);
  const params = peft.trainableParameters();
  const tensors = params.map(([, t]) => t);
  const optimizer = new AdamW([{ name: 'adapter', lr: spec.learningRate, params: tensors }], { weightDecay: 0 });

  const print = fingerprint(spec);
  const sampler = new EpochSampler(examples.length, spec.batchSize);
  let rng = new ReplayRng(spec.seed);
  let step = 0;
  let trainedTokens = 0;
  let lastLoss = NaN;
  if (resume !== null) {
    const st = restore(resume, print, params, optimizer, steps);
    step = st.step;
    trainedTokens = st.trainedTokens;
    lastLoss = st.lastLoss;
    sampler.skip(step, rng);
    if (rng.state().draws !== st.rng.draws) fail('fine-tuning checkpoint: its sampler state does not match this job\'s data');
    rng = ReplayRng.restore(st.rng, 'fine-tuning checkpoint');
    info(`Resumed from the checkpoint at step ${step}`);
  }
  info(`Training ${spec.method === 'vera' ? 'VeRA' : 'LoRA'} (r ${spec.r}) for ${steps} steps: ${spec.epochs} epochs of ${examples.length} examples, batch size ${spec.batchSize}`);

  const logEvery = Math.max(1, Math.ceil(steps / 100));
  model.train();
  while (step < steps) {
    cancelledAt(hooks, step);
    const next = step + 1;
    manualSeed(stepSeed(spec.seed, next));
    const batch = collate(sampler.next(rng).map((i) => examples[i]), padId);
    const loss = causalLmForwardLoss(model, batch.inputIds, batch.shape, { attentionMask: batch.attentionMask, ignoreIndex: IGNORE_INDEX, labels: batch.labels });
    const value = loss.item();
    if (!Number.isFinite(value)) fail(`fine-tuning: the training loss is ${value} at step ${next}; lower the learning rate`);
    loss.backward();
    clipGradNorm(tensors, MAX_GRAD_NORM);
    optimizer.step();
    optimizer.zeroGrad();
    step = next;
    lastLoss = value;
    trainedTokens += batch.tokens;
    if (step === steps || step % logEvery === 0) info(`Step ${step}/${steps}: training loss=${value.toFixed(2)}`);
    if (spec.checkpointEvery > 0 && step % spec.checkpointEvery === 0 && step < steps) {
      const state: CheckpointState = { format: FORMAT, version: VERSION, fingerprint: print, step, rng: rng.state(), optimizerSteps: optimizer.stateDict().steps, trainedTokens, lastLoss };
      hooks.checkpoint({ step, bytes: serializeCheckpoint(state, params, optimizer) });
      info(`Checkpoint created at step ${step}`);
    }
    // let a cancel() (and, on the main thread, other work) in between steps
    await new Promise<void>((r) => setImmediate(r));
  }
  model.eval();
  return { ...adapterBytes(peft, config.peftType === 'VERA'), trainedTokens, steps, trainLoss: lastLoss };
}

function serializeCheckpoint(state: CheckpointState, params: readonly [string, Tensor][], optimizer: AdamW): Uint8Array {
  const out: Record<string, TensorToWrite> = {};
  for (const [name, t] of params) out[`param.${name}`] = { data: t.toFloat32Array(), shape: [...t.shape] };
  for (const [key, t] of Object.entries(optimizer.stateDict().tensors)) out[`optim.${key}`] = { data: t.toFloat32Array(), shape: [...t.shape] };
  return serializeSafetensors(out, { format: FORMAT, state: JSON.stringify(state) });
}

/** Checks the whole checkpoint, then loads it into params and optimizer; returns its state. */
function restore(c: FineTuneCheckpoint, print: string, params: readonly [string, Tensor][], optimizer: AdamW, steps: number): CheckpointState {
  const where = 'fine-tuning checkpoint';
  if (!(c.bytes instanceof Uint8Array)) fail(`${where}: bytes must be a Uint8Array`);
  const st = SafetensorsFile.fromBytes(c.bytes, where);
  const meta = st.metadata;
  if (meta === null || meta.format !== FORMAT || typeof meta.state !== 'string') fail(`${where}: not a vera fine-tuning checkpoint`);
  let state: CheckpointState;
  try {
    state = JSON.parse(meta.state) as CheckpointState;
  } catch {
    fail(`${where}: its state is not valid JSON`);
  }
  if (state.format !== FORMAT || state.version !== VERSION) fail(`${where}: format ${String(state.format)} v${String(state.version)} is not ${FORMAT} v${VERSION}`);
  if (state.fingerprint !== print) fail(`${where}: it belongs to a job with other training data or hyperparameters`);
  if (!(Number.isSafeInteger(state.step) && state.step >= 0 && state.step <= steps)) fail(`${where}: step ${state.step} is outside this job's ${steps} steps`);
  if (c.step !== state.step) fail(`${where}: labelled step ${c.step} but holds step ${state.step}`);
  const values = params.map(([name, t]) => {
    const key = `param.${name}`;
    if (!st.has(key)) fail(`${where}: missing ${key}`);
    if (st.info(key).shape.join(',') !== t.shape.join(',')) fail(`${where}: ${key} has shape [${st.info(key).shape.join(', ')}], the adapter's is [${t.shape.join(', ')}]`);
    return st.getFloat32(key);
  });
  const moments: Record<string, Tensor> = {};
  for (const k of st.keys()) {
    if (k.startsWith('optim.')) moments[k.slice('optim.'.length)] = Tensor.fromArray(st.getFloat32(k), st.info(k).shape);
    else if (!k.startsWith('param.')) fail(`${where}: unexpected tensor ${k}`);
  }
  optimizer.loadStateDict({ tensors: moments, steps: state.optimizerSteps }, where);
  params.forEach(([, t], i) => t.copyFrom(values[i]));
  return state;
}

/** adapter_config.json text and adapter_model.safetensors bytes, as PeftModel.saveAdapter writes them. */
function adapterBytes(peft: ReturnType<typeof getPeftModel>, isVera: boolean): { config: string; weights: Uint8Array } {
  const config: BasePeftConfig = { ...peft.peftConfig.get(ADAPTER_NAME)!, inferenceMode: true };
  // the compact form: the engine regenerates the pair from the key; make sure it is that pair
  if (isVera) vera.checkRegenerable!(peft.model, config as VeraConfig, ADAPTER_NAME);
  const tensors: Record<string, TensorToWrite> = {};
  for (const [k, t] of peft.adapterStateDict(ADAPTER_NAME, config)) {
    const data = t.toFloat32Array();
    if (data.some((v) => !Number.isFinite(v))) fail(`fine-tuning: ${k} holds NaN or Inf after training; lower the learning rate`);
    tensors[k] = { data, shape: [...t.shape] };
  }
  return { config: sortedJson(peftMethod(config.peftType).configToJson(config)), weights: serializeSafetensors(tensors, { format: 'pt' }) };
}

// ---------------------------------------------------------------- worker entry

function post(m: FineTuneWorkerMessage, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(m, transfer);
}

/** The buffer of `b` when `b` is all of it (then it can be moved, not copied). */
function ownBuffer(b: Uint8Array): ArrayBuffer[] {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer ? [b.buffer] : [];
}

const input = isMainThread ? null : (workerData as FineTuneWorkerData | null);
if (input?.kind === 'vera-finetune' && parentPort) {
  const hooks: FineTuneHooks = {
    event: (event) => post({ type: 'event', event }),
    checkpoint: (checkpoint) => post({ type: 'checkpoint', checkpoint }, ownBuffer(checkpoint.bytes)),
    cancelled: () => Atomics.load(input.cancel, 0) !== 0,
  };
  runFineTune(input.spec, input.resume, hooks).then(
    (result) => post({ type: 'result', result }, ownBuffer(result.weights)),
    (e: unknown) => {
      if (e instanceof FineTuneCancelledError) post({ type: 'cancelled', step: e.step });
      else if (e instanceof VeraError) post({ type: 'error', message: e.message });
      else post({ type: 'error', message: `fine-tuning failed: internal error: ${(e as Error)?.message ?? String(e)}` });
    },
  );
}
