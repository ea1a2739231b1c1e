// Trainer checkpoints: one directory holding
//   trainable.safetensors  the named trainable parameters (float32, exact)
//   optimizer.safetensors  AdamW moments, keyed as AdamW.stateDict() keys them
//   trainer_state.json     step, seed, batch-rng state, optimizer step counts, history
// written with writeDirAtomic in replace mode: each save swaps the whole folder, so a kill leaves
// the previous checkpoint or the new one. Each file still records its step, and loading rejects a
// mixed set (a folder written by an older version, or by hand).
import { fs, path } from '../io/node.js';
import { Tensor } from '../tensor/index.js';
import { fail } from '../io/errors.js';
import { writeDirAtomic, readJsonFile, recoverDir } from '../io/atomic.js';
import { SafetensorsFile, serializeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import type { AdamW } from './optim.js';
import type { RngState } from './replay-rng.js';
import { SCHEDULE_KINDS, type ScheduleKind } from './schedule.js';

export const TRAINER_STATE_FILE = 'trainer_state.json';
export const TRAINABLE_FILE = 'trainable.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
const FORMAT = 'vera-trainer';
const VERSION = 1;

/** One row of the training log: train loss averaged since the previous row, eval metrics prefixed `eval_`. */
export interface HistoryEntry {
  step: number;
  loss: number;
  lr: number;
  gradNorm?: number;
  [metric: string]: number | undefined;
}

export interface TrainerState {
  step: number;
  seed: number;
  totalSteps: number;
  gradAccumulation: number;
  schedule: ScheduleKind;
  warmupSteps: number;
  rng: RngState;
  history: HistoryEntry[];
  /** Train losses since the last history row (so rows match an uninterrupted run). */
  window: { lossSum: number; steps: number };
  /** Mean loss of the last optimizer step. */
  lastLoss: number;
}

/** Files a checkpoint folder holds; a save replaces the folder, so anything else would be lost. */
const CHECKPOINT_FILES = new Set([TRAINER_STATE_FILE, TRAINABLE_FILE, OPTIMIZER_FILE]);

/**
 * Refuses a checkpoint folder that holds files of its own (e.g. `--checkpoint-dir .`): saving
 * replaces the whole folder.
 */
export function checkCheckpointDir(dir: string, label = dir): void {
  recoverDir(dir);
  if (!fs.existsSync(dir)) return;
  if (!fs.statSync(dir).isDirectory()) fail(`${label}: exists and is not a folder`);
  const other = fs.readdirSync(dir).filter((n) => !CHECKPOINT_FILES.has(n));
  if (other.length > 0) fail(`${label}: holds ${other.length === 1 ? `'${other[0]}'` : `${other.length} files`} besides a trainer checkpoint; give an empty or new folder (saving replaces the whole folder)`);
}

export function hasCheckpoint(dir: string): boolean {
  recoverDir(dir); // a save killed between its two renames leaves the previous checkpoint set aside
  return fs.existsSync(path.join(dir, TRAINER_STATE_FILE));
}

export function saveCheckpoint(dir: string, params: readonly [string, Tensor][], optimizer: AdamW, state: TrainerState): void {
  const meta = { format: FORMAT, step: String(state.step) };
  const weights: Record<string, TensorToWrite> = {};
  for (const [name, t] of params) weights[name] = { data: t.toFloat32Array(), shape: [...t.shape] };
  const sd = optimizer.stateDict();
  const moments: Record<string, TensorToWrite> = {};
  for (const [key, t] of Object.entries(sd.tensors)) moments[key] = { data: t.toFloat32Array(), shape: [...t.shape] };
  const json = { format: FORMAT, version: VERSION, ...state, optimizerSteps: sd.steps };
  checkCheckpointDir(dir);
  writeDirAtomic(dir, {
    [TRAINABLE_FILE]: serializeSafetensors(weights, meta),
    [OPTIMIZER_FILE]: serializeSafetensors(moments, meta),
    [TRAINER_STATE_FILE]: JSON.stringify(json, null, 1) + '\n',
  }, { mode: 'replace' });
}

/**
 * Validates the whole checkpoint, then restores `params` (in place) and the optimizer and returns
 * the trainer state. Every problem is a one-line VeraError naming the file; nothing is modified
 * unless everything checks out.
 */
export function loadCheckpoint(dir: string, params: readonly [string, Tensor][], optimizer: AdamW): TrainerState {
  recoverDir(dir);
  const stateFile = path.join(dir, TRAINER_STATE_FILE);
  if (!fs.existsSync(stateFile)) fail(`${dir}: no trainer checkpoint to resume from (${TRAINER_STATE_FILE} not found)`);
  const raw = readJsonFile(stateFile, 'trainer state');
  const { state, optimizerSteps } = parseState(stateFile, raw);

  const weightsFile = path.join(dir, TRAINABLE_FILE);
  const st = SafetensorsFile.open(weightsFile);
  checkStep(st, state.step);
  const names = new Set(params.map(([n]) => n));
  for (const k of st.keys()) if (!names.has(k)) fail(`${weightsFile}: tensor '${k}' is not a trainable parameter of this run`);
  const values = params.map(([name, t]) => {
    if (!st.has(name)) fail(`${weightsFile}: missing trainable parameter '${name}'`);
    const info = st.info(name);
    if (info.shape.join(',') !== t.shape.join(',')) {
      fail(`${weightsFile}: '${name}' has shape [${info.shape.join(', ')}], the model expects [${t.shape.join(', ')}]`);
    }
    return st.getFloat32(name);
  });

  const optFile = path.join(dir, OPTIMIZER_FILE);
  const ot = SafetensorsFile.open(optFile);
  checkStep(ot, state.step);
  const tensors: Record<string, Tensor> = {};
  for (const k of ot.keys()) tensors[k] = Tensor.fromArray(ot.getFloat32(k), ot.info(k).shape);
  optimizer.loadStateDict({ tensors, steps: optimizerSteps }, optFile);

  params.forEach(([, t], i) => t.copyFrom(values[i]));
  return state;
}

function checkStep(f: SafetensorsFile, step: number): void {
  const m = f.metadata;
  if (m === null || m.format !== FORMAT) fail(`${f.name}: not a vera trainer checkpoint file`);
  if (m.step !== String(step)) {
    fail(`${f.name}: belongs to step ${m.step} but ${TRAINER_STATE_FILE} is at step ${step} (interrupted while saving?)`);
  }
}

function parseState(file: string, raw: unknown): { state: TrainerState; optimizerSteps: Record<string, number> } {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail(`${file}: trainer state must be a JSON object`);
  const o = raw as Record<string, unknown>;
  if (o.format !== FORMAT || o.version !== VERSION) fail(`${file}: not a vera trainer state (format ${FORMAT} v${VERSION})`);
  const int = (v: unknown, what: string): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`${file}: '${what}' must be a non-negative integer`);
    return v;
  };
  const num = (v: unknown, what: string): number => {
    if (typeof v !== 'number') fail(`${file}: '${what}' must be a number`);
    return v;
  };
  const obj = (v: unknown, what: string): Record<string, unknown> => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(`${file}: '${what}' must be an object`);
    return v as Record<string, unknown>;
  };
  const schedule = o.schedule;
  if (typeof schedule !== 'string' || !(SCHEDULE_KINDS as readonly string[]).includes(schedule)) fail(`${file}: 'schedule' must be one of ${SCHEDULE_KINDS.join(', ')}`);
  const rng = obj(o.rng, 'rng');
  const window = obj(o.window, 'window');
  if (!Array.isArray(o.history) || !o.history.every((h) => h !== null && typeof h === 'object' && typeof (h as HistoryEntry).step === 'number')) {
    fail(`${file}: 'history' must be an array of step records`);
  }
  const optSteps = obj(o.optimizerSteps, 'optimizerSteps');
  const optimizerSteps: Record<string, number> = {};
  for (const [k, v] of Object.entries(optSteps)) optimizerSteps[k] = int(v, `optimizerSteps.${k}`);
  const state: TrainerState = {
    step: int(o.step, 'step'),
    seed: int(o.seed, 'seed'),
    totalSteps: int(o.totalSteps, 'totalSteps'),
    gradAccumulation: int(o.gradAccumulation, 'gradAccumulation'),
    schedule: schedule as ScheduleKind,
    warmupSteps: int(o.warmupSteps, 'warmupSteps'),
    rng: {
      seed: int(rng.seed, 'rng.seed'),
      draws: int(rng.draws, 'rng.draws'),
      spareFrom: rng.spareFrom === null ? null : int(rng.spareFrom, 'rng.spareFrom'),
    },
    history: o.history as HistoryEntry[],
    window: { lossSum: num(window.lossSum, 'window.lossSum'), steps: int(window.steps, 'window.steps') },
    lastLoss: o.lastLoss === null ? NaN : num(o.lastLoss, 'lastLoss'),
  };
  return { state, optimizerSteps };
}
