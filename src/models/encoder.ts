// Pieces the encoder families (BERT, RoBERTa, ViT) share: bidirectional multi-head attention,
// Hugging Face's classification fields (num_labels, id2label, problem_type) and its sequence
// classification loss, and the _init_weights rule of those models.
import { F, Tensor, type Rng } from '../tensor/index.js';
import { Dropout, LayerNorm, Linear, Module } from '../nn/index.js';
import { fail } from '../io/errors.js';
import { Activation, type ActivationName } from './activations.js';
import type { ConfigReader, JsonObject } from './config.js';
import { initNormal, type TensorLayer } from './common.js';

// ---------------------------------------------------------------- attention

/** (B, T, H·D) → (B, H, T, D) */
export function splitHeads(x: Tensor, numHeads: number): Tensor {
  const [b, t, c] = x.shape;
  return F.permute(F.reshape(x, [b, t, numHeads, c / numHeads]), [0, 2, 1, 3]);
}

/** (B, H, T, D) → (B, T, H·D) */
export function mergeHeads(x: Tensor): Tensor {
  const [b, h, t, d] = x.shape;
  return F.reshape(F.permute(x, [0, 2, 1, 3]), [b, t, h * d]);
}

/** Additive score for hidden keys in the eager path (finite, so a row with no visible key stays finite). */
const MASKED_SCORE = -1e9;

/**
 * softmax(q·kᵀ/√d + mask)·v over all keys (no causal mask); `keyMask` (B·T) marks keys to attend
 * (1) or skip (0). The fused kernel has no dropout on the attention weights, so while that dropout
 * is live (training with p > 0) this takes the eager path, as Hugging Face's eager attention does.
 */
export function bidirectionalAttention(query: Tensor, key: Tensor, value: Tensor, keyMask: Float32Array | null, dropout: Dropout): Tensor {
  if (!(dropout.training && dropout.p > 0)) return F.attention(query, key, value, { keyMask });
  const [batch, , , headDim] = query.shape;
  const t = key.shape[2];
  let weights = F.scale(F.matmul(query, key, { transB: true }), 1 / Math.sqrt(headDim));
  if (keyMask) {
    const add = new Float32Array(batch * t);
    for (let i = 0; i < add.length; i++) if (keyMask[i] === 0) add[i] = MASKED_SCORE;
    weights = F.add(weights, Tensor.fromArray(add, [batch, 1, 1, t]));
  }
  return F.matmul(dropout.forward(F.softmax(weights)), value);
}

/** The config fields the shared layers read (BertConfig and ViTConfig both have them). */
export interface EncoderDims {
  hiddenSize: number;
  numAttentionHeads: number;
  intermediateSize: number;
  hiddenAct: ActivationName;
  attentionProbsDropoutProb: number;
}

/**
 * `query`, `key`, `value` projections and attention over all tokens: Hugging Face's
 * BertSelfAttention, and ViTSelfAttention (a copy of it there, with qkv_bias).
 */
export class EncoderSelfAttention extends Module {
  readonly numHeads: number;
  query: TensorLayer;
  key: TensorLayer;
  value: TensorLayer;
  dropout: Dropout;

  constructor(config: EncoderDims, rng: Rng, qkvBias = true) {
    super();
    this.numHeads = config.numAttentionHeads;
    const h = config.hiddenSize;
    this.query = this.addModule('query', new Linear(h, h, { bias: qkvBias, rng }));
    this.key = this.addModule('key', new Linear(h, h, { bias: qkvBias, rng }));
    this.value = this.addModule('value', new Linear(h, h, { bias: qkvBias, rng }));
    this.dropout = this.addModule('dropout', new Dropout(config.attentionProbsDropoutProb));
  }

  /** hidden (B, T, C) → context (B, T, C); `attentionMask` (B·T): 1 attends, 0 is padding. */
  forward(hidden: Tensor, attentionMask: Float32Array | null = null): Tensor {
    const q = splitHeads(this.query.forward(hidden), this.numHeads);
    const k = splitHeads(this.key.forward(hidden), this.numHeads);
    const v = splitHeads(this.value.forward(hidden), this.numHeads);
    return mergeHeads(bidirectionalAttention(q, k, v, attentionMask, this.dropout));
  }
}

/** dense → activation (hidden_act): BertIntermediate and ViTIntermediate. */
export class EncoderIntermediate extends Module {
  dense: TensorLayer;
  intermediate_act_fn: Activation;

  constructor(config: EncoderDims, rng: Rng) {
    super();
    this.dense = this.addModule('dense', new Linear(config.hiddenSize, config.intermediateSize, { rng }));
    this.intermediate_act_fn = this.addModule('intermediate_act_fn', new Activation(config.hiddenAct));
  }

  forward(hidden: Tensor): Tensor {
    return this.intermediate_act_fn.forward(this.dense.forward(hidden));
  }
}

/** The first token's vector of every row: hidden (B, T, C) → (B, C) ([CLS], <s>, ViT's class token). */
export function firstToken(hidden: Tensor): Tensor {
  const [b, , c] = hidden.shape;
  return F.reshape(F.slice(hidden, 1, 0, 1), [b, c]);
}

// ---------------------------------------------------------------- classification config

export type ProblemType = 'regression' | 'single_label_classification' | 'multi_label_classification';
export const PROBLEM_TYPES: readonly ProblemType[] = ['regression', 'single_label_classification', 'multi_label_classification'];

export interface ClassificationConfig {
  numLabels: number;
  /** null: inferred per batch as Hugging Face does (1 label → regression, integer labels → single-label). */
  problemType: ProblemType | null;
  /** Label names by index, as config.json's id2label. */
  id2label: string[];
}

/**
 * num_labels / id2label / problem_type as PretrainedConfig reads them: id2label fixes the count;
 * num_labels alone makes LABEL_0…; neither means 2 labels.
 */
export function readClassificationFields(r: ConfigReader): ClassificationConfig {
  let id2label: string[] | null = null;
  if (r.has('id2label')) {
    const raw = r.json['id2label'];
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) r.fail('id2label', 'must be an object mapping "0", "1", … to label names');
    const entries = Object.entries(raw as JsonObject);
    id2label = new Array<string>(entries.length);
    for (const [k, v] of entries) {
      const i = Number(k);
      if (!Number.isInteger(i) || i < 0 || i >= entries.length || String(i) !== k) r.fail('id2label', `keys must be "0" … "${entries.length - 1}", got ${JSON.stringify(k)}`);
      id2label[i] = typeof v === 'string' ? v : String(v);
    }
    if (entries.length === 0) r.fail('id2label', 'must name at least one label');
  }
  let numLabels = id2label?.length ?? 2;
  if (r.has('num_labels')) {
    numLabels = r.positiveInt('num_labels');
    if (id2label && id2label.length !== numLabels) r.fail('num_labels', `(${numLabels}) disagrees with the ${id2label.length} labels of "id2label"`);
  }
  const problemType = r.has('problem_type') ? r.oneOf('problem_type', PROBLEM_TYPES) : null;
  return { numLabels, problemType, id2label: id2label ?? Array.from({ length: numLabels }, (_, i) => `LABEL_${i}`) };
}

export function classificationFieldsToJson(c: ClassificationConfig): JsonObject {
  return {
    id2label: Object.fromEntries(c.id2label.map((name, i) => [String(i), name])),
    label2id: Object.fromEntries(c.id2label.map((name, i) => [name, i])),
    ...(c.problemType ? { problem_type: c.problemType } : {}),
  };
}

// ---------------------------------------------------------------- loss

/**
 * Hugging Face's *ForSequenceClassification loss. `labels`: Int32Array (batch) class indices, or
 * Float32Array — regression targets (batch·numLabels) or multi-label targets in [0, 1]
 * (batch·numLabels). Without a problem_type: 1 label → regression (MSE), integer labels →
 * single_label_classification (cross-entropy), else multi_label_classification (BCE with logits).
 */
export function sequenceClassificationLoss(logits: Tensor, labels: Int32Array | Float32Array, config: ClassificationConfig): Tensor {
  const [batch, numLabels] = logits.shape;
  if (logits.ndim !== 2 || numLabels !== config.numLabels) throw new Error(`classification loss: logits [${logits.shape.join(', ')}] are not (batch, ${config.numLabels})`);
  const problem = config.problemType ?? (numLabels === 1 ? 'regression' : labels instanceof Int32Array ? 'single_label_classification' : 'multi_label_classification');
  if (problem === 'single_label_classification') {
    if (labels.length !== batch) fail(`classification loss: ${labels.length} labels for a batch of ${batch}`);
    const targets = Int32Array.from(labels, (v) => {
      if (!Number.isInteger(v) || v < 0 || v >= numLabels) fail(`classification loss: label ${v} is not a class index in [0, ${numLabels})`);
      return v;
    });
    return F.crossEntropy(logits, targets);
  }
  if (labels.length !== batch * numLabels) fail(`classification loss: ${labels.length} ${problem === 'regression' ? 'targets' : 'label values'} for ${batch}×${numLabels} logits`);
  const target = Tensor.fromArray(Float32Array.from(labels), [batch, numLabels]);
  if (problem === 'regression') return F.mean(F.square(F.sub(logits, target)));
  return bceWithLogits(logits, target);
}

/**
 * mean(y·softplus(−x) + (1−y)·softplus(x)) through the two-class cross-entropy kernel: logits
 * [0, x] give −log σ(x) for class 1 and −log(1−σ(x)) for class 0, stable and exact in gradient.
 */
function bceWithLogits(x: Tensor, y: Tensor): Tensor {
  const n = x.size;
  const pair = F.concat([Tensor.zeros([n, 1]), F.reshape(x, [n, 1])], 1);
  const positive = F.crossEntropy(pair, new Int32Array(n).fill(1), { reduction: 'none' });
  const negative = F.crossEntropy(pair, new Int32Array(n), { reduction: 'none' });
  const yFlat = F.reshape(y, [n]);
  return F.mean(F.add(F.mul(yFlat, positive), F.mul(F.affine(yFlat, -1, 1), negative)));
}

// ---------------------------------------------------------------- initialization

/**
 * Hugging Face's _init_weights for these encoders: LayerNorm weight 1 and bias 0, every other
 * matrix (and the class/position embeddings) N(0, initializer_range²), other vectors 0. `only`
 * restricts it to some parameter paths (a freshly added head).
 */
export function initEncoderWeights(model: Module, std: number, rng: Rng, only: (path: string) => boolean = () => true): void {
  for (const [modulePath, m] of model.namedModules()) {
    for (const [name, t] of m.ownParameters()) {
      if (!only(modulePath ? `${modulePath}.${name}` : name)) continue;
      if (m instanceof LayerNorm) t.copyFrom(new Float32Array(t.size).fill(name === 'weight' ? 1 : 0));
      else if (t.ndim >= 2) initNormal(t, std, rng);
      else t.copyFrom(new Float32Array(t.size));
    }
  }
}

// ---------------------------------------------------------------- checkpoint keys

/**
 * How a checkpoint key maps to a parameter path of a task model whose base sits under `prefix`
 * (Hugging Face's base_model_prefix): keys of a bare base-model checkpoint (`embeddings.…`) gain the
 * prefix, TF-era `LayerNorm.gamma/beta` read as weight/bias, and keys matching `skip` (pretraining
 * heads, unused poolers, position-id buffers) are left out of the model.
 */
export function encoderCheckpointPath(prefix: string, skip: RegExp): (key: string) => string | null {
  return (key) => {
    if (skip.test(key)) return null;
    const k = key.replace(/(LayerNorm|layernorm\w*)\.gamma$/, '$1.weight').replace(/(LayerNorm|layernorm\w*)\.beta$/, '$1.bias');
    return k.startsWith(`${prefix}.`) || k.startsWith('classifier.') ? k : `${prefix}.${k}`;
  };
}
