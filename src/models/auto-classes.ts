// Task-level loaders in the style of transformers' Auto classes. `loadPretrained` returns the union
// of every family, which a caller must narrow before using it; these return one interface per task
// (a causal LM, a sequence classifier, an image classifier) that the task's families implement, and
// refuse a folder of another task in one line naming its config.json and model_type.
import { path } from '../io/node.js';
import type { Module } from '../nn/index.js';
import type { Rng, Tensor } from '../tensor/index.js';
import { readJsonFile } from '../io/atomic.js';
import { fail } from '../io/errors.js';
import { isFileSource, readJson, sourcePath, type FileSource } from '../io/source.js';
import { asJsonObject, type JsonObject } from './config.js';
import { loadPretrained, modelFromConfig, MODEL_TYPES, type LoadPretrainedOptions, type ModelOf, type ModelType, type PretrainedModel } from './auto.js';
import type { CausalLM } from './generation.js';
import type { CausalLMForwardOptions } from './kv-cache.js';
import type { GPT2Config } from './gpt2.js';
import type { LlamaConfig } from './llama.js';
import type { BertConfig, BertForwardOptions } from './bert.js';
import type { ViTConfig } from './vit.js';
import type { CNNConfig } from './cnn.js';
import type { MLPConfig } from './mlp.js';
import type { ProblemType } from './encoder.js';

/** config.json model_types that load as causal language models. */
export const CAUSAL_LM_TYPES = ['gpt2', 'llama', 'mistral', 'qwen2'] as const satisfies readonly ModelType[];
export type CausalLMType = (typeof CAUSAL_LM_TYPES)[number];
/** config.json model_types that load as sequence classifiers. */
export const SEQUENCE_CLASSIFICATION_TYPES = ['bert', 'roberta'] as const satisfies readonly ModelType[];
export type SequenceClassificationType = (typeof SEQUENCE_CLASSIFICATION_TYPES)[number];
/** config.json model_types that load as image classifiers. */
export const IMAGE_CLASSIFICATION_TYPES = ['vit', 'vera_cnn', 'vera_mlp'] as const satisfies readonly ModelType[];
export type ImageClassificationType = (typeof IMAGE_CLASSIFICATION_TYPES)[number];

/**
 * A decoder-only language model: GPT2LMHeadModel and LlamaForCausalLM (llama, mistral, qwen2)
 * implement it. `generate`, `TextGenerator`, `perplexity`, `evaluateCausalLm`, `causalLmTask` and
 * `getPeftModel` take it (and a PeftModel wrapping it) as it is.
 */
export interface CausalLMModel extends Module, CausalLM {
  readonly modelType: CausalLMType;
  readonly config: GPT2Config | LlamaConfig;
  training: boolean;
  train(mode?: boolean): this;
  /** Logits (batch, seq, vocab) of row-major token ids (batch·seq); `opts` adds a padding mask, positions, a KV cache. */
  forward(inputIds: Int32Array, shape: readonly [number, number], opts?: CausalLMForwardOptions): Tensor;
}

/** A text (or text-pair) classifier: BertForSequenceClassification and RobertaForSequenceClassification implement it. */
export interface SequenceClassificationModel extends Module {
  readonly modelType: SequenceClassificationType;
  readonly config: BertConfig;
  /** Logits (batch, numLabels) of row-major token ids (batch·seq), with an optional padding mask and segment ids. */
  forward(inputIds: Int32Array, shape: readonly [number, number], opts?: BertForwardOptions): Tensor;
}

/** An image classifier: ViTForImageClassification, and this library's CNN (vera_cnn) and MLP (vera_mlp). */
export interface ImageClassificationModel extends Module {
  readonly modelType: ImageClassificationType;
  readonly config: ViTConfig | CNNConfig | MLPConfig;
  /** Logits (N, classes) of images (N, channels, height, width); the MLP takes features (N, inputSize). */
  forward(pixels: Tensor): Tensor;
}

/** Options of the classification loaders: the head's labels, as `from_pretrained(dir, num_labels=…, id2label=…)`. */
export interface ClassificationHeadOptions {
  /**
   * Label names by class index: sets num_labels, id2label and label2id in the config. A head stored
   * for another number of labels is then freshly initialized (with a one-line notice), to be
   * trained, e.g. in an adapter's `modulesToSave`. Not for vera_cnn/vera_mlp (their `num_classes` is fixed by the checkpoint).
   */
  labels?: readonly string[];
  /** config.json's problem_type (default: the folder's, else inferred from the labels per batch). */
  problemType?: ProblemType;
}

/** Options of the `fromConfig` variants: a randomly initialized model. */
export interface FromConfigOptions {
  /** Generator of the random initialization (default: the global one, see `manualSeed`). */
  rng?: Rng;
}

interface TaskKind<K extends ModelType> {
  /** The loader, as messages name it. */
  name: string;
  /** What the task's models are, after "is not". */
  what: string;
  types: readonly K[];
}

const CAUSAL: TaskKind<CausalLMType> = { name: 'AutoModelForCausalLM', what: 'a causal language model', types: CAUSAL_LM_TYPES };
const SEQ_CLS: TaskKind<SequenceClassificationType> = { name: 'AutoModelForSequenceClassification', what: 'a sequence classifier', types: SEQUENCE_CLASSIFICATION_TYPES };
const IMG_CLS: TaskKind<ImageClassificationType> = { name: 'AutoModelForImageClassification', what: 'an image classifier', types: IMAGE_CLASSIFICATION_TYPES };
const KINDS: readonly TaskKind<ModelType>[] = [CAUSAL, SEQ_CLS, IMG_CLS];

/** How messages name a config passed as an object (there is no file). */
const CONFIG_LABEL = 'config';

/** Refuses a config whose model_type `kind` does not load, in one line naming `file`, the model_type and the loader that would. */
function checkTaskType<K extends ModelType>(json: JsonObject, file: string, kind: TaskKind<K>): void {
  const type = json['model_type'];
  if (type === undefined || type === null) fail(`${file}: field "model_type" is required`);
  if (typeof type === 'string' && (kind.types as readonly string[]).includes(type)) return;
  const loads = `${kind.name} loads ${kind.types.join(', ')}`;
  const other = typeof type === 'string' ? KINDS.find((k) => (k.types as readonly string[]).includes(type)) : undefined;
  if (other) fail(`${file}: model_type ${JSON.stringify(type)} is not ${kind.what} (${loads}; use ${other.name})`);
  fail(`${file}: unsupported model_type ${JSON.stringify(type)} (${loads}; supported by this library: ${MODEL_TYPES.join(', ')})`);
}

/** The config fields `opts.labels`/`problemType` set (transformers' PretrainedConfig kwargs). */
function headOverrides(type: unknown, opts: ClassificationHeadOptions, file: string): JsonObject {
  const out: JsonObject = {};
  if (opts.labels !== undefined) {
    const labels = opts.labels;
    if (type === 'vera_cnn' || type === 'vera_mlp') fail(`${file}: labels: ${type} has no label names; its class count is config.json's "num_classes"`);
    if (labels.length === 0 || !labels.every((l) => typeof l === 'string')) fail(`${file}: labels must be a non-empty list of label names`);
    const dup = labels.find((l, i) => labels.indexOf(l) !== i);
    if (dup !== undefined) fail(`${file}: labels: ${JSON.stringify(dup)} is given twice (label2id needs distinct names)`);
    out['num_labels'] = labels.length;
    out['id2label'] = Object.fromEntries(labels.map((l, i) => [String(i), l]));
    out['label2id'] = Object.fromEntries(labels.map((l, i) => [l, i]));
  }
  if (opts.problemType !== undefined) {
    if (type === 'vera_cnn' || type === 'vera_mlp') fail(`${file}: problemType: ${type} has no problem_type (it is trained with cross-entropy)`);
    out['problem_type'] = opts.problemType;
  }
  return out;
}

function hasType<K extends ModelType>(model: PretrainedModel, types: readonly K[]): model is ModelOf<K> {
  return (types as readonly string[]).includes(model.modelType);
}

function readConfig(dir: string): { json: JsonObject; file: string } {
  const file = path.join(dir, 'config.json');
  return { json: asJsonObject(readJsonFile(file, 'model config'), file), file };
}

/** Loads `dir` after checking that config.json's model_type is one of the task's. */
function loadTask<K extends ModelType>(dir: string, kind: TaskKind<K>, opts: LoadPretrainedOptions, head?: ClassificationHeadOptions): ModelOf<K> {
  const { json, file } = readConfig(dir);
  const { model } = loadPretrained(dir, taskLoadOptions(json, file, kind, opts, head));
  return checkLoaded(model, kind, dir);
}

/** loadTask for a FileSource: config.json is checked before the weights are read. */
async function loadTaskFromSource<K extends ModelType>(source: FileSource, kind: TaskKind<K>, opts: LoadPretrainedOptions, head?: ClassificationHeadOptions): Promise<ModelOf<K>> {
  const file = sourcePath(source, 'config.json');
  const read = await readJson(source, 'config.json', 'model config');
  if (read === null) fail(`${file}: not found (is ${source.label} a model folder?)`);
  const { model } = await loadPretrained(source, taskLoadOptions(asJsonObject(read, file), file, kind, opts, head));
  return checkLoaded(model, kind, source.label);
}

function taskLoadOptions<K extends ModelType>(json: JsonObject, file: string, kind: TaskKind<K>, opts: LoadPretrainedOptions, head?: ClassificationHeadOptions): LoadPretrainedOptions {
  checkTaskType(json, file, kind);
  const configOverrides = head ? { ...headOverrides(json['model_type'], head, file), ...opts.configOverrides } : opts.configOverrides;
  return { ...opts, configOverrides };
}

function checkLoaded<K extends ModelType>(model: PretrainedModel, kind: TaskKind<K>, dir: string): ModelOf<K> {
  if (!hasType(model, kind.types)) throw new Error(`${kind.name}: ${dir} loaded as ${model.modelType}`); // configOverrides changed model_type
  return model;
}

/** A local folder (loaded synchronously, Node) or a FileSource (a Promise). */
function loadEither<K extends ModelType, M>(dir: string | FileSource, kind: TaskKind<K>, opts: LoadPretrainedOptions, head?: ClassificationHeadOptions): M | Promise<M> {
  // every ModelOf<K> of the task implements the task interface M
  return (isFileSource(dir) ? loadTaskFromSource(dir, kind, opts, head) : loadTask(dir, kind, opts, head)) as unknown as M | Promise<M>;
}

/** fromPretrained's two forms: a local folder path (Node, synchronous) or a FileSource (anywhere, a Promise). */
export interface FromPretrained<M, O> {
  (source: FileSource, opts?: O): Promise<M>;
  (dir: string, opts?: O): M;
}

/** Builds a randomly initialized model of the task from config.json contents. */
function buildTask<K extends ModelType>(json: unknown, kind: TaskKind<K>, opts: FromConfigOptions, head?: ClassificationHeadOptions): ModelOf<K> {
  const obj = asJsonObject(json, CONFIG_LABEL);
  checkTaskType(obj, CONFIG_LABEL, kind);
  const model = modelFromConfig(head ? { ...obj, ...headOverrides(obj['model_type'], head, CONFIG_LABEL) } : obj, CONFIG_LABEL, { rng: opts.rng });
  if (!hasType(model, kind.types)) throw new Error(`${kind.name}: the config built a ${model.modelType}`);
  return model;
}

/**
 * Causal language models (GPT-2, Llama, Mistral, Qwen2) from a local Hugging Face folder or a
 * config. `fromPretrained(dir)` is synchronous, as `loadPretrained`; `fromPretrained(source)` (a
 * FileSource: a URL, a page's files) returns a Promise. The model comes back in eval mode.
 */
export const AutoModelForCausalLM = {
  /**
   * Loads `dir` (config.json + model.safetensors, sharded or not). A folder of another task
   * (`model_type` bert, vit, …) is refused in one line naming its config.json and model_type.
   */
  fromPretrained: ((dir: string | FileSource, opts: LoadPretrainedOptions = {}) => loadEither(dir, CAUSAL, opts)) as FromPretrained<CausalLMModel, LoadPretrainedOptions>,
  /** A randomly initialized model from config.json's contents (an object, as parsed), e.g. to pretrain from scratch. */
  fromConfig(config: JsonObject, opts: FromConfigOptions = {}): CausalLMModel {
    return buildTask(config, CAUSAL, opts);
  },
} as const;

/**
 * Text classifiers (BERT, RoBERTa) from a local folder or a config. A base checkpoint without a
 * head, or one with another label count than `labels`, gets a freshly initialized head (with a
 * one-line notice).
 */
export const AutoModelForSequenceClassification = {
  /** Loads `dir`; a folder of another task is refused in one line naming its config.json and model_type. */
  fromPretrained: ((dir: string | FileSource, opts: LoadPretrainedOptions & ClassificationHeadOptions = {}) => loadEither(dir, SEQ_CLS, opts, opts)) as FromPretrained<SequenceClassificationModel, LoadPretrainedOptions & ClassificationHeadOptions>,
  /** A randomly initialized model from config.json's contents. */
  fromConfig(config: JsonObject, opts: FromConfigOptions & ClassificationHeadOptions = {}): SequenceClassificationModel {
    return buildTask(config, SEQ_CLS, opts, opts);
  },
} as const;

/** Image classifiers (ViT, and this library's vera_cnn and vera_mlp) from a local folder or a config. */
export const AutoModelForImageClassification = {
  /** Loads `dir`; a folder of another task is refused in one line naming its config.json and model_type. */
  fromPretrained: ((dir: string | FileSource, opts: LoadPretrainedOptions & ClassificationHeadOptions = {}) => loadEither(dir, IMG_CLS, opts, opts)) as FromPretrained<ImageClassificationModel, LoadPretrainedOptions & ClassificationHeadOptions>,
  /** A randomly initialized model from config.json's contents. */
  fromConfig(config: JsonObject, opts: FromConfigOptions & ClassificationHeadOptions = {}): ImageClassificationModel {
    return buildTask(config, IMG_CLS, opts, opts);
  },
} as const;
