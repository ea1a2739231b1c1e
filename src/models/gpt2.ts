// GPT-2 as in Hugging Face's modeling_gpt2.py (GPT2LMHeadModel). The module tree and parameter
// names are Hugging Face's, so checkpoints load by name and PEFT adapters address layers by the
// same dotted paths (`transformer.h.0.attn.c_attn`). Every layer calls its children through their
// properties, so a child that PEFT swaps in is the one that runs.
import { F, Tensor, defaultRng, type Rng } from '../tensor/index.js';
import { Conv1D, Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, labelSmoothedCrossEntropy } from '../nn/index.js';
import { fail } from '../io/errors.js';
import { Activation, ACTIVATION_NAMES, type ActivationName } from './activations.js';
import { ConfigReader, asJsonObject, type JsonObject } from './config.js';
import { SkipInitRng, initNormal, type TensorLayer } from './common.js';
import { RaggedKVCache, RaggedLayerKV, defaultPositions, hiddenForLogits, layerCache, pastLength, type CausalLMForwardOptions, type LayerKV } from './kv-cache.js';

// ---------------------------------------------------------------- config

/** Hugging Face's GPT2Config, camelCased; defaults are those of GPT2Config (the 124M model). */
export interface GPT2Config {
  vocabSize: number;
  nPositions: number;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  /** MLP width; null means 4·nEmbd. */
  nInner: number | null;
  activationFunction: ActivationName;
  residPdrop: number;
  embdPdrop: number;
  attnPdrop: number;
  layerNormEpsilon: number;
  initializerRange: number;
  scaleAttnWeights: boolean;
  scaleAttnByInverseLayerIdx: boolean;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenId: number | null;
}

/** Validates a GPT-2 config.json; errors read `<file>: field "n_embd" must be a positive integer, …`. */
export function gpt2ConfigFromJson(json: unknown, file: string): GPT2Config {
  const r = new ConfigReader(asJsonObject(json, file), file);
  r.modelType('gpt2');
  if (r.has('add_cross_attention') && r.bool('add_cross_attention')) r.fail('add_cross_attention', 'is not supported (GPT-2 as a decoder only)');
  const tokenId = (field: string): number | null => (field in r.json ? r.optionalIndex(field) : 50256);
  const config: GPT2Config = {
    vocabSize: r.positiveInt('vocab_size', 50257),
    nPositions: r.positiveInt('n_positions', 1024),
    nEmbd: r.positiveInt('n_embd', 768),
    nLayer: r.layerCount('n_layer', 12),
    nHead: r.positiveInt('n_head', 12),
    nInner: r.has('n_inner') ? r.positiveInt('n_inner') : null,
    activationFunction: r.oneOf('activation_function', ACTIVATION_NAMES, 'gelu_new'),
    residPdrop: r.probability('resid_pdrop', 0.1),
    embdPdrop: r.probability('embd_pdrop', 0.1),
    attnPdrop: r.probability('attn_pdrop', 0.1),
    layerNormEpsilon: r.positiveNumber('layer_norm_epsilon', 1e-5),
    initializerRange: r.positiveNumber('initializer_range', 0.02),
    scaleAttnWeights: r.bool('scale_attn_weights', true),
    scaleAttnByInverseLayerIdx: r.bool('scale_attn_by_inverse_layer_idx', false),
    tieWordEmbeddings: r.bool('tie_word_embeddings', true),
    bosTokenId: tokenId('bos_token_id'),
    eosTokenId: tokenId('eos_token_id'),
  };
  if (config.nEmbd % config.nHead !== 0) r.fail('n_embd', `(${config.nEmbd}) must be divisible by "n_head" (${config.nHead})`);
  return config;
}

/** The config.json Hugging Face would write for `config`. */
export function gpt2ConfigToJson(c: GPT2Config): JsonObject {
  return {
    activation_function: c.activationFunction,
    architectures: ['GPT2LMHeadModel'],
    attn_pdrop: c.attnPdrop,
    bos_token_id: c.bosTokenId,
    embd_pdrop: c.embdPdrop,
    eos_token_id: c.eosTokenId,
    initializer_range: c.initializerRange,
    layer_norm_epsilon: c.layerNormEpsilon,
    model_type: 'gpt2',
    n_embd: c.nEmbd,
    n_head: c.nHead,
    n_inner: c.nInner,
    n_layer: c.nLayer,
    n_positions: c.nPositions,
    resid_pdrop: c.residPdrop,
    scale_attn_by_inverse_layer_idx: c.scaleAttnByInverseLayerIdx,
    scale_attn_weights: c.scaleAttnWeights,
    tie_word_embeddings: c.tieWordEmbeddings,
    vocab_size: c.vocabSize,
  };
}

// ---------------------------------------------------------------- layers

/** Additive score for hidden keys in the eager path: finite, so a row with no visible key stays finite. */
const MASKED_SCORE = -1e9;

export class GPT2Attention extends Module {
  readonly numHeads: number;
  readonly headDim: number;
  readonly splitSize: number;
  readonly scale: number;
  c_attn: TensorLayer;
  c_proj: TensorLayer;
  attn_dropout: Dropout;
  resid_dropout: Dropout;

  constructor(config: GPT2Config, layerIdx: number, rng: Rng) {
    super();
    this.numHeads = config.nHead;
    this.headDim = config.nEmbd / config.nHead;
    this.splitSize = config.nEmbd;
    let scale = config.scaleAttnWeights ? 1 / Math.sqrt(this.headDim) : 1;
    if (config.scaleAttnByInverseLayerIdx) scale /= layerIdx + 1;
    this.scale = scale;
    this.c_attn = this.addModule('c_attn', new Conv1D(3 * config.nEmbd, config.nEmbd, rng));
    this.c_proj = this.addModule('c_proj', new Conv1D(config.nEmbd, config.nEmbd, rng));
    this.attn_dropout = this.addModule('attn_dropout', new Dropout(config.attnPdrop));
    this.resid_dropout = this.addModule('resid_dropout', new Dropout(config.residPdrop));
  }

  /**
   * hidden (B, T, C) → (B, T, C); `attentionMask` marks keys to attend (1) or skip (0): (B·T), or
   * (B·(past+T)) with a `cache`, whose keys and values come first and get this step's appended.
   */
  forward(hidden: Tensor, attentionMask: Float32Array | null = null, cache: LayerKV | RaggedLayerKV | null = null): Tensor {
    const qkv = this.c_attn.forward(hidden);
    const s = this.splitSize;
    if (cache instanceof RaggedLayerKV) {
      // a ragged batch stays position-major (1, T, heads, D): no head transposes
      const t = hidden.shape[1];
      const heads = (x: Tensor): Tensor => F.reshape(x, [1, t, this.numHeads, this.headDim]);
      const out = cache.attend(heads(F.slice(qkv, 2, 0, s)), heads(F.slice(qkv, 2, s, 2 * s)), heads(F.slice(qkv, 2, 2 * s, 3 * s)), this.scale);
      return this.resid_dropout.forward(this.c_proj.forward(F.reshape(out, [1, t, this.numHeads * this.headDim])));
    }
    const query = this.splitHeads(F.slice(qkv, 2, 0, s));
    let key = this.splitHeads(F.slice(qkv, 2, s, 2 * s));
    let value = this.splitHeads(F.slice(qkv, 2, 2 * s, 3 * s));
    // The fused kernel has no dropout on the attention weights; when that dropout is live
    // (training with attn_pdrop > 0) take the eager path, as Hugging Face's eager attention does.
    const eager = this.training && this.attn_dropout.p > 0;
    if (eager && cache) throw new Error('GPT2Attention: a KV cache is for inference; call eval() first');
    let kvLength: number | undefined;
    if (cache) ({ key, value, length: kvLength } = cache.update(key, value));
    const attnOutput = eager
      ? this.eagerAttention(query, key, value, attentionMask)
      : F.attention(query, key, value, { causal: true, keyMask: attentionMask, scale: this.scale, kvLength });
    return this.resid_dropout.forward(this.c_proj.forward(this.mergeHeads(attnOutput)));
  }

  private eagerAttention(query: Tensor, key: Tensor, value: Tensor, attentionMask: Float32Array | null): Tensor {
    const [batch, , t] = query.shape;
    const mask = new Float32Array(batch * t * t);
    for (let b = 0; b < batch; b++) {
      for (let i = 0; i < t; i++) {
        for (let j = 0; j < t; j++) {
          const visible = j <= i && (attentionMask === null || attentionMask[b * t + j] !== 0);
          if (!visible) mask[(b * t + i) * t + j] = MASKED_SCORE;
        }
      }
    }
    let weights = F.scale(F.matmul(query, key, { transB: true }), this.scale);
    weights = F.softmax(F.add(weights, Tensor.fromArray(mask, [batch, 1, t, t])));
    return F.matmul(this.attn_dropout.forward(weights), value);
  }

  /** (B, T, H·D) → (B, H, T, D) */
  private splitHeads(x: Tensor): Tensor {
    const [b, t] = x.shape;
    return F.permute(F.reshape(x, [b, t, this.numHeads, this.headDim]), [0, 2, 1, 3]);
  }

  /** (B, H, T, D) → (B, T, H·D) */
  private mergeHeads(x: Tensor): Tensor {
    const [b, , t] = x.shape;
    return F.reshape(F.permute(x, [0, 2, 1, 3]), [b, t, this.numHeads * this.headDim]);
  }
}

export class GPT2MLP extends Module {
  c_fc: TensorLayer;
  c_proj: TensorLayer;
  act: Activation;
  dropout: Dropout;

  constructor(intermediateSize: number, config: GPT2Config, rng: Rng) {
    super();
    this.c_fc = this.addModule('c_fc', new Conv1D(intermediateSize, config.nEmbd, rng));
    this.c_proj = this.addModule('c_proj', new Conv1D(config.nEmbd, intermediateSize, rng));
    this.act = this.addModule('act', new Activation(config.activationFunction));
    this.dropout = this.addModule('dropout', new Dropout(config.residPdrop));
  }

  forward(hidden: Tensor): Tensor {
    return this.dropout.forward(this.c_proj.forward(this.act.forward(this.c_fc.forward(hidden))));
  }
}

export class GPT2Block extends Module {
  ln_1: LayerNorm;
  attn: GPT2Attention;
  ln_2: LayerNorm;
  mlp: GPT2MLP;

  constructor(config: GPT2Config, layerIdx: number, rng: Rng) {
    super();
    const inner = config.nInner ?? 4 * config.nEmbd;
    this.ln_1 = this.addModule('ln_1', new LayerNorm(config.nEmbd, config.layerNormEpsilon));
    this.attn = this.addModule('attn', new GPT2Attention(config, layerIdx, rng));
    this.ln_2 = this.addModule('ln_2', new LayerNorm(config.nEmbd, config.layerNormEpsilon));
    this.mlp = this.addModule('mlp', new GPT2MLP(inner, config, rng));
  }

  forward(hidden: Tensor, attentionMask: Float32Array | null = null, cache: LayerKV | RaggedLayerKV | null = null): Tensor {
    hidden = F.add(hidden, this.attn.forward(this.ln_1.forward(hidden), attentionMask, cache));
    return F.add(hidden, this.mlp.forward(this.ln_2.forward(hidden)));
  }
}

/** attentionMask, positionIds and a KV cache (see CausalLMForwardOptions). */
export type GPT2ForwardOptions = CausalLMForwardOptions;

export class GPT2Model extends Module {
  readonly config: GPT2Config;
  wte: Embedding;
  wpe: Embedding;
  drop: Dropout;
  h: ModuleList<GPT2Block>;
  ln_f: LayerNorm;

  constructor(config: GPT2Config, rng: Rng) {
    super();
    this.config = config;
    this.wte = this.addModule('wte', new Embedding(config.vocabSize, config.nEmbd, rng));
    this.wpe = this.addModule('wpe', new Embedding(config.nPositions, config.nEmbd, rng));
    this.drop = this.addModule('drop', new Dropout(config.embdPdrop));
    const blocks = Array.from({ length: config.nLayer }, (_, i) => new GPT2Block(config, i, rng));
    this.h = this.addModule('h', new ModuleList(blocks));
    this.ln_f = this.addModule('ln_f', new LayerNorm(config.nEmbd, config.layerNormEpsilon));
  }

  /** Final hidden states (batch, seq, n_embd). */
  forward(inputIds: Int32Array, shape: readonly [number, number], opts: GPT2ForwardOptions = {}): Tensor {
    const [batch, seq] = shape;
    const past = pastLength(opts.cache);
    this.checkInputs(inputIds, shape, past, opts);
    const positions = opts.positionIds
      ? this.wpe.forward(opts.positionIds, [batch, seq])
      : this.wpe.forward(defaultPositions(past, seq), [seq]); // broadcast over the batch
    let hidden = this.drop.forward(F.add(this.wte.forward(inputIds, [batch, seq]), positions));
    const mask = opts.attentionMask ?? null;
    this.h.items.forEach((block, i) => (hidden = block.forward(hidden, mask, layerCache(opts.cache, i))));
    return this.ln_f.forward(hidden);
  }

  private checkInputs(inputIds: Int32Array, shape: readonly [number, number], past: number, opts: GPT2ForwardOptions): void {
    const [batch, seq] = shape;
    const { vocabSize, nPositions } = this.config;
    if (!Number.isInteger(batch) || !Number.isInteger(seq) || batch < 1 || seq < 1) fail(`GPT-2 input: shape [${shape.join(', ')}] must be two positive integers [batch, seq]`);
    if (inputIds.length !== batch * seq) fail(`GPT-2 input: ${inputIds.length} input ids for shape [${batch}, ${seq}]`);
    const ragged = opts.cache instanceof RaggedKVCache;
    if (ragged && (batch !== 1 || !opts.positionIds || opts.attentionMask)) fail('GPT-2 input: a ragged batch is one row of tokens with positionIds and no attention mask');
    if (!ragged && past + seq > nPositions) fail(`GPT-2 input: sequence length ${past + seq} exceeds the model's n_positions (${nPositions}); truncate or split the input`);
    for (const id of inputIds) if (!(id >= 0 && id < vocabSize)) fail(`GPT-2 input: token id ${id} is out of range [0, ${vocabSize}) (vocab_size)`);
    const keys = past + seq;
    if (opts.attentionMask && opts.attentionMask.length !== batch * keys) fail(`GPT-2 input: attention mask of ${opts.attentionMask.length} values for ${batch} × ${keys} keys`);
    if (opts.positionIds) {
      if (opts.positionIds.length !== batch * seq) fail(`GPT-2 input: ${opts.positionIds.length} position ids for shape [${batch}, ${seq}]`);
      for (const p of opts.positionIds) if (!(p >= 0 && p < nPositions)) fail(`GPT-2 input: position id ${p} is out of range [0, ${nPositions}) (n_positions)`);
    }
  }
}

export interface GPT2InitOptions {
  /** Generator for the random initialization (default: the global one). */
  rng?: Rng;
  /** false leaves the weights at zero: for models about to be loaded from a checkpoint. */
  init?: boolean;
}

/** GPT-2 with a language-modelling head; `lm_head.weight` is `transformer.wte.weight` when tied. */
export class GPT2LMHeadModel extends Module {
  readonly modelType = 'gpt2' as const;
  readonly config: GPT2Config;
  transformer: GPT2Model;
  lm_head: TensorLayer;

  constructor(config: GPT2Config, opts: GPT2InitOptions = {}) {
    super();
    this.config = config;
    const zeros = new SkipInitRng(); // each weight is drawn once, below
    this.transformer = this.addModule('transformer', new GPT2Model(config, zeros));
    this.lm_head = this.addModule('lm_head', new Linear(config.nEmbd, config.vocabSize, { bias: false, rng: zeros }));
    if (config.tieWordEmbeddings) this.tieWeights();
    if (opts.init !== false) this.initWeights(opts.rng ?? defaultRng());
  }

  /** Longest sequence the model takes (learned positions): n_positions. */
  get contextLength(): number {
    return this.config.nPositions;
  }

  /** Tokens that end generation: eos_token_id. */
  get eosTokenIds(): number[] {
    return this.config.eosTokenId === null ? [] : [this.config.eosTokenId];
  }

  /** Make `lm_head.weight` the very tensor `transformer.wte.weight` (gradients reach it from both uses). */
  tieWeights(): void {
    this.lm_head.setParameter('weight', this.transformer.wte.weight);
  }

  /** Logits (batch, seq, vocab_size); (batch, n, vocab_size) with `logitsToKeep` n. */
  forward(inputIds: Int32Array, shape: readonly [number, number], opts: GPT2ForwardOptions = {}): Tensor {
    return this.lm_head.forward(this.forwardHidden(inputIds, shape, opts));
  }

  /** What `lm_head` maps to the logits: the final hidden states (batch, seq, n_embd), or the rows `logitsToKeep` / `logitsAt` pick. */
  forwardHidden(inputIds: Int32Array, shape: readonly [number, number], opts: GPT2ForwardOptions = {}): Tensor {
    return hiddenForLogits(this.transformer.forward(inputIds, shape, opts), opts);
  }

  /** Hugging Face's _init_weights: N(0, initializer_range) matrices, c_proj scaled by 1/√(2·n_layer). */
  private initWeights(rng: Rng): void {
    const std = this.config.initializerRange;
    for (const [name, t] of this.namedParameters()) {
      if (t.ndim !== 2) continue; // biases stay 0, LayerNorm weights 1
      initNormal(t, name.endsWith('c_proj.weight') ? std / Math.sqrt(2 * this.config.nLayer) : std, rng);
    }
  }
}

// ---------------------------------------------------------------- loss

/**
 * Causal LM loss as Hugging Face computes it: logits at position t predict token t+1 of `labels`
 * (default: the input ids); the mean cross-entropy over targets that are not `ignoreIndex`.
 * Shifting is done on the targets (the last position of each row gets none), so the logits are
 * used in place. `labelSmoothing` ε > 0 mixes in the uniform distribution (torch's label_smoothing).
 */
export function causalLmLoss(logits: Tensor, inputIds: Int32Array, shape: readonly [number, number], ignoreIndex = -100, labels?: Int32Array, labelSmoothing = 0): Tensor {
  const [batch, seq] = shape;
  const source = labels ?? inputIds;
  if (logits.ndim !== 3 || logits.shape[0] !== batch || logits.shape[1] !== seq) {
    throw new Error(`causalLmLoss: logits [${logits.shape.join(', ')}] do not match shape [${batch}, ${seq}]`);
  }
  if (source.length !== batch * seq) throw new Error(`causalLmLoss: ${source.length} labels for shape [${batch}, ${seq}]`);
  const targets = shiftedTargets(source, batch, seq, ignoreIndex);
  return labelSmoothing > 0 ? labelSmoothedCrossEntropy(logits, targets, labelSmoothing, ignoreIndex) : F.crossEntropy(logits, targets, { ignoreIndex });
}

/** causalLmLoss's targets: labels (default the input ids) shifted left by one, ignoreIndex at each row's end. */
function shiftedTargets(source: Int32Array, batch: number, seq: number, ignoreIndex: number): Int32Array {
  const targets = new Int32Array(batch * seq).fill(ignoreIndex);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t + 1 < seq; t++) targets[b * seq + t] = source[b * seq + t + 1];
  }
  return targets;
}

export interface CausalLmForwardLossOptions {
  /** 1 = attend, 0 = padding, row-major (batch, seq). */
  attentionMask?: Float32Array;
  ignoreIndex?: number;
  /** Default: the input ids. */
  labels?: Int32Array;
  labelSmoothing?: number;
}

/** A causal LM whose logits are lm_head(forwardHidden(…)) (GPT-2, Llama). */
interface HeadedCausalLM {
  forward(inputIds: Int32Array, shape: readonly [number, number], opts?: { attentionMask?: Float32Array }): Tensor;
  forwardHidden?(inputIds: Int32Array, shape: readonly [number, number], opts?: { attentionMask?: Float32Array }): Tensor;
  readonly lm_head?: unknown;
}

/** The head's float32 (vocab, d) weight when lm_head is a plain frozen bias-free nn.Linear (no adapter, no compact format), else null. */
function frozenHeadWeight(model: HeadedCausalLM): Tensor | null {
  const head = model.lm_head;
  if (model.forwardHidden === undefined || !(head instanceof Linear) || Object.getPrototypeOf(head) !== Linear.prototype) return null;
  if (head.bias !== null || head.quantized !== null || head.fanInFanOut) return null;
  return head.weight.requiresGrad ? null : head.weight;
}

/**
 * forward + causalLmLoss in one, for training: when the LM head is frozen (PEFT: it always is
 * unless trained through modulesToSave or an adapter) the head and the loss run fused and chunked
 * (F.linearCrossEntropy), so the (batch, seq, vocab) logits and their gradient never exist (for
 * GPT-2 at batch 8 × 128 that is 2 × 206 MB). A trainable, adapted or compact head, label
 * smoothing, or a model without forwardHidden takes the unfused path. Same loss and gradients as
 * causalLmLoss(model.forward(…)) up to float rounding.
 */
export function causalLmForwardLoss(model: HeadedCausalLM, inputIds: Int32Array, shape: readonly [number, number], opts: CausalLmForwardLossOptions = {}): Tensor {
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const labelSmoothing = opts.labelSmoothing ?? 0;
  const fwd = opts.attentionMask ? { attentionMask: opts.attentionMask } : {};
  const weight = labelSmoothing > 0 ? null : frozenHeadWeight(model);
  if (weight === null || model.forwardHidden === undefined) return causalLmLoss(model.forward(inputIds, shape, fwd), inputIds, shape, ignoreIndex, opts.labels, labelSmoothing);
  const [batch, seq] = shape;
  const source = opts.labels ?? inputIds;
  if (source.length !== batch * seq) throw new Error(`causalLmLoss: ${source.length} labels for shape [${batch}, ${seq}]`);
  const hidden = model.forwardHidden(inputIds, shape, fwd);
  if (hidden.ndim !== 3 || hidden.shape[0] !== batch || hidden.shape[1] !== seq) {
    throw new Error(`causalLmLoss: hidden states [${hidden.shape.join(', ')}] do not match shape [${batch}, ${seq}]`);
  }
  return F.linearCrossEntropy(hidden, weight, shiftedTargets(source, batch, seq, ignoreIndex), { ignoreIndex });
}
