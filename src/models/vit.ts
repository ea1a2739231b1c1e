// The Vision Transformer as in Hugging Face's modeling_vit.py (ViTForImageClassification): patches
// embedded by a Conv2d with stride = patch size, a class token, learned position embeddings
// (no interpolation: images must be image_size), pre-LayerNorm encoder layers, and a classifier on
// the class token. Module paths are Hugging Face's (`vit.encoder.layer.0.attention.attention.query`).
import { F, Tensor, defaultRng, type Rng } from '../tensor/index.js';
import { Conv2d, Dropout, LayerNorm, Linear, Module, ModuleList } from '../nn/index.js';
import { fail } from '../io/errors.js';
import { ACTIVATION_NAMES, type ActivationName } from './activations.js';
import { ConfigReader, asJsonObject, type JsonObject } from './config.js';
import { SkipInitRng, type TensorLayer } from './common.js';
import type { EncoderInitOptions } from './bert.js';
import {
  EncoderIntermediate, EncoderSelfAttention, classificationFieldsToJson, encoderCheckpointPath, firstToken, initEncoderWeights,
  readClassificationFields, sequenceClassificationLoss, type ClassificationConfig,
} from './encoder.js';

// ---------------------------------------------------------------- config

/** Hugging Face's ViTConfig, camelCased, with the classification fields. */
export interface ViTConfig extends ClassificationConfig {
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  intermediateSize: number;
  hiddenAct: ActivationName;
  hiddenDropoutProb: number;
  attentionProbsDropoutProb: number;
  initializerRange: number;
  layerNormEps: number;
  imageSize: number;
  patchSize: number;
  numChannels: number;
  qkvBias: boolean;
}

/** Validates a ViT config.json; defaults are ViTConfig's (ViT-Base/16 at 224×224). */
export function vitConfigFromJson(json: unknown, file: string): ViTConfig {
  const r = new ConfigReader(asJsonObject(json, file), file);
  r.modelType('vit');
  const config: ViTConfig = {
    hiddenSize: r.positiveInt('hidden_size', 768),
    numHiddenLayers: r.layerCount('num_hidden_layers', 12),
    numAttentionHeads: r.positiveInt('num_attention_heads', 12),
    intermediateSize: r.positiveInt('intermediate_size', 3072),
    hiddenAct: r.oneOf('hidden_act', ACTIVATION_NAMES, 'gelu'),
    hiddenDropoutProb: r.probability('hidden_dropout_prob', 0),
    attentionProbsDropoutProb: r.probability('attention_probs_dropout_prob', 0),
    initializerRange: r.positiveNumber('initializer_range', 0.02),
    layerNormEps: r.positiveNumber('layer_norm_eps', 1e-12),
    imageSize: r.positiveInt('image_size', 224),
    patchSize: r.positiveInt('patch_size', 16),
    numChannels: r.positiveInt('num_channels', 3),
    qkvBias: r.bool('qkv_bias', true),
    ...readClassificationFields(r),
  };
  if (config.hiddenSize % config.numAttentionHeads !== 0) r.fail('hidden_size', `(${config.hiddenSize}) must be divisible by "num_attention_heads" (${config.numAttentionHeads})`);
  if (config.imageSize % config.patchSize !== 0) r.fail('image_size', `(${config.imageSize}) must be a multiple of "patch_size" (${config.patchSize})`);
  return config;
}

export function vitConfigToJson(c: ViTConfig): JsonObject {
  return {
    architectures: ['ViTForImageClassification'],
    attention_probs_dropout_prob: c.attentionProbsDropoutProb,
    hidden_act: c.hiddenAct,
    hidden_dropout_prob: c.hiddenDropoutProb,
    hidden_size: c.hiddenSize,
    image_size: c.imageSize,
    initializer_range: c.initializerRange,
    intermediate_size: c.intermediateSize,
    layer_norm_eps: c.layerNormEps,
    model_type: 'vit',
    num_attention_heads: c.numAttentionHeads,
    num_channels: c.numChannels,
    num_hidden_layers: c.numHiddenLayers,
    patch_size: c.patchSize,
    qkv_bias: c.qkvBias,
    ...classificationFieldsToJson(c),
  };
}

// ---------------------------------------------------------------- layers

export class ViTPatchEmbeddings extends Module {
  readonly numPatches: number;
  projection: TensorLayer;

  constructor(readonly config: ViTConfig, rng: Rng) {
    super();
    this.numPatches = (config.imageSize / config.patchSize) ** 2;
    this.projection = this.addModule('projection', new Conv2d(config.numChannels, config.hiddenSize, config.patchSize, config.patchSize, 0, rng));
  }

  /** Images (N, C, H, W) → patch vectors (N, patches, hidden), row-major over the patch grid. */
  forward(pixels: Tensor): Tensor {
    const { numChannels, imageSize } = this.config;
    const [n, c, h, w] = pixels.shape;
    if (pixels.ndim !== 4 || c !== numChannels || h !== imageSize || w !== imageSize) {
      fail(`ViT input: expected images (N, ${numChannels}, ${imageSize}, ${imageSize}) (num_channels, image_size), got [${pixels.shape.join(', ')}]`);
    }
    const grid = this.projection.forward(pixels); // (N, hidden, H/p, W/p)
    return F.transpose(F.reshape(grid, [n, this.config.hiddenSize, this.numPatches]), 1, 2);
  }
}

export class ViTEmbeddings extends Module {
  cls_token: Tensor;
  position_embeddings: Tensor;
  patch_embeddings: ViTPatchEmbeddings;
  dropout: Dropout;

  constructor(config: ViTConfig, rng: Rng) {
    super();
    const hidden = config.hiddenSize;
    this.patch_embeddings = this.addModule('patch_embeddings', new ViTPatchEmbeddings(config, rng));
    this.cls_token = this.addParameter('cls_token', Tensor.zeros([1, 1, hidden]));
    this.position_embeddings = this.addParameter('position_embeddings', Tensor.zeros([1, this.patch_embeddings.numPatches + 1, hidden]));
    this.dropout = this.addModule('dropout', new Dropout(config.hiddenDropoutProb));
  }

  forward(pixels: Tensor): Tensor {
    const patches = this.patch_embeddings.forward(pixels);
    const [n, , hidden] = patches.shape;
    const tokens = F.concat([F.expand(this.cls_token, [n, 1, hidden]), patches], 1);
    return this.dropout.forward(F.add(tokens, this.position_embeddings));
  }
}

/** dense → dropout; the residual is added by ViTLayer (ViTSelfOutput) or here (ViTOutput). */
export class ViTDenseOutput extends Module {
  dense: TensorLayer;
  dropout: Dropout;

  constructor(inFeatures: number, config: ViTConfig, rng: Rng) {
    super();
    this.dense = this.addModule('dense', new Linear(inFeatures, config.hiddenSize, { rng }));
    this.dropout = this.addModule('dropout', new Dropout(config.hiddenDropoutProb));
  }

  forward(hidden: Tensor): Tensor {
    return this.dropout.forward(this.dense.forward(hidden));
  }
}

export class ViTAttention extends Module {
  attention: EncoderSelfAttention;
  output: ViTDenseOutput;

  constructor(config: ViTConfig, rng: Rng) {
    super();
    this.attention = this.addModule('attention', new EncoderSelfAttention(config, rng, config.qkvBias));
    this.output = this.addModule('output', new ViTDenseOutput(config.hiddenSize, config, rng));
  }

  forward(hidden: Tensor): Tensor {
    return this.output.forward(this.attention.forward(hidden));
  }
}

/** Pre-LayerNorm block: h += attention(LN(h)); h += MLP(LN(h)). */
export class ViTLayer extends Module {
  attention: ViTAttention;
  intermediate: EncoderIntermediate;
  output: ViTDenseOutput;
  layernorm_before: LayerNorm;
  layernorm_after: LayerNorm;

  constructor(config: ViTConfig, rng: Rng) {
    super();
    this.attention = this.addModule('attention', new ViTAttention(config, rng));
    this.intermediate = this.addModule('intermediate', new EncoderIntermediate(config, rng));
    this.output = this.addModule('output', new ViTDenseOutput(config.intermediateSize, config, rng));
    this.layernorm_before = this.addModule('layernorm_before', new LayerNorm(config.hiddenSize, config.layerNormEps));
    this.layernorm_after = this.addModule('layernorm_after', new LayerNorm(config.hiddenSize, config.layerNormEps));
  }

  forward(hidden: Tensor): Tensor {
    hidden = F.add(this.attention.forward(this.layernorm_before.forward(hidden)), hidden);
    return F.add(this.output.forward(this.intermediate.forward(this.layernorm_after.forward(hidden))), hidden);
  }
}

export class ViTEncoder extends Module {
  layer: ModuleList<ViTLayer>;

  constructor(config: ViTConfig, rng: Rng) {
    super();
    this.layer = this.addModule('layer', new ModuleList(Array.from({ length: config.numHiddenLayers }, () => new ViTLayer(config, rng))));
  }

  forward(hidden: Tensor): Tensor {
    for (const layer of this.layer.items) hidden = layer.forward(hidden);
    return hidden;
  }
}

/** ViTModel without the pooler (as ViTForImageClassification builds it). */
export class ViTModel extends Module {
  embeddings: ViTEmbeddings;
  encoder: ViTEncoder;
  layernorm: LayerNorm;

  constructor(config: ViTConfig, rng: Rng) {
    super();
    this.embeddings = this.addModule('embeddings', new ViTEmbeddings(config, rng));
    this.encoder = this.addModule('encoder', new ViTEncoder(config, rng));
    this.layernorm = this.addModule('layernorm', new LayerNorm(config.hiddenSize, config.layerNormEps));
  }

  /** Final hidden states (N, patches + 1, hidden), the class token first. */
  forward(pixels: Tensor): Tensor {
    return this.layernorm.forward(this.encoder.forward(this.embeddings.forward(pixels)));
  }
}

export class ViTForImageClassification extends Module {
  readonly modelType = 'vit' as const;
  readonly config: ViTConfig;
  vit: ViTModel;
  classifier: TensorLayer;

  constructor(config: ViTConfig, opts: EncoderInitOptions = {}) {
    super();
    this.config = config;
    const zeros = new SkipInitRng(); // each weight is drawn once, by initWeights
    this.vit = this.addModule('vit', new ViTModel(config, zeros));
    this.classifier = this.addModule('classifier', new Linear(config.hiddenSize, config.numLabels, { rng: zeros }));
    if (opts.init !== false) this.initWeights(opts.rng ?? defaultRng());
  }

  /** Images (N, num_channels, image_size, image_size) → logits (N, num_labels). */
  forward(pixels: Tensor): Tensor {
    return this.classifier.forward(firstToken(this.vit.forward(pixels)));
  }

  loss(logits: Tensor, labels: Int32Array | Float32Array): Tensor {
    return sequenceClassificationLoss(logits, labels, this.config);
  }

  /**
   * Hugging Face's _init_weights (truncated normals there, cut at ±2 — 100σ for std 0.02 — so plain
   * normals here), for every parameter or those `only` selects.
   */
  initWeights(rng: Rng, only?: (path: string) => boolean): void {
    initEncoderWeights(this, this.config.initializerRange, rng, only);
  }
}

// ---------------------------------------------------------------- checkpoints

/** Checkpoint keys → ViTForImageClassification paths; ViTModel's pooler is unused. */
export const vitCheckpointPath = encoderCheckpointPath('vit', /^(vit\.)?pooler\./);

/** What a base checkpoint lacks (or holds for another label set): the classifier. */
export const vitNewlyInitialized = (path: string): boolean => path.startsWith('classifier.');
