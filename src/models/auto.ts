// Loading and saving model folders in Hugging Face's layout (config.json + model.safetensors or a
// sharded index), dispatching on config.json's `model_type` through a registry of model families.
// Loading records where each parameter came from (key, dtype, shape) so a merged model can be
// written back with exactly the input's tensor names, shapes and dtypes.
import { availableMemory, fs, path, writeStderr } from '../io/node.js';
import { Linear, type Module } from '../nn/index.js';
import { defaultRng, parseWeightFormat, quantize, withAllocationBudget, type QuantFormat, type Rng, type Tensor, type WeightFormat } from '../tensor/index.js';
import { readJsonFile, writeDirAtomic, type WriteDirOptions } from '../io/atomic.js';
import { fail } from '../io/errors.js';
import { isFileSource, readJson, sourcePath, type FileSource } from '../io/source.js';
import { loadCheckpointFromSource, loadCheckpointTensors, serializeSafetensors, type CheckpointTensors, type Dtype, type TensorToWrite, type WriteDtype } from '../io/safetensors.js';
import { asJsonObject, type JsonObject } from './config.js';
import { SkipInitRng } from './common.js';
import { bnbCheckpoint, bnbQuantization, bnbStoredSize } from './bnb.js';
import { GPT2LMHeadModel, gpt2ConfigFromJson, gpt2ConfigToJson } from './gpt2.js';
import { CNN, cnnConfigFromJson, cnnConfigToJson } from './cnn.js';
import { MLP, mlpConfigFromJson, mlpConfigToJson } from './mlp.js';
import { BertForSequenceClassification, bertCheckpointPath, bertConfigFromJson, bertConfigToJson, bertNewlyInitialized } from './bert.js';
import { RobertaForSequenceClassification, robertaCheckpointPath, robertaNewlyInitialized } from './roberta.js';
import { ViTForImageClassification, vitCheckpointPath, vitConfigFromJson, vitConfigToJson, vitNewlyInitialized } from './vit.js';
import { LlamaForCausalLM, llamaConfigFromJson, llamaConfigToJson, type LlamaModelType } from './llama.js';
import type { CausalLMModel, ImageClassificationModel, SequenceClassificationModel } from './auto-classes.js';

// ---------------------------------------------------------------- registry

/** Every model `loadPretrained` can return; `modelType` (config.json's model_type) tells them apart. */
export type PretrainedModel = GPT2LMHeadModel | CNN | MLP | BertForSequenceClassification | RobertaForSequenceClassification | ViTForImageClassification
  | LlamaForCausalLM<'llama'> | LlamaForCausalLM<'mistral'> | LlamaForCausalLM<'qwen2'>;
export type ModelType = PretrainedModel['modelType'];
export type ModelOf<K extends ModelType> = Extract<PretrainedModel, { modelType: K }>;

export interface BuildOptions {
  /** Generator for the random initialization (default: the global one). */
  rng?: Rng;
  /** false skips random initialization (weights start at zero): the model is about to be loaded. */
  init?: boolean;
  /** The checkpoint about to be loaded: its tensors' sizes bound what the config may allocate (default: the memory available). */
  checkpoint?: CheckpointTensors;
}

/** What the loader needs to know about one model family. A new family adds one entry to FAMILIES. */
export interface ModelFamily<M extends PretrainedModel> {
  fromConfig(json: JsonObject, file: string, opts: BuildOptions): M;
  configToJson(config: M['config']): JsonObject;
  /** The state-dict path a checkpoint key loads into, or null for tensors to skip (legacy buffers). */
  checkpointPath(key: string): string | null;
  /**
   * Task-head parameters a base checkpoint may lack, or store with another shape (another
   * num_labels): loading gives them Hugging Face's fresh initialization, with a notice, instead of
   * failing (transformers' "newly initialized" weights). Absent: every parameter must be stored.
   */
  newlyInitialized?(path: string): boolean;
  /** Hugging Face's initialization of the parameters `only` selects (the newly initialized ones). */
  initWeights?(model: M, only: (path: string) => boolean): void;
}

const initRng = (opts: BuildOptions): Rng | undefined => (opts.init === false ? new SkipInitRng() : opts.rng);

/** Llama, Mistral and Qwen2 share one implementation; `type` is config.json's model_type. */
function llamaFamily<T extends LlamaModelType>(type: T): ModelFamily<ModelOf<T>> {
  return {
    fromConfig: (json, file, opts) => new LlamaForCausalLM({ ...llamaConfigFromJson(json, file), modelType: type }, opts),
    configToJson: llamaConfigToJson,
    checkpointPath(key) {
      // rotary inverse frequencies were saved as buffers by older transformers; they are recomputed
      if (key.endsWith('.rotary_emb.inv_freq')) return null;
      // a bare LlamaModel checkpoint has no `model.` prefix
      return key.startsWith('model.') || key.startsWith('lm_head.') ? key : `model.${key}`;
    },
  } as ModelFamily<PretrainedModel> as ModelFamily<ModelOf<T>>;
}

const FAMILIES: { [K in ModelType]: ModelFamily<ModelOf<K>> } = {
  gpt2: {
    fromConfig: (json, file, opts) => new GPT2LMHeadModel(gpt2ConfigFromJson(json, file), opts),
    configToJson: gpt2ConfigToJson,
    checkpointPath(key) {
      // the causal-mask buffers of older checkpoints are not parameters (HF ignores them too)
      if (/^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$/.test(key)) return null;
      // GPT2Model checkpoints (the original openai `gpt2`) have no `transformer.` prefix
      return key.startsWith('transformer.') || key.startsWith('lm_head.') ? key : `transformer.${key}`;
    },
  },
  vera_cnn: {
    fromConfig: (json, file, opts) => new CNN(cnnConfigFromJson(json, file), initRng(opts)),
    configToJson: cnnConfigToJson,
    checkpointPath: (key) => key,
  },
  vera_mlp: {
    fromConfig: (json, file, opts) => new MLP(mlpConfigFromJson(json, file), initRng(opts)),
    configToJson: mlpConfigToJson,
    checkpointPath: (key) => key,
  },
  // The encoders load as their sequence/image classification models (base checkpoints included).
  bert: {
    fromConfig: (json, file, opts) => new BertForSequenceClassification(bertConfigFromJson(json, file, 'bert'), opts),
    configToJson: bertConfigToJson,
    checkpointPath: bertCheckpointPath,
    newlyInitialized: bertNewlyInitialized,
    initWeights: (model, only) => model.initWeights(defaultRng(), only),
  },
  roberta: {
    fromConfig: (json, file, opts) => new RobertaForSequenceClassification(bertConfigFromJson(json, file, 'roberta'), opts),
    configToJson: bertConfigToJson,
    checkpointPath: robertaCheckpointPath,
    newlyInitialized: robertaNewlyInitialized,
    initWeights: (model, only) => model.initWeights(defaultRng(), only),
  },
  vit: {
    fromConfig: (json, file, opts) => new ViTForImageClassification(vitConfigFromJson(json, file), opts),
    configToJson: vitConfigToJson,
    checkpointPath: vitCheckpointPath,
    newlyInitialized: vitNewlyInitialized,
    initWeights: (model, only) => model.initWeights(defaultRng(), only),
  },
  llama: llamaFamily('llama'),
  mistral: llamaFamily('mistral'),
  qwen2: llamaFamily('qwen2'),
};

export const MODEL_TYPES = Object.keys(FAMILIES) as ModelType[];

function familyOf(json: JsonObject, file: string): ModelFamily<PretrainedModel> {
  const type = json['model_type'];
  if (type === undefined || type === null) fail(`${file}: field "model_type" is required`);
  if (typeof type !== 'string' || !Object.prototype.hasOwnProperty.call(FAMILIES, type)) {
    fail(`${file}: unsupported model_type ${JSON.stringify(type)} (supported: ${MODEL_TYPES.join(', ')})`);
  }
  return FAMILIES[type as ModelType] as ModelFamily<PretrainedModel>;
}

// ---------------------------------------------------------------- memory bounds

const GB = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(bytes < 2 ** 30 ? 3 : 1)} GB`;

/** Memory a new model may take: what the OS reports available now. */
export function availableMemoryBytes(): number {
  return availableMemory();
}

/**
 * Refuse a model of `params` float32 values when they exceed `available` bytes, naming both figures:
 * allocating it would only end in swapping or the OOM killer.
 */
export function checkModelFitsMemory(what: string, params: number, available = availableMemoryBytes()): void {
  const bytes = params * 4;
  if (bytes > available) fail(`${what}: the model needs about ${GB(bytes)} in memory (${params} float32 values), more than the ${GB(available)} available`);
}

/** Extra elements a model may allocate beyond its checkpoint: fresh task heads, non-persistent buffers. */
const BUILD_SLACK = 1 << 24;

/**
 * Build with a ceiling on allocation: the parameters config.json describes are allocated before they
 * are compared with anything, so a config saying n_layer: 1e9 or vocab_size: 1e12 is refused at its
 * first tensor past `limit` elements, naming the file.
 */
function buildBounded<M>(file: string, limit: number, against: string, build: () => M): M {
  return withAllocationBudget(limit, (need) => {
    fail(`${file}: the sizes it gives (layers, hidden, vocabulary) need more than ${need} values, ${against}; refusing to allocate the model`);
  }, build);
}

/** A model built from config.json contents (`model_type` picks the family), randomly initialized. */
export function modelFromConfig(json: unknown, file: string, opts: BuildOptions = {}): PretrainedModel {
  const obj = asJsonObject(json, file);
  const family = familyOf(obj, file);
  if (opts.checkpoint) {
    const stored = checkpointElements(opts.checkpoint);
    checkModelFitsMemory(opts.checkpoint.dir, stored);
    return buildBounded(file, stored + BUILD_SLACK, `its checkpoint holds ${stored}`, () => family.fromConfig(obj, file, opts));
  }
  // no checkpoint to compare with: the ceiling is the memory available
  const available = availableMemoryBytes();
  return buildBounded(file, Math.floor(available / 4), `more than the ${GB(available)} of memory available`, () => family.fromConfig(obj, file, opts));
}

/** Elements of every tensor in a checkpoint (headers only). */
function checkpointElements(ckpt: CheckpointTensors): number {
  let n = 0;
  for (const name of ckpt.names) n += ckpt.get(name).shape.reduce((a, b) => a * b, 1);
  return n;
}

/**
 * The config.json that describes `model` (a model of any family, as `loadPretrained` or the Auto
 * loaders return it), e.g. to `savePretrained` a merged model.
 */
export function modelConfigJson(model: PretrainedModel | CausalLMModel | SequenceClassificationModel | ImageClassificationModel): JsonObject {
  // the task interfaces lose the link between modelType and config that the union keeps; both come from one family
  return (FAMILIES[model.modelType] as ModelFamily<PretrainedModel>).configToJson(model.config as PretrainedModel['config']);
}

// ---------------------------------------------------------------- loading

/** One tensor of a checkpoint as it was stored. */
export interface CheckpointEntry {
  key: string;
  dtype: Dtype;
  shape: number[];
}

/** A stored tensor that is not a model parameter; saving writes it back unchanged. */
export interface CheckpointExtra extends CheckpointEntry {
  /** The parameter it duplicates (a tied `lm_head.weight`), whose current value is written; else null. */
  tiedTo: string | null;
  /** The stored values (read from the original checkpoint on each call). */
  data(): Float32Array;
}

export interface CheckpointInfo {
  /** The checkpoint as named in messages: its model.safetensors or model.safetensors.index.json. */
  source: string;
  files: string[];
  /** Model parameter path (as in namedParameters) → the stored tensor it was loaded from. */
  params: Map<string, CheckpointEntry>;
  /** Stored tensors that are not parameters: legacy buffers (attn.bias), tied duplicates. */
  extras: CheckpointExtra[];
  /** Parameters the checkpoint lacked, or stored with another shape, left for a fresh initialization. */
  newlyInitialized: NewParameter[];
}

export interface NewParameter {
  path: string;
  /** The checkpoint's shape for it when that differed (another num_labels); null when it was absent. */
  storedShape: number[] | null;
}

export type LoadedModel = {
  [K in ModelType]: {
    modelType: K;
    model: ModelOf<K>;
    config: ModelOf<K>['config'];
    /** config.json as read (saving a merged model writes it back). */
    configJson: JsonObject;
    checkpoint: CheckpointInfo;
  };
}[ModelType];

const FLOAT_DTYPES: readonly Dtype[] = ['F32', 'F16', 'BF16', 'F64'];
const shapeStr = (s: readonly number[]): string => `[${s.join(', ')}]`;

function checkpointSource(ckpt: CheckpointTensors): string {
  if (ckpt.source !== undefined) return ckpt.source;
  const [only] = ckpt.files;
  const single = ckpt.files.length === 1 && (only === ckpt.dir || only === path.join(ckpt.dir, 'model.safetensors'));
  return single ? only : path.join(ckpt.dir, 'model.safetensors.index.json');
}

/** Parameters and persistent buffers, each tensor once, under its first name. */
function ownedTensors(model: Module): Map<string, Tensor> {
  const out = new Map<string, Tensor>(model.namedParameters());
  const seen = new Set(out.values());
  for (const [p, t] of model.namedBuffers('', true)) if (!seen.has(t)) out.set(p, t);
  return out;
}

/**
 * Copies a checkpoint into `model` (any float dtype, computed in float32). Every parameter must be
 * present with its exact shape, and every stored tensor must be a parameter, a tied alias of one,
 * or skipped by `checkpointPath`; otherwise a one-line VeraError names the file and the key.
 */
export function loadCheckpointInto(
  model: Module,
  ckpt: CheckpointTensors,
  checkpointPath: (key: string) => string | null = (k) => k,
  newlyInitialized: (path: string) => boolean = () => false,
  allowNonFinite = false,
  store?: (t: Tensor, values: Float32Array, key: string) => boolean,
): CheckpointInfo {
  const source = checkpointSource(ckpt);
  const state = model.stateDict();
  const owned = ownedTensors(model);
  const ownerOf = new Map<Tensor, string>([...owned].map(([p, t]) => [t, p]));
  const params = new Map<string, CheckpointEntry>();
  const extras: CheckpointExtra[] = [];
  const loads: [Tensor, () => Float32Array, string, string][] = [];
  const fresh: NewParameter[] = [];
  // check everything before reading any data, so a bad checkpoint fails fast
  for (const key of ckpt.names) {
    const stored = ckpt.get(key);
    const entry: CheckpointEntry = { key, dtype: stored.dtype, shape: [...stored.shape] };
    const target = checkpointPath(key);
    if (target === null) {
      extras.push({ ...entry, tiedTo: null, data: stored.data });
      continue;
    }
    const t = state.get(target);
    if (t === undefined) fail(`${stored.file}: unexpected tensor "${key}" (the model has no parameter "${target}")`);
    if (!FLOAT_DTYPES.includes(stored.dtype)) fail(`${stored.file}: ${key} has dtype ${stored.dtype}, expected a floating-point dtype`);
    const owner = ownerOf.get(t)!;
    if (stored.shape.length !== t.ndim || stored.shape.some((d, i) => d !== t.shape[i])) {
      if (!newlyInitialized(owner)) fail(`${stored.file}: ${key} has shape ${shapeStr(stored.shape)}, expected ${shapeStr(t.shape)}`);
      // a head for another label set (ignore_mismatched_sizes): replaced, and saved under the same key
      params.set(owner, { ...entry, dtype: stored.dtype, shape: [...t.shape] });
      fresh.push({ path: owner, storedShape: [...stored.shape] });
      continue;
    }
    if (owner !== target) {
      extras.push({ ...entry, tiedTo: owner, data: stored.data }); // e.g. lm_head.weight of a tied model
      continue;
    }
    const previous = params.get(owner);
    if (previous) fail(`${stored.file}: tensors "${previous.key}" and "${key}" both hold parameter "${owner}"`);
    params.set(owner, entry);
    loads.push([t, stored.data, stored.file, key]);
  }
  const headDtype = ckpt.names.length > 0 ? ckpt.get(ckpt.names[0]).dtype : 'F32';
  for (const [p, t] of owned) {
    if (params.has(p)) continue;
    if (!newlyInitialized(p)) fail(`${source}: missing tensor "${p}" (shape ${shapeStr(t.shape)})`);
    params.set(p, { key: p, dtype: FLOAT_DTYPES.includes(headDtype) ? headDtype : 'F32', shape: [...t.shape] });
    fresh.push({ path: p, storedShape: null });
  }
  for (const [t, data, file, key] of loads) {
    const values = data();
    // a NaN weight otherwise surfaces only as a NaN loss or perplexity, far from its cause
    if (!allowNonFinite) checkFinite(values, file, key);
    // a weight held in a compact format is quantized from these values: no float32 copy stays
    if (store?.(t, values, key)) continue;
    t.copyFrom(values);
  }
  return { source, files: [...ckpt.files], params, extras, newlyInitialized: fresh };
}

function checkFinite(values: Float32Array, file: string, key: string): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) fail(`${file}: ${key} contains NaN or Inf (${values[i]} at index ${i})`);
  }
}

export interface LoadPretrainedOptions {
  /** Where the one-line notice about newly initialized weights goes (default: stderr). */
  log?: (line: string) => void;
  /** Load weights holding NaN/±Inf as they are (default: refused with one line naming the tensor). */
  allowNonFinite?: boolean;
  /**
   * config.json fields replaced before the model is built, as transformers' `from_pretrained(dir,
   * num_labels=…)` does to the config; the returned `configJson` holds them (saving writes them).
   */
  configOverrides?: JsonObject;
  /**
   * The format of the frozen linear weights (default f32): bf16, int8 or nf4 quantize each linear
   * layer's weight of a causal LM (gpt2, llama, mistral, qwen2) as it is read, one at a time;
   * embeddings, norms, biases and lm_head stay float32. See tensor/quant.ts for the formats.
   */
  weights?: WeightFormat;
  /** nf4: double-quantize the block scales (QLoRA). */
  doubleQuant?: boolean;
}

/** Model types whose linear layers `weights` may quantize. */
export const QUANTIZABLE_MODEL_TYPES: readonly ModelType[] = ['gpt2', 'llama', 'mistral', 'qwen2'];

/** The linear layers a compact `weights` format applies to: every Linear but lm_head (kept float32, as bitsandbytes does). */
export function quantizableLinears(model: Module): [string, Linear][] {
  const out: [string, Linear][] = [];
  for (const [p, m] of model.namedModules()) if (m instanceof Linear && !/(^|\.)lm_head$/.test(p)) out.push([p, m]);
  return out;
}

/** A `store` hook for loadCheckpointInto that quantizes the targeted linear weights as they are read. */
function quantizingStore(model: Module, format: QuantFormat, doubleQuant: boolean): (t: Tensor, values: Float32Array, key: string) => boolean {
  const targets = new Map<Tensor, Linear>();
  for (const [, m] of quantizableLinears(model)) targets.set(m.weight, m);
  return (t, values, key) => {
    const m = targets.get(t);
    if (!m) return false;
    m.setQuantized(quantize(values, m.outFeatures, m.inFeatures, format, { transposed: m.fanInFanOut, doubleQuant, name: key }), true);
    return true;
  };
}

/**
 * Loads a model folder: config.json (its `model_type` picks the family) and model.safetensors or a
 * sharded model.safetensors.index.json. The model is returned in eval mode, as transformers does.
 * A task head the checkpoint lacks (a base checkpoint) is freshly initialized, with a notice.
 * `dir` is a local folder (Node; the result is returned directly) or a FileSource (a URL, files a
 * page was given, `folderSource(dir)`; the result is a Promise, since reading is asynchronous).
 */
// (the path form last: ReturnType<typeof loadPretrained> stays LoadedModel, as before)
export function loadPretrained(source: FileSource, opts?: LoadPretrainedOptions): Promise<LoadedModel>;
export function loadPretrained(dir: string, opts?: LoadPretrainedOptions): LoadedModel;
export function loadPretrained(dir: string | FileSource, opts: LoadPretrainedOptions = {}): LoadedModel | Promise<LoadedModel> {
  if (isFileSource(dir)) return loadPretrainedFromSource(dir, opts);
  const configFile = path.join(dir, 'config.json');
  const configJson = readJsonFile(configFile, 'model config');
  // the checkpoint's headers first: its real sizes bound what config.json may make us allocate
  const loaded = buildAndLoad(dir, configJson, configFile, () => loadCheckpointTensors(dir), opts);
  loadedFrom.set(loaded.model, dir);
  return loaded;
}

async function loadPretrainedFromSource(source: FileSource, opts: LoadPretrainedOptions): Promise<LoadedModel> {
  const configFile = sourcePath(source, 'config.json');
  const configJson = await readJson(source, 'config.json', 'model config');
  if (configJson === null) fail(`${configFile}: not found (is ${source.label} a model folder?)`);
  // a config no family reads fails before any weights are downloaded
  familyOf({ ...asJsonObject(configJson, configFile), ...opts.configOverrides }, configFile);
  const ckpt = await loadCheckpointFromSource(source);
  return buildAndLoad(source.label, configJson, configFile, () => ckpt, opts);
}

/** What loadPretrained does once config.json is read: the checkpoint's headers, the bounded build, the weights. */
function buildAndLoad(dir: string, configRead: unknown, configFile: string, openCheckpoint: () => CheckpointTensors, opts: LoadPretrainedOptions): LoadedModel {
  const configJson = { ...asJsonObject(configRead, configFile), ...opts.configOverrides };
  const family = familyOf(configJson, configFile);
  const ckpt = openCheckpoint();
  // a pre-quantized bitsandbytes folder loads in its own format (or dequantized, with weights 'f32')
  const bnb = bnbQuantization(configJson, configFile);
  // bitsandbytes: the model is built for the dequantized sizes, and holds about the stored bytes
  // (each float32 weight is released as its compact form is stored), unless it is dequantized
  const bnbSize = bnb ? bnbStoredSize(ckpt) : null;
  const stored = bnbSize ? bnbSize.elements : checkpointElements(ckpt);
  checkModelFitsMemory(dir, bnbSize && opts.weights !== 'f32' ? Math.ceil(bnbSize.bytes / 4) : stored);
  if (bnb && opts.weights !== undefined) parseWeightFormat(opts.weights, 'weights');
  if (bnb && opts.weights !== undefined && opts.weights !== 'f32' && opts.weights !== bnb.format) {
    fail(`${configFile}: quantization_config holds bitsandbytes ${bnb.format} weights; weights ${opts.weights} cannot be made from them (load them as ${bnb.format}, or as f32 to dequantize)`);
  }
  const format = bnb ? (opts.weights === 'f32' ? 'f32' : bnb.format) : parseWeightFormat(opts.weights ?? 'f32', 'weights');
  const type = String(configJson.model_type);
  if ((format !== 'f32' || bnb) && !(QUANTIZABLE_MODEL_TYPES as readonly string[]).includes(type)) {
    fail(`${dir}: weights ${bnb ? `(bitsandbytes ${bnb.format}) ` : ''}${format} applies to causal LM bases (${QUANTIZABLE_MODEL_TYPES.join(', ')}); a ${type} model loads as f32`);
  }
  const model = buildBounded(configFile, stored + BUILD_SLACK, `its checkpoint holds ${stored}`, () => family.fromConfig(configJson, configFile, { init: false }));
  let source = ckpt;
  let store = format === 'f32' ? undefined : quantizingStore(model, format as QuantFormat, opts.doubleQuant ?? false);
  if (bnb) {
    ({ ckpt: source, store } = bnbCheckpoint(ckpt, model, family.checkpointPath, bnb, format, opts.allowNonFinite ?? false));
    // the model is saved with float weights: the returned config.json no longer describes a bitsandbytes folder
    delete configJson.quantization_config;
  }
  const checkpoint = loadCheckpointInto(model, source, family.checkpointPath, family.newlyInitialized, opts.allowNonFinite ?? false, store);
  if (checkpoint.newlyInitialized.length > 0) {
    const fresh = new Set(checkpoint.newlyInitialized.map((p) => p.path));
    family.initWeights?.(model, (p) => fresh.has(p));
    const names = checkpoint.newlyInitialized.map((p) => (p.storedShape ? `${p.path} (stored there as ${shapeStr(p.storedShape)})` : p.path));
    (opts.log ?? writeStderr)(`vera: newly initialized ${names.join(', ')}: not in ${checkpoint.source}; train them before use`);
  }
  model.eval();
  return { modelType: model.modelType, model, config: model.config, configJson, checkpoint } as LoadedModel;
}

/** The folder each model loaded by `loadPretrained` (and so the Auto loaders) came from. */
const loadedFrom = new WeakMap<Module, string>();

/**
 * The folder `model` was loaded from by `loadPretrained` or an Auto loader's `fromPretrained`
 * (it stays the same after adapters are merged into it, since `mergeAndUnload` returns the same
 * model); undefined for a model built from a config.
 */
export function pretrainedDir(model: Module): string | undefined {
  return loadedFrom.get(model);
}

// ---------------------------------------------------------------- saving

/** The smallest magnitude each dtype rounds to ±Inf (half an ulp past its largest finite value). */
const OVERFLOW_AT: Record<WriteDtype, number> = { F32: Infinity, F16: (2 - 2 ** -11) * 2 ** 15, BF16: (2 - 2 ** -8) * 2 ** 127 };

/**
 * A finite value the stored dtype cannot hold would be written as ±Inf (65520 in F16): a merge whose
 * result overflows the checkpoint's dtype is refused here, naming the tensor, instead of writing Inf.
 */
function checkRepresentable(dir: string, key: string, data: Float32Array, dtype: WriteDtype): void {
  const limit = OVERFLOW_AT[dtype];
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (Math.abs(v) >= limit && Number.isFinite(v)) fail(`${dir}: ${key} would hold ${v} (at index ${i}), beyond ${dtype}'s range; refusing to write it as Inf`);
  }
}

/** Dtypes the writer cannot produce (F64) are stored as F32. */
function writeDtype(dtype: Dtype | undefined): WriteDtype {
  return dtype === 'F16' || dtype === 'BF16' ? dtype : 'F32';
}

export interface PretrainedFilesOptions {
  /** Store every tensor in this dtype (default: each in the dtype it was loaded from; F32 for tensors not loaded). */
  dtype?: WriteDtype;
  /** How messages name the output (a folder path). */
  label?: string;
}

/**
 * The `config.json` and `model.safetensors` of `model`, in memory. Without `keyMap` tensors are
 * stored under their parameter paths (tied weights once, as transformers does: loading re-ties
 * them). With the `checkpoint` info of the loaded model, every tensor goes back under its original
 * key (and dtype, unless `opts.dtype` is given), and the checkpoint's extra tensors (buffers, tied
 * duplicates) are written too, so the output holds exactly the input's tensor names and shapes.
 */
export function pretrainedFiles(model: Module, configJson: JsonObject, keyMap?: CheckpointInfo, opts: PretrainedFilesOptions = {}): { 'config.json': string; 'model.safetensors': Uint8Array } {
  const label = opts.label ?? 'model.safetensors';
  const owned = ownedTensors(model);
  const tensors: Record<string, TensorToWrite> = {};
  const put = (key: string, data: Float32Array, shape: readonly number[], dtype?: Dtype): void => {
    if (Object.prototype.hasOwnProperty.call(tensors, key)) throw new Error(`savePretrained: two tensors map to key "${key}"`);
    const stored = opts.dtype ?? writeDtype(dtype);
    checkRepresentable(label, key, data, stored);
    tensors[key] = { data, shape: [...shape], dtype: stored };
  };
  // a weight held quantized is written dequantized (bf16 as BF16, exactly; int8/nf4 values in the
  // checkpoint's dtype: quantizing them again gives the same codes up to float rounding)
  for (const [p, m] of model.namedModules()) {
    if (!(m instanceof Linear) || !m.quantized) continue;
    const wp = p ? `${p}.weight` : 'weight';
    const entry = keyMap?.params.get(wp);
    const w = m.dequantizedWeight();
    const dtype = m.quantized.format === 'bf16' && !opts.dtype ? 'BF16' : entry?.dtype;
    put(entry?.key ?? wp, w.data(), w.shape, dtype);
  }
  for (const [p, t] of owned) {
    const entry = keyMap?.params.get(p);
    if (keyMap && !entry) throw new Error(`savePretrained: parameter "${p}" is not in the checkpoint key map (was the model changed since loading?)`);
    if (entry && shapeStr(entry.shape) !== shapeStr(t.shape)) throw new Error(`savePretrained: parameter "${p}" has shape ${shapeStr(t.shape)}, the checkpoint's ${shapeStr(entry.shape)}`);
    put(entry?.key ?? p, t.data(), t.shape, entry?.dtype);
  }
  if (keyMap) {
    const quantized = new Set<string>();
    for (const [p, m] of model.namedModules()) if (m instanceof Linear && m.quantized) quantized.add(p ? `${p}.weight` : 'weight');
    for (const p of keyMap.params.keys()) if (!owned.has(p) && !quantized.has(p)) throw new Error(`savePretrained: checkpoint parameter "${p}" is not in the model`);
    for (const e of keyMap.extras) {
      const tied = e.tiedTo === null ? undefined : owned.get(e.tiedTo);
      if (e.tiedTo !== null && !tied) throw new Error(`savePretrained: "${e.key}" is tied to "${e.tiedTo}", which the model lacks`);
      put(e.key, tied ? tied.data() : e.data(), e.shape, e.dtype);
    }
  }
  return {
    'config.json': `${JSON.stringify(configJson, null, 2)}\n`,
    'model.safetensors': serializeSafetensors(tensors, { format: 'pt' }),
  };
}

/**
 * Writes `dir/config.json` and `dir/model.safetensors` (see `pretrainedFiles`) together,
 * atomically, with `extraFiles` in the same atomic step. `extraFiles` defaults to the companion
 * files (tokenizer files and generation_config.json, see {@link readCompanionFiles}) of the folder
 * the model was loaded from ({@link pretrainedDir}), so a saved model folder carries its tokenizer;
 * a model built from a config has none. Pass them to choose (`readCompanionFiles(tokenizerDir)`),
 * or `{}` for none.
 */
export function savePretrained(dir: string, model: Module, configJson: JsonObject, keyMap?: CheckpointInfo, extraFiles?: Record<string, Uint8Array>, write: WriteDirOptions = {}): void {
  const source = pretrainedDir(model);
  const extra = extraFiles ?? (source === undefined ? {} : readCompanionFiles(source));
  writeDirAtomic(dir, { ...extra, ...pretrainedFiles(model, configJson, keyMap, { label: dir }) }, write);
}

/** Weight files a model folder may hold (safetensors, sharded or not, and PyTorch's .bin, which is not read). */
const WEIGHT_FILES = ['model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin', 'pytorch_model.bin.index.json'];

/** The weight files `dir` holds (none: a folder with config.json alone, to initialize from scratch). */
export function weightFilesIn(dir: string): string[] {
  return WEIGHT_FILES.filter((f) => fs.existsSync(path.join(dir, f)));
}

/** Files that travel with a model folder unchanged by training or merging: the tokenizer's and generation_config.json. */
export const COMPANION_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja', 'vocab.json', 'merges.txt', 'vocab.txt', 'tokenizer.model', 'generation_config.json'];

/** The companion files `dir` holds, as bytes (to be copied unchanged into a new model folder). */
export function readCompanionFiles(dir: string): Record<string, Uint8Array> {
  const out: Record<string, Uint8Array> = {};
  for (const f of COMPANION_FILES) {
    const file = path.join(dir, f);
    if (fs.existsSync(file)) out[f] = fs.readFileSync(file);
  }
  return out;
}

/** eos ids as generation would use them: generation_config.json's when present (chat models list several), else config.json's. */
export function generationEosTokenIds(dir: string, model: { readonly eosTokenIds: readonly number[] }): number[] {
  const file = path.join(dir, 'generation_config.json');
  if (!fs.existsSync(file)) return [...model.eosTokenIds];
  return eosIdsOf(readJsonFile(file, 'generation config'), file, model);
}

/** generationEosTokenIds for a FileSource's folder. */
export async function generationEosTokenIdsFrom(source: FileSource, model: { readonly eosTokenIds: readonly number[] }): Promise<number[]> {
  const json = await readJson(source, 'generation_config.json', 'generation config');
  return json === null ? [...model.eosTokenIds] : eosIdsOf(json, sourcePath(source, 'generation_config.json'), model);
}

function eosIdsOf(read: unknown, file: string, model: { readonly eosTokenIds: readonly number[] }): number[] {
  const json = read as Record<string, unknown> | null;
  const v = json?.['eos_token_id'];
  if (v === undefined || v === null) return [...model.eosTokenIds];
  const list = Array.isArray(v) ? v : [v];
  if (!list.every((id) => Number.isSafeInteger(id) && (id as number) >= 0)) fail(`${file}: field "eos_token_id" must be a token id or a list of token ids`);
  return list as number[];
}
