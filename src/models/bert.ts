// BERT as in Hugging Face's modeling_bert.py (BertModel, BertForSequenceClassification). Module
// paths are Hugging Face's state-dict keys (`bert.encoder.layer.0.attention.self.query`), so
// checkpoints load by name and PEFT's target modules (`query`, `value`) match. RoBERTa (roberta.ts)
// reuses the encoder and differs in its embeddings' positions and its classification head.
import { F, Tensor, defaultRng, type Rng } from '../tensor/index.js';
import { Dropout, Embedding, LayerNorm, Linear, Module, ModuleList } from '../nn/index.js';
import { fail } from '../io/errors.js';
import { ACTIVATION_NAMES, type ActivationName } from './activations.js';
import { ConfigReader, asJsonObject, type JsonObject } from './config.js';
import { SkipInitRng, type TensorLayer } from './common.js';
import {
  EncoderIntermediate, EncoderSelfAttention, classificationFieldsToJson, encoderCheckpointPath, firstToken, initEncoderWeights,
  readClassificationFields, sequenceClassificationLoss, type ClassificationConfig,
} from './encoder.js';

// ---------------------------------------------------------------- config

/** Hugging Face's BertConfig / RobertaConfig, camelCased, with the classification fields. */
export interface BertConfig extends ClassificationConfig {
  modelType: 'bert' | 'roberta';
  vocabSize: number;
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  intermediateSize: number;
  hiddenAct: ActivationName;
  hiddenDropoutProb: number;
  attentionProbsDropoutProb: number;
  maxPositionEmbeddings: number;
  typeVocabSize: number;
  initializerRange: number;
  layerNormEps: number;
  /** RoBERTa's padding_idx: position ids count from padTokenId + 1. */
  padTokenId: number | null;
  /** Dropout before the classifier; null means hiddenDropoutProb. */
  classifierDropout: number | null;
}

/** Validates a BERT (or RoBERTa) config.json; defaults are BertConfig's (RobertaConfig's for `roberta`). */
export function bertConfigFromJson(json: unknown, file: string, modelType: 'bert' | 'roberta' = 'bert'): BertConfig {
  const r = new ConfigReader(asJsonObject(json, file), file);
  r.modelType(modelType);
  if (r.has('position_embedding_type') && r.json['position_embedding_type'] !== 'absolute') r.fail('position_embedding_type', `must be "absolute" (relative position embeddings are not supported), got ${JSON.stringify(r.json['position_embedding_type'])}`);
  for (const field of ['is_decoder', 'add_cross_attention']) if (r.has(field) && r.bool(field)) r.fail(field, 'is not supported (encoders only)');
  const roberta = modelType === 'roberta';
  const config: BertConfig = {
    modelType,
    vocabSize: r.positiveInt('vocab_size', roberta ? 50265 : 30522),
    hiddenSize: r.positiveInt('hidden_size', 768),
    numHiddenLayers: r.layerCount('num_hidden_layers', 12),
    numAttentionHeads: r.positiveInt('num_attention_heads', 12),
    intermediateSize: r.positiveInt('intermediate_size', 3072),
    hiddenAct: r.oneOf('hidden_act', ACTIVATION_NAMES, 'gelu'),
    hiddenDropoutProb: r.probability('hidden_dropout_prob', 0.1),
    attentionProbsDropoutProb: r.probability('attention_probs_dropout_prob', 0.1),
    maxPositionEmbeddings: r.positiveInt('max_position_embeddings', 512),
    typeVocabSize: r.positiveInt('type_vocab_size', 2),
    initializerRange: r.positiveNumber('initializer_range', 0.02),
    layerNormEps: r.positiveNumber('layer_norm_eps', 1e-12),
    padTokenId: 'pad_token_id' in r.json ? r.optionalIndex('pad_token_id') : roberta ? 1 : 0,
    classifierDropout: r.has('classifier_dropout') ? r.probability('classifier_dropout', 0) : null,
    ...readClassificationFields(r),
  };
  if (config.hiddenSize % config.numAttentionHeads !== 0) r.fail('hidden_size', `(${config.hiddenSize}) must be divisible by "num_attention_heads" (${config.numAttentionHeads})`);
  if (roberta) {
    const pad = config.padTokenId ?? r.fail('pad_token_id', 'is required for RoBERTa (position ids count from it)');
    if (pad + 1 >= config.maxPositionEmbeddings) r.fail('max_position_embeddings', `(${config.maxPositionEmbeddings}) leaves no position after "pad_token_id" (${pad})`);
  }
  if (config.padTokenId !== null && config.padTokenId >= config.vocabSize) r.fail('pad_token_id', `(${config.padTokenId}) must be below "vocab_size" (${config.vocabSize})`);
  return config;
}

/** The config.json Hugging Face would write for `config`. */
export function bertConfigToJson(c: BertConfig): JsonObject {
  return {
    architectures: [c.modelType === 'roberta' ? 'RobertaForSequenceClassification' : 'BertForSequenceClassification'],
    attention_probs_dropout_prob: c.attentionProbsDropoutProb,
    classifier_dropout: c.classifierDropout,
    hidden_act: c.hiddenAct,
    hidden_dropout_prob: c.hiddenDropoutProb,
    hidden_size: c.hiddenSize,
    initializer_range: c.initializerRange,
    intermediate_size: c.intermediateSize,
    layer_norm_eps: c.layerNormEps,
    max_position_embeddings: c.maxPositionEmbeddings,
    model_type: c.modelType,
    num_attention_heads: c.numAttentionHeads,
    num_hidden_layers: c.numHiddenLayers,
    pad_token_id: c.padTokenId,
    position_embedding_type: 'absolute',
    type_vocab_size: c.typeVocabSize,
    vocab_size: c.vocabSize,
    ...classificationFieldsToJson(c),
  };
}

// ---------------------------------------------------------------- layers

export interface BertForwardOptions {
  /** (batch·seq) row-major, 1 = token, 0 = padding (never attended to). Default: all 1. */
  attentionMask?: Float32Array;
  /** (batch·seq) segment ids below type_vocab_size. Default: all 0. */
  tokenTypeIds?: Int32Array;
}

export class BertEmbeddings extends Module {
  word_embeddings: Embedding;
  position_embeddings: Embedding;
  token_type_embeddings: Embedding;
  LayerNorm: LayerNorm;
  dropout: Dropout;

  constructor(readonly config: BertConfig, rng: Rng) {
    super();
    this.word_embeddings = this.addModule('word_embeddings', new Embedding(config.vocabSize, config.hiddenSize, rng));
    this.position_embeddings = this.addModule('position_embeddings', new Embedding(config.maxPositionEmbeddings, config.hiddenSize, rng));
    this.token_type_embeddings = this.addModule('token_type_embeddings', new Embedding(config.typeVocabSize, config.hiddenSize, rng));
    this.LayerNorm = this.addModule('LayerNorm', new LayerNorm(config.hiddenSize, config.layerNormEps));
    this.dropout = this.addModule('dropout', new Dropout(config.hiddenDropoutProb));
  }

  /** The tables built with padding_idx = pad_token_id (torch keeps that row at zero from init). */
  paddingTables(): [string, Embedding][] {
    return [['word_embeddings', this.word_embeddings]];
  }

  /** Zero the padding row of each padding table whose weight `only` selects (HF's _init_weights). */
  zeroPaddingRows(prefix: string, only: (path: string) => boolean): void {
    const pad = this.config.padTokenId;
    if (pad === null) return;
    for (const [name, table] of this.paddingTables()) {
      if (!only(`${prefix}.${name}.weight`)) continue;
      const w = table.weight.toFloat32Array();
      w.fill(0, pad * table.dim, (pad + 1) * table.dim);
      table.weight.copyFrom(w);
    }
  }

  /** BERT's positions: 0…seq-1 in every row. */
  positionIds(_inputIds: Int32Array, shape: readonly [number, number]): Int32Array {
    const [batch, seq] = shape;
    return Int32Array.from({ length: batch * seq }, (_, i) => i % seq);
  }

  forward(inputIds: Int32Array, shape: readonly [number, number], tokenTypeIds: Int32Array): Tensor {
    let e = F.add(this.word_embeddings.forward(inputIds, shape), this.token_type_embeddings.forward(tokenTypeIds, shape));
    e = F.add(e, this.position_embeddings.forward(this.positionIds(inputIds, shape), shape));
    return this.dropout.forward(this.LayerNorm.forward(e));
  }
}

/** dense → dropout → LayerNorm(· + residual): BertSelfOutput and BertOutput alike. */
export class BertResidualOutput extends Module {
  dense: TensorLayer;
  LayerNorm: LayerNorm;
  dropout: Dropout;

  constructor(inFeatures: number, config: BertConfig, rng: Rng) {
    super();
    this.dense = this.addModule('dense', new Linear(inFeatures, config.hiddenSize, { rng }));
    this.LayerNorm = this.addModule('LayerNorm', new LayerNorm(config.hiddenSize, config.layerNormEps));
    this.dropout = this.addModule('dropout', new Dropout(config.hiddenDropoutProb));
  }

  forward(hidden: Tensor, residual: Tensor): Tensor {
    return this.LayerNorm.forward(F.add(this.dropout.forward(this.dense.forward(hidden)), residual));
  }
}

export class BertAttention extends Module {
  self: EncoderSelfAttention;
  output: BertResidualOutput;

  constructor(config: BertConfig, rng: Rng) {
    super();
    this.self = this.addModule('self', new EncoderSelfAttention(config, rng));
    this.output = this.addModule('output', new BertResidualOutput(config.hiddenSize, config, rng));
  }

  forward(hidden: Tensor, attentionMask: Float32Array | null): Tensor {
    return this.output.forward(this.self.forward(hidden, attentionMask), hidden);
  }
}

export class BertLayer extends Module {
  attention: BertAttention;
  intermediate: EncoderIntermediate;
  output: BertResidualOutput;

  constructor(config: BertConfig, rng: Rng) {
    super();
    this.attention = this.addModule('attention', new BertAttention(config, rng));
    this.intermediate = this.addModule('intermediate', new EncoderIntermediate(config, rng));
    this.output = this.addModule('output', new BertResidualOutput(config.intermediateSize, config, rng));
  }

  forward(hidden: Tensor, attentionMask: Float32Array | null): Tensor {
    const attended = this.attention.forward(hidden, attentionMask);
    return this.output.forward(this.intermediate.forward(attended), attended);
  }
}

export class BertEncoder extends Module {
  layer: ModuleList<BertLayer>;

  constructor(config: BertConfig, rng: Rng) {
    super();
    this.layer = this.addModule('layer', new ModuleList(Array.from({ length: config.numHiddenLayers }, () => new BertLayer(config, rng))));
  }

  forward(hidden: Tensor, attentionMask: Float32Array | null): Tensor {
    for (const layer of this.layer.items) hidden = layer.forward(hidden, attentionMask);
    return hidden;
  }
}

/** tanh(dense(first token)). */
export class BertPooler extends Module {
  dense: TensorLayer;

  constructor(config: BertConfig, rng: Rng) {
    super();
    this.dense = this.addModule('dense', new Linear(config.hiddenSize, config.hiddenSize, { rng }));
  }

  forward(hidden: Tensor): Tensor {
    return F.tanh(this.dense.forward(firstToken(hidden)));
  }
}

export class BertModel extends Module {
  readonly config: BertConfig;
  embeddings: BertEmbeddings;
  encoder: BertEncoder;
  pooler: BertPooler | null;

  constructor(config: BertConfig, rng: Rng, opts: { addPoolingLayer?: boolean; embeddings?: BertEmbeddings } = {}) {
    super();
    this.config = config;
    this.embeddings = this.addModule('embeddings', opts.embeddings ?? new BertEmbeddings(config, rng));
    this.encoder = this.addModule('encoder', new BertEncoder(config, rng));
    this.pooler = opts.addPoolingLayer === false ? null : this.addModule('pooler', new BertPooler(config, rng));
  }

  /** Final hidden states (batch, seq, hidden_size). */
  forward(inputIds: Int32Array, shape: readonly [number, number], opts: BertForwardOptions = {}): Tensor {
    this.checkInputs(inputIds, shape, opts);
    const [batch, seq] = shape;
    const tokenTypeIds = opts.tokenTypeIds ?? new Int32Array(batch * seq);
    const hidden = this.embeddings.forward(inputIds, shape, tokenTypeIds);
    return this.encoder.forward(hidden, opts.attentionMask ?? null);
  }

  private checkInputs(inputIds: Int32Array, shape: readonly [number, number], opts: BertForwardOptions): void {
    const [batch, seq] = shape;
    const { vocabSize, typeVocabSize, maxPositionEmbeddings } = this.config;
    const what = this.config.modelType === 'roberta' ? 'RoBERTa input' : 'BERT input';
    if (!Number.isInteger(batch) || !Number.isInteger(seq) || batch < 1 || seq < 1) fail(`${what}: shape [${shape.join(', ')}] must be two positive integers [batch, seq]`);
    if (inputIds.length !== batch * seq) fail(`${what}: ${inputIds.length} input ids for shape [${batch}, ${seq}]`);
    for (const id of inputIds) if (!(id >= 0 && id < vocabSize)) fail(`${what}: token id ${id} is out of range [0, ${vocabSize}) (vocab_size)`);
    for (const p of this.embeddings.positionIds(inputIds, shape)) {
      if (p >= maxPositionEmbeddings) fail(`${what}: sequence length ${seq} needs position ${p}, beyond the model's max_position_embeddings (${maxPositionEmbeddings}); truncate the input`);
    }
    if (opts.attentionMask && opts.attentionMask.length !== batch * seq) fail(`${what}: attention mask of ${opts.attentionMask.length} values for shape [${batch}, ${seq}]`);
    if (opts.tokenTypeIds) {
      if (opts.tokenTypeIds.length !== batch * seq) fail(`${what}: ${opts.tokenTypeIds.length} token type ids for shape [${batch}, ${seq}]`);
      for (const t of opts.tokenTypeIds) if (!(t >= 0 && t < typeVocabSize)) fail(`${what}: token type id ${t} is out of range [0, ${typeVocabSize}) (type_vocab_size)`);
    }
  }
}

export interface EncoderInitOptions {
  /** Generator for the random initialization (default: the global one). */
  rng?: Rng;
  /** false leaves the weights at zero: for models about to be loaded from a checkpoint. */
  init?: boolean;
}

/** BERT + pooler → dropout → `classifier` (Hugging Face's BertForSequenceClassification). */
export class BertForSequenceClassification extends Module {
  readonly modelType = 'bert' as const;
  readonly config: BertConfig;
  bert: BertModel;
  dropout: Dropout;
  classifier: TensorLayer;

  constructor(config: BertConfig, opts: EncoderInitOptions = {}) {
    super();
    if (config.modelType !== 'bert') throw new Error(`BertForSequenceClassification: config is for ${config.modelType}`);
    this.config = config;
    const zeros = new SkipInitRng(); // each weight is drawn once, by initWeights
    this.bert = this.addModule('bert', new BertModel(config, zeros));
    this.dropout = this.addModule('dropout', new Dropout(config.classifierDropout ?? config.hiddenDropoutProb));
    this.classifier = this.addModule('classifier', new Linear(config.hiddenSize, config.numLabels, { rng: zeros }));
    if (opts.init !== false) this.initWeights(opts.rng ?? defaultRng());
  }

  /** Logits (batch, num_labels). */
  forward(inputIds: Int32Array, shape: readonly [number, number], opts: BertForwardOptions = {}): Tensor {
    const hidden = this.bert.forward(inputIds, shape, opts);
    return this.classifier.forward(this.dropout.forward(this.bert.pooler!.forward(hidden)));
  }

  /** Hugging Face's loss for these logits (see sequenceClassificationLoss). */
  loss(logits: Tensor, labels: Int32Array | Float32Array): Tensor {
    return sequenceClassificationLoss(logits, labels, this.config);
  }

  /** Hugging Face's _init_weights, for every parameter or those `only` selects (a new head). */
  initWeights(rng: Rng, only: (path: string) => boolean = () => true): void {
    initEncoderWeights(this, this.config.initializerRange, rng, only);
    this.bert.embeddings.zeroPaddingRows('bert.embeddings', only);
  }
}

// ---------------------------------------------------------------- checkpoints

/** Checkpoint keys → BertForSequenceClassification paths; the pretraining heads (`cls.*`) are unused. */
export const bertCheckpointPath = encoderCheckpointPath('bert', /^cls\.|^(bert\.)?embeddings\.position_ids$/);

/** What a base checkpoint (bert-base-uncased) may lack: the classifier, and the pooler of a bare BertModel. */
export const bertNewlyInitialized = (path: string): boolean => /^(classifier|bert\.pooler)\./.test(path);
