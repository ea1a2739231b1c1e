// The linear layers of a model, from its config.json alone (no weights): per model_type, the layer
// paths transformers uses and their (in, out) sizes. Enough to count an adapter's parameters for
// any size of model (`vera inspect --config`), with the same target matching as a built model.
import { ConfigReader, asJsonObject } from '../io/config-reader.js';
import { fail } from '../io/errors.js';
import { isTargetModule, type BasePeftConfig } from './config.js';
import { allLinearTargets, defaultTargetModules, isAllLinear } from './targets.js';

export interface LinearShape {
  /** Module path as in the transformers model (LM-head class for decoders, the encoder for encoders). */
  path: string;
  in: number;
  out: number;
}

export interface ModelShapes {
  modelType: string;
  layers: LinearShape[];
  /** The output embeddings (lm_head), which all-linear leaves out; null where the config has none. */
  outputLayer: string | null;
}

type ShapeRule = (r: ConfigReader) => { layers: LinearShape[]; outputLayer: string | null };

function perLayer(r: ConfigReader, field: string, prefix: string, sub: [string, number, number][]): LinearShape[] {
  const n = r.layerCount(field); // the table lists every layer, so its length must be bounded
  return Array.from({ length: n }, (_, i) => sub.map(([name, inF, outF]) => ({ path: `${prefix}.${i}.${name}`, in: inF, out: outF }))).flat();
}

/** BERT-style encoders (bert, roberta, vit): `attention` holds the self-attention under `selfName`. */
function encoder(selfName: string): ShapeRule {
  return (r) => {
    const h = r.positiveInt('hidden_size');
    const i = r.positiveInt('intermediate_size', 4 * h);
    const layers = perLayer(r, 'num_hidden_layers', 'encoder.layer', [
      [`attention.${selfName}.query`, h, h], [`attention.${selfName}.key`, h, h], [`attention.${selfName}.value`, h, h],
      ['attention.output.dense', h, h], ['intermediate.dense', h, i], ['output.dense', i, h],
    ]);
    return { layers, outputLayer: null };
  };
}

/** Llama-style decoders (llama, mistral, qwen2): grouped-query attention, gated MLP, lm_head. */
const llamaLike: ShapeRule = (r) => {
  const h = r.positiveInt('hidden_size');
  const heads = r.positiveInt('num_attention_heads');
  const kv = r.positiveInt('num_key_value_heads', heads);
  const hd = r.positiveInt('head_dim', Math.floor(h / heads));
  const i = r.positiveInt('intermediate_size');
  const layers = perLayer(r, 'num_hidden_layers', 'model.layers', [
    ['self_attn.q_proj', h, heads * hd], ['self_attn.k_proj', h, kv * hd], ['self_attn.v_proj', h, kv * hd], ['self_attn.o_proj', heads * hd, h],
    ['mlp.gate_proj', h, i], ['mlp.up_proj', h, i], ['mlp.down_proj', i, h],
  ]);
  layers.push({ path: 'lm_head', in: h, out: r.positiveInt('vocab_size') });
  return { layers, outputLayer: 'lm_head' };
};

const SHAPES: Readonly<Record<string, ShapeRule>> = {
  gpt2: (r) => {
    const e = r.positiveInt('n_embd');
    const inner = r.has('n_inner') ? r.positiveInt('n_inner') : 4 * e;
    const layers = perLayer(r, 'n_layer', 'transformer.h', [
      ['attn.c_attn', e, 3 * e], ['attn.c_proj', e, e], ['mlp.c_fc', e, inner], ['mlp.c_proj', inner, e],
    ]);
    layers.push({ path: 'lm_head', in: e, out: r.positiveInt('vocab_size') });
    return { layers, outputLayer: 'lm_head' };
  },
  bert: encoder('self'),
  roberta: encoder('self'),
  vit: encoder('attention'),
  llama: llamaLike,
  mistral: llamaLike,
  qwen2: llamaLike,
  // OPT: GPT-3's architecture with separate q/k/v projections (OPT-175B matches GPT-3 175B's sizes)
  opt: (r) => {
    const h = r.positiveInt('hidden_size');
    const f = r.positiveInt('ffn_dim');
    const layers = perLayer(r, 'num_hidden_layers', 'model.decoder.layers', [
      ['self_attn.q_proj', h, h], ['self_attn.k_proj', h, h], ['self_attn.v_proj', h, h], ['self_attn.out_proj', h, h], ['fc1', h, f], ['fc2', f, h],
    ]);
    const proj = r.positiveInt('word_embed_proj_dim', h);
    if (proj !== h) layers.push({ path: 'model.decoder.project_in', in: proj, out: h }, { path: 'model.decoder.project_out', in: h, out: proj });
    layers.push({ path: 'lm_head', in: proj, out: r.positiveInt('vocab_size') });
    return { layers, outputLayer: 'lm_head' };
  },
  vera_cnn: (r) => {
    const layers = [[400, 120], [120, 84], [84, 84], [84, 84], [84, r.positiveInt('num_classes', 10)]].map(([i, o], k) => ({ path: `fc${k + 1}`, in: i, out: o }));
    return { layers, outputLayer: 'fc5' };
  },
  vera_mlp: (r) => {
    const sizes = [r.positiveInt('input_size'), ...r.positiveIntArray('hidden_sizes'), r.positiveInt('num_classes')];
    const layers = sizes.slice(1).map((o, k) => ({ path: `layers.${k}`, in: sizes[k], out: o }));
    return { layers, outputLayer: layers.at(-1)!.path };
  },
};

export const SHAPE_MODEL_TYPES = Object.keys(SHAPES);

/** The linear layers config.json describes; one-line errors name the file and field. */
export function modelShapesFromConfig(json: unknown, file: string): ModelShapes {
  const r = new ConfigReader(asJsonObject(json, file), file);
  const type = r.json['model_type'];
  if (typeof type !== 'string') fail(`${file}: field "model_type" is required (one of ${SHAPE_MODEL_TYPES.join(', ')})`);
  const rule = SHAPES[type];
  if (rule === undefined) fail(`${file}: model_type "${type}" has no layer table here (known: ${SHAPE_MODEL_TYPES.join(', ')})`);
  return { modelType: type, ...rule(r) };
}

export interface ParamCount {
  /** The targeted layers, in model order. */
  targets: LinearShape[];
  /** Parameters trained: LoRA r·(in + out) per layer; VeRA out (λb) + r (λd) per layer. */
  trainableParams: number;
  /** VeRA's shared frozen pair A (r × max in) and B (max out × r); 0 for LoRA. */
  projectionParams: number;
  /** The trained parameters stored as F32. */
  adapterBytes: number;
}

/** Count an adapter's parameters on a model described by `shapes`, matching targets as PeftModel does. */
export function countAdapterParams(shapes: ModelShapes, config: BasePeftConfig & { r: number }): ParamCount {
  let targetModules = config.targetModules;
  if (targetModules === null) targetModules = defaultTargetModules(config.peftType, shapes.modelType);
  else if (isAllLinear(targetModules)) targetModules = allLinearTargets(shapes.layers.map((l) => l.path), shapes.outputLayer, config.taskType);
  const resolved = { ...config, targetModules };
  const targets = shapes.layers.filter((l) => isTargetModule(resolved, l.path));
  if (targets.length === 0) fail(`--target-modules ${JSON.stringify(targetModules)} matched no linear layer of this ${shapes.modelType} model (its layers end in ${[...new Set(shapes.layers.map((l) => l.path.replace(/^.*\.\d+\./, '')))].join(', ')})`);
  const r = config.r;
  let trainable = 0;
  let maxIn = 0;
  let maxOut = 0;
  for (const l of targets) {
    trainable += config.peftType === 'VERA' ? l.out + r : r * (l.in + l.out);
    maxIn = Math.max(maxIn, l.in);
    maxOut = Math.max(maxOut, l.out);
  }
  const projectionParams = config.peftType === 'VERA' ? r * maxIn + maxOut * r : 0;
  return { targets, trainableParams: trainable, projectionParams, adapterBytes: 4 * trainable };
}
