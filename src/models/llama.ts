// The Llama family as in Hugging Face's modeling_llama.py (LlamaForCausalLM), which also covers
// Mistral (a sliding window, no biases) and Qwen2 (biases on q/k/v): pre-norm decoder layers with
// RMSNorm, rotary position embeddings, grouped-query attention and a SwiGLU MLP. Module paths are
// Hugging Face's (`model.layers.0.self_attn.q_proj`), so checkpoints load by name and PEFT's
// `target_modules: ["q_proj", "v_proj"]` finds the same layers.
import { F, Tensor, defaultRng, releaseIntermediates, type Rng } from '../tensor/index.js';
import { Embedding, Linear, Module, ModuleList, RMSNorm } from '../nn/index.js';
import { fail } from '../io/errors.js';
import { Activation, ACTIVATION_NAMES, type ActivationName } from './activations.js';
import { ConfigReader, asJsonObject, type JsonObject } from './config.js';
import { SkipInitRng, initNormal, type TensorLayer } from './common.js';
import { RaggedKVCache, RaggedLayerKV, defaultPositions, hiddenForLogits, layerCache, pastLength, type CausalLMForwardOptions, type LayerKV } from './kv-cache.js';

// ---------------------------------------------------------------- config

export const LLAMA_MODEL_TYPES = ['llama', 'mistral', 'qwen2'] as const;
export type LlamaModelType = (typeof LLAMA_MODEL_TYPES)[number];

/** rope_scaling: `linear` divides positions by `factor`; `llama3` slows only the low frequencies (Llama 3.1). */
export type RopeScaling =
  | { ropeType: 'linear'; factor: number }
  | { ropeType: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number };

/** LlamaConfig / MistralConfig / Qwen2Config, camelCased, with the fields this implementation reads. */
export interface LlamaConfig {
  modelType: LlamaModelType;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  hiddenAct: ActivationName;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  /** Biases on q_proj/k_proj/v_proj (Llama's attention_bias; always on for Qwen2). */
  qkvBias: boolean;
  /** Bias on o_proj (Llama's attention_bias; never for Qwen2). */
  oBias: boolean;
  mlpBias: boolean;
  tieWordEmbeddings: boolean;
  /** Mistral's (and Qwen2's, with use_sliding_window) window; null when attention is global. */
  slidingWindow: number | null;
  initializerRange: number;
  bosTokenId: number | null;
  /** eos_token_id: Llama 3 lists several. */
  eosTokenIds: number[];
}

const ARCHITECTURES: Record<LlamaModelType, string> = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM' };

function readRopeScaling(r: ConfigReader): RopeScaling | null {
  if (!r.has('rope_scaling')) return null;
  const raw = r.json['rope_scaling'];
  if (typeof raw !== 'object' || Array.isArray(raw) || raw === null) r.fail('rope_scaling', `must be an object or null, got ${JSON.stringify(raw)}`);
  const s = new ConfigReader(raw as JsonObject, r.file);
  // transformers renamed "type" to "rope_type"; both appear in published configs
  const type = s.has('rope_type') ? s.json['rope_type'] : s.json['type'];
  const num = (field: string): number => {
    const v = s.json[field];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) r.fail('rope_scaling', `needs "${field}" as a positive number, got ${JSON.stringify(v)}`);
    return v;
  };
  if (type === 'default' || type === undefined) return null;
  if (type === 'linear') return { ropeType: 'linear', factor: num('factor') };
  if (type === 'llama3') {
    const scaling: RopeScaling = {
      ropeType: 'llama3',
      factor: num('factor'),
      lowFreqFactor: num('low_freq_factor'),
      highFreqFactor: num('high_freq_factor'),
      originalMaxPositionEmbeddings: num('original_max_position_embeddings'),
    };
    if (!(scaling.highFreqFactor > scaling.lowFreqFactor)) r.fail('rope_scaling', `needs "high_freq_factor" (${scaling.highFreqFactor}) above "low_freq_factor" (${scaling.lowFreqFactor})`);
    return scaling;
  }
  r.fail('rope_scaling', `has rope_type ${JSON.stringify(type)}, which is not supported (supported: default, linear, llama3)`);
}

/** eos_token_id: an id, a list of ids, or null. */
function readTokenIds(r: ConfigReader, field: string): number[] {
  if (!r.has(field)) return [];
  const v = r.json[field];
  const list = Array.isArray(v) ? v : [v];
  if (!list.every((id) => typeof id === 'number' && Number.isSafeInteger(id) && id >= 0)) r.fail(field, `must be a token id, a list of token ids, or null, got ${JSON.stringify(v)}`);
  return list as number[];
}

/**
 * Validates a Llama / Mistral / Qwen2 config.json; errors read `<file>: field "…" must be …`. The
 * sizes are required (transformers would default to a 7B model, never what a folder means).
 */
export function llamaConfigFromJson(json: unknown, file: string): LlamaConfig {
  const r = new ConfigReader(asJsonObject(json, file), file);
  const modelType = r.oneOf('model_type', LLAMA_MODEL_TYPES);
  const hiddenSize = r.positiveInt('hidden_size');
  const numAttentionHeads = r.positiveInt('num_attention_heads');
  if (!r.has('head_dim') && hiddenSize % numAttentionHeads !== 0) r.fail('hidden_size', `(${hiddenSize}) must be divisible by "num_attention_heads" (${numAttentionHeads}) when "head_dim" is not given`);
  const headDim = r.positiveInt('head_dim', hiddenSize / numAttentionHeads);
  if (headDim % 2 !== 0) r.fail('head_dim', `must be even for rotary embeddings, got ${headDim}`);
  const numKeyValueHeads = r.positiveInt('num_key_value_heads', numAttentionHeads);
  if (numAttentionHeads % numKeyValueHeads !== 0) r.fail('num_key_value_heads', `(${numKeyValueHeads}) must divide "num_attention_heads" (${numAttentionHeads})`);
  if (r.has('partial_rotary_factor') && r.json['partial_rotary_factor'] !== 1) r.fail('partial_rotary_factor', 'other than 1 is not supported');
  if (r.probability('attention_dropout', 0) !== 0) r.fail('attention_dropout', 'other than 0 is not supported (the fused attention has no dropout)');
  const attentionBias = modelType === 'llama' && r.bool('attention_bias', false);
  let slidingWindow: number | null = null;
  if (modelType === 'mistral' && r.has('sliding_window')) slidingWindow = r.positiveInt('sliding_window');
  if (modelType === 'qwen2' && r.bool('use_sliding_window', false) && r.has('sliding_window')) slidingWindow = r.positiveInt('sliding_window');
  return {
    modelType,
    vocabSize: r.positiveInt('vocab_size'),
    hiddenSize,
    intermediateSize: r.positiveInt('intermediate_size'),
    numHiddenLayers: r.layerCount('num_hidden_layers'),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    hiddenAct: r.oneOf('hidden_act', ACTIVATION_NAMES, 'silu'),
    maxPositionEmbeddings: r.positiveInt('max_position_embeddings', 2048),
    rmsNormEps: r.positiveNumber('rms_norm_eps', 1e-6),
    ropeTheta: r.positiveNumber('rope_theta', 10000),
    ropeScaling: readRopeScaling(r),
    qkvBias: modelType === 'qwen2' || attentionBias,
    oBias: attentionBias,
    mlpBias: modelType === 'llama' && r.bool('mlp_bias', false),
    tieWordEmbeddings: r.bool('tie_word_embeddings', false),
    slidingWindow,
    initializerRange: r.positiveNumber('initializer_range', 0.02),
    bosTokenId: r.optionalIndex('bos_token_id'),
    eosTokenIds: readTokenIds(r, 'eos_token_id'),
  };
}

/** The config.json Hugging Face would write for `config` (the fields above). */
export function llamaConfigToJson(c: LlamaConfig): JsonObject {
  const scaling = c.ropeScaling === null ? null
    : c.ropeScaling.ropeType === 'linear' ? { rope_type: 'linear', factor: c.ropeScaling.factor }
    : {
        rope_type: 'llama3',
        factor: c.ropeScaling.factor,
        low_freq_factor: c.ropeScaling.lowFreqFactor,
        high_freq_factor: c.ropeScaling.highFreqFactor,
        original_max_position_embeddings: c.ropeScaling.originalMaxPositionEmbeddings,
      };
  return {
    architectures: [ARCHITECTURES[c.modelType]],
    model_type: c.modelType,
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numHiddenLayers,
    num_attention_heads: c.numAttentionHeads,
    num_key_value_heads: c.numKeyValueHeads,
    head_dim: c.headDim,
    hidden_act: c.hiddenAct,
    max_position_embeddings: c.maxPositionEmbeddings,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: scaling,
    ...(c.modelType === 'llama' ? { attention_bias: c.qkvBias, mlp_bias: c.mlpBias } : {}),
    ...(c.modelType === 'mistral' ? { sliding_window: c.slidingWindow } : {}),
    ...(c.modelType === 'qwen2' ? { use_sliding_window: c.slidingWindow !== null, sliding_window: c.slidingWindow } : {}),
    attention_dropout: 0,
    tie_word_embeddings: c.tieWordEmbeddings,
    initializer_range: c.initializerRange,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds.length === 0 ? null : c.eosTokenIds,
  };
}

// ---------------------------------------------------------------- rotary embeddings

/** Inverse frequencies θ^(-2i/d), i < d/2, after rope_scaling (modeling_rope_utils). */
export function ropeInverseFrequencies(config: LlamaConfig): Float64Array {
  const d = config.headDim;
  const inv = Float64Array.from({ length: d / 2 }, (_, i) => 1 / config.ropeTheta ** ((2 * i) / d));
  const s = config.ropeScaling;
  if (s === null) return inv;
  if (s.ropeType === 'linear') return inv.map((f) => f / s.factor); // positions / factor
  // llama3: wavelengths shorter than original/high_freq_factor keep their frequency, longer than
  // original/low_freq_factor are slowed by `factor`, and those in between blend the two
  const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) return f;
    if (wavelen > lowFreqWavelen) return f / s.factor;
    const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * (f / s.factor) + smooth * f;
  });
}

/** Cosines and sines of the rotary embedding for given positions; holds no parameters. */
export class LlamaRotaryEmbedding extends Module {
  readonly invFreq: Float64Array;

  constructor(config: LlamaConfig) {
    super();
    this.invFreq = ropeInverseFrequencies(config);
  }

  /**
   * cos and sin (rows, 1, seq, headDim) for `positions` (rows·seq, or seq shared by every row); they
   * broadcast over heads.
   */
  forward(positions: Int32Array, rows: number, seq: number): [Tensor, Tensor] {
    const half = this.invFreq.length;
    const dim = 2 * half;
    const cos = new Float32Array(rows * seq * dim);
    const sin = new Float32Array(rows * seq * dim);
    const shared = positions.length === seq && rows > 1;
    for (let p = 0; p < (shared ? seq : rows * seq); p++) {
      for (let i = 0; i < half; i++) {
        const angle = positions[p] * this.invFreq[i]; // in double, then rounded once
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        cos[p * dim + i] = cos[p * dim + half + i] = c;
        sin[p * dim + i] = sin[p * dim + half + i] = s;
      }
    }
    for (let r = 1; shared && r < rows; r++) {
      cos.copyWithin(r * seq * dim, 0, seq * dim);
      sin.copyWithin(r * seq * dim, 0, seq * dim);
    }
    return [Tensor.fromArray(cos, [rows, 1, seq, dim]), Tensor.fromArray(sin, [rows, 1, seq, dim])];
  }
}

/** x·cos + rotate_half(x)·sin on (..., heads, headDim) position-major, one cos/sin row per position (F.rotary). */
export const applyRotary = F.rotary;

// ---------------------------------------------------------------- layers

export class LlamaAttention extends Module {
  readonly numHeads: number;
  readonly numKeyValueHeads: number;
  readonly headDim: number;
  q_proj: TensorLayer;
  k_proj: TensorLayer;
  v_proj: TensorLayer;
  o_proj: TensorLayer;

  constructor(config: LlamaConfig, rng: Rng) {
    super();
    this.numHeads = config.numAttentionHeads;
    this.numKeyValueHeads = config.numKeyValueHeads;
    this.headDim = config.headDim;
    const { hiddenSize: d, headDim } = config;
    this.q_proj = this.addModule('q_proj', new Linear(d, this.numHeads * headDim, { bias: config.qkvBias, rng }));
    this.k_proj = this.addModule('k_proj', new Linear(d, this.numKeyValueHeads * headDim, { bias: config.qkvBias, rng }));
    this.v_proj = this.addModule('v_proj', new Linear(d, this.numKeyValueHeads * headDim, { bias: config.qkvBias, rng }));
    this.o_proj = this.addModule('o_proj', new Linear(this.numHeads * headDim, d, { bias: config.oBias, rng }));
  }

  /** hidden (B, T, C) → (B, T, C); keys past a `cache` come first, as in GPT2Attention. */
  forward(hidden: Tensor, cos: Tensor, sin: Tensor, attentionMask: Float32Array | null, cache: LayerKV | RaggedLayerKV | null): Tensor {
    const scale = 1 / Math.sqrt(this.headDim);
    if (cache instanceof RaggedLayerKV) {
      // a ragged batch stays position-major (1, T, heads, D): no head transposes, cos/sin (1, T, 1, D)
      const [, t] = hidden.shape;
      const c = F.reshape(cos, [1, t, 1, this.headDim]);
      const s = F.reshape(sin, [1, t, 1, this.headDim]);
      const qp = this.q_proj.forward(hidden);
      const kp = this.k_proj.forward(hidden);
      const q = F.rotary(F.reshape(qp, [1, t, this.numHeads, this.headDim]), c, s);
      const k = F.rotary(F.reshape(kp, [1, t, this.numKeyValueHeads, this.headDim]), c, s);
      const v = F.reshape(this.v_proj.forward(hidden), [1, t, this.numKeyValueHeads, this.headDim]);
      const attended = cache.attend(q, k, v, scale); // copies k and v into the caches
      releaseIntermediates(qp, kp, q, k, v);
      const out = this.o_proj.forward(F.reshape(attended, [1, t, this.numHeads * this.headDim]));
      releaseIntermediates(attended);
      return out;
    }
    // rotated while position-major (B, T, heads, D), where cos/sin (B, 1, T, D) are one row per position
    const query = this.splitHeads(F.rotary(this.positionMajor(this.q_proj.forward(hidden), this.numHeads), cos, sin));
    let key = this.splitHeads(F.rotary(this.positionMajor(this.k_proj.forward(hidden), this.numKeyValueHeads), cos, sin));
    let value = this.splitHeads(this.positionMajor(this.v_proj.forward(hidden), this.numKeyValueHeads));
    let kvLength: number | undefined;
    if (cache) ({ key, value, length: kvLength } = cache.update(key, value));
    // grouped-query attention: the kernel maps query head h to key/value head h / (H / H_kv)
    const out = F.attention(query, key, value, { causal: true, keyMask: attentionMask, scale, kvLength });
    const [b, , t] = out.shape;
    return this.o_proj.forward(F.reshape(F.permute(out, [0, 2, 1, 3]), [b, t, this.numHeads * this.headDim]));
  }

  /** (B, T, heads·D) → (B, T, heads, D) */
  private positionMajor(x: Tensor, heads: number): Tensor {
    const [b, t] = x.shape;
    return F.reshape(x, [b, t, heads, this.headDim]);
  }

  /** (B, T, heads, D) → (B, heads, T, D) */
  private splitHeads(x: Tensor): Tensor {
    return F.permute(x, [0, 2, 1, 3]);
  }
}

/** down_proj(act(gate_proj(x)) · up_proj(x)): SwiGLU with hidden_act silu. */
export class LlamaMLP extends Module {
  gate_proj: TensorLayer;
  up_proj: TensorLayer;
  down_proj: TensorLayer;
  act_fn: Activation;

  constructor(config: LlamaConfig, rng: Rng) {
    super();
    const { hiddenSize: d, intermediateSize: inner, mlpBias: bias } = config;
    this.gate_proj = this.addModule('gate_proj', new Linear(d, inner, { bias, rng }));
    this.up_proj = this.addModule('up_proj', new Linear(d, inner, { bias, rng }));
    this.down_proj = this.addModule('down_proj', new Linear(inner, d, { bias, rng }));
    this.act_fn = this.addModule('act_fn', new Activation(config.hiddenAct));
  }

  forward(x: Tensor): Tensor {
    const gate = this.gate_proj.forward(x);
    const act = this.act_fn.forward(gate);
    if (act !== gate) releaseIntermediates(gate);
    const up = this.up_proj.forward(x);
    const product = F.mul(act, up);
    releaseIntermediates(act, up);
    const out = this.down_proj.forward(product);
    releaseIntermediates(product);
    return out;
  }
}

export class LlamaDecoderLayer extends Module {
  self_attn: LlamaAttention;
  mlp: LlamaMLP;
  input_layernorm: RMSNorm;
  post_attention_layernorm: RMSNorm;

  constructor(config: LlamaConfig, rng: Rng) {
    super();
    this.self_attn = this.addModule('self_attn', new LlamaAttention(config, rng));
    this.mlp = this.addModule('mlp', new LlamaMLP(config, rng));
    this.input_layernorm = this.addModule('input_layernorm', new RMSNorm(config.hiddenSize, config.rmsNormEps));
    this.post_attention_layernorm = this.addModule('post_attention_layernorm', new RMSNorm(config.hiddenSize, config.rmsNormEps));
  }

  forward(hidden: Tensor, cos: Tensor, sin: Tensor, attentionMask: Float32Array | null, cache: LayerKV | RaggedLayerKV | null): Tensor {
    // without a tape, each intermediate is freed once used (releaseIntermediates)
    const normed = this.input_layernorm.forward(hidden);
    const attn = this.self_attn.forward(normed, cos, sin, attentionMask, cache);
    const h = F.add(hidden, attn);
    releaseIntermediates(normed, attn);
    const normed2 = this.post_attention_layernorm.forward(h);
    const mlp = this.mlp.forward(normed2);
    const out = F.add(h, mlp);
    releaseIntermediates(normed2, mlp, h);
    return out;
  }
}

export class LlamaModel extends Module {
  readonly config: LlamaConfig;
  embed_tokens: Embedding;
  layers: ModuleList<LlamaDecoderLayer>;
  norm: RMSNorm;
  rotary_emb: LlamaRotaryEmbedding;

  constructor(config: LlamaConfig, rng: Rng) {
    super();
    this.config = config;
    this.embed_tokens = this.addModule('embed_tokens', new Embedding(config.vocabSize, config.hiddenSize, rng));
    this.layers = this.addModule('layers', new ModuleList(Array.from({ length: config.numHiddenLayers }, () => new LlamaDecoderLayer(config, rng))));
    this.norm = this.addModule('norm', new RMSNorm(config.hiddenSize, config.rmsNormEps));
    this.rotary_emb = this.addModule('rotary_emb', new LlamaRotaryEmbedding(config));
  }

  /** Final hidden states (batch, seq, hidden_size). */
  forward(inputIds: Int32Array, shape: readonly [number, number], opts: CausalLMForwardOptions = {}): Tensor {
    const [batch, seq] = shape;
    const past = pastLength(opts.cache);
    this.checkInputs(inputIds, shape, past, opts);
    const [cos, sin] = opts.positionIds
      ? this.rotary_emb.forward(opts.positionIds, batch, seq)
      : this.rotary_emb.forward(defaultPositions(past, seq), batch, seq); // the same positions in every row
    let hidden = this.embed_tokens.forward(inputIds, [batch, seq]);
    const mask = opts.attentionMask ?? null;
    this.layers.items.forEach((layer, i) => {
      const next = layer.forward(hidden, cos, sin, mask, layerCache(opts.cache, i));
      releaseIntermediates(hidden);
      hidden = next;
    });
    const out = this.norm.forward(hidden);
    releaseIntermediates(hidden, cos, sin);
    return out;
  }

  private checkInputs(inputIds: Int32Array, shape: readonly [number, number], past: number, opts: CausalLMForwardOptions): void {
    const [batch, seq] = shape;
    const { vocabSize, slidingWindow } = this.config;
    const what = `${this.config.modelType} input`;
    if (!Number.isInteger(batch) || !Number.isInteger(seq) || batch < 1 || seq < 1) fail(`${what}: shape [${shape.join(', ')}] must be two positive integers [batch, seq]`);
    if (inputIds.length !== batch * seq) fail(`${what}: ${inputIds.length} input ids for shape [${batch}, ${seq}]`);
    for (const id of inputIds) if (!(id >= 0 && id < vocabSize)) fail(`${what}: token id ${id} is out of range [0, ${vocabSize}) (vocab_size)`);
    const ragged = opts.cache instanceof RaggedKVCache;
    if (ragged) {
      if (batch !== 1 || !opts.positionIds || opts.attentionMask) fail(`${what}: a ragged batch is one row of tokens with positionIds and no attention mask`);
      if (slidingWindow !== null && opts.positionIds.some((p) => p >= slidingWindow)) fail(`${what}: a position reaches past the sliding_window (${slidingWindow}); sliding-window attention is not supported, keep sequences within the window`);
    }
    // sliding-window attention is not implemented; within the window it equals full attention
    if (!ragged && slidingWindow !== null && past + seq > slidingWindow) fail(`${what}: sequence length ${past + seq} exceeds the sliding_window (${slidingWindow}); sliding-window attention is not supported, keep sequences within the window`);
    if (opts.attentionMask && opts.attentionMask.length !== batch * (past + seq)) fail(`${what}: attention mask of ${opts.attentionMask.length} values for ${batch} × ${past + seq} keys`);
    if (opts.positionIds) {
      if (opts.positionIds.length !== batch * seq) fail(`${what}: ${opts.positionIds.length} position ids for shape [${batch}, ${seq}]`);
      for (const p of opts.positionIds) if (!(Number.isInteger(p) && p >= 0)) fail(`${what}: position id ${p} must be a non-negative integer`);
    }
  }
}

export interface LlamaInitOptions {
  /** Generator for the random initialization (default: the global one). */
  rng?: Rng;
  /** false leaves the weights at zero: for models about to be loaded from a checkpoint. */
  init?: boolean;
}

/**
 * A Llama-family decoder with a language-modelling head. `modelType` is config.json's model_type
 * (llama, mistral, qwen2): one implementation, as their modeling files differ only in the config.
 * With tie_word_embeddings, `lm_head.weight` is `model.embed_tokens.weight`.
 */
export class LlamaForCausalLM<T extends LlamaModelType = LlamaModelType> extends Module {
  readonly modelType: T;
  readonly config: LlamaConfig;
  model: LlamaModel;
  lm_head: TensorLayer;

  constructor(config: LlamaConfig & { modelType: T }, opts: LlamaInitOptions = {}) {
    super();
    this.modelType = config.modelType;
    this.config = config;
    const zeros = new SkipInitRng(); // each weight is drawn once, below
    this.model = this.addModule('model', new LlamaModel(config, zeros));
    this.lm_head = this.addModule('lm_head', new Linear(config.hiddenSize, config.vocabSize, { bias: false, rng: zeros }));
    if (config.tieWordEmbeddings) this.lm_head.setParameter('weight', this.model.embed_tokens.weight);
    if (opts.init !== false) this.initWeights(opts.rng ?? defaultRng());
  }

  /** Longest sequence it takes: the sliding window when there is one (not implemented past it), else unbounded. */
  get contextLength(): number | null {
    return this.config.slidingWindow;
  }

  get eosTokenIds(): number[] {
    return [...this.config.eosTokenIds];
  }

  /** Logits (batch, seq, vocab_size); (batch, n, vocab_size) with `logitsToKeep` n. */
  forward(inputIds: Int32Array, shape: readonly [number, number], opts: CausalLMForwardOptions = {}): Tensor {
    const hidden = this.model.forward(inputIds, shape, opts);
    const kept = hiddenForLogits(hidden, opts);
    const logits = this.lm_head.forward(kept);
    releaseIntermediates(hidden, kept);
    return logits;
  }

  /** What `lm_head` maps to the logits: the final hidden states (batch, seq, hidden_size), or the rows `logitsToKeep` / `logitsAt` pick. */
  forwardHidden(inputIds: Int32Array, shape: readonly [number, number], opts: CausalLMForwardOptions = {}): Tensor {
    return hiddenForLogits(this.model.forward(inputIds, shape, opts), opts);
  }

  /** Hugging Face's _init_weights: N(0, initializer_range) for linear and embedding weights; biases 0, norms 1. */
  private initWeights(rng: Rng): void {
    for (const [, t] of this.namedParameters()) if (t.ndim === 2) initNormal(t, this.config.initializerRange, rng);
  }
}

export type MistralForCausalLM = LlamaForCausalLM<'mistral'>;
export type Qwen2ForCausalLM = LlamaForCausalLM<'qwen2'>;

/** A Llama-family model for config.json contents (model_type llama, mistral or qwen2). */
export function llamaFromConfig(json: unknown, file: string, opts: LlamaInitOptions = {}): LlamaForCausalLM {
  return new LlamaForCausalLM(llamaConfigFromJson(json, file), opts);
}
