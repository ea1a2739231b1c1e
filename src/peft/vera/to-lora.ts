// VeRA → LoRA, exactly. A VeRA layer adds λb ⊙ (Bₛ · (λd ⊙ (Aₛ · x))) with Aₛ = A[:, :in] and
// Bₛ = B[:out, :]; folding the vectors into the matrices gives a LoRA layer with
//     lora_A = diag(λd) · Aₛ   (r × in)      lora_B = diag(λb) · Bₛ   (out × r)
// and scaling lora_alpha / r = 1. So any LoRA runtime serves a VeRA adapter, at LoRA's size:
// r·(in + out) numbers per layer instead of r + out. Layers' in_features are not in a VeRA file
// (λb gives out_features), so they come from the base model's shapes. A DVoRA adapter (use_dora)
// becomes a DoRA one: same ΔW, same norms, its vera_magnitude_vector saved as lora_magnitude_vector.
import { fs, path } from '../../io/node.js';
import { readJsonFile, writeDirAtomic, type WriteDirOptions } from '../../io/atomic.js';
import { fail } from '../../io/errors.js';
import { serializeSafetensors, type TensorToWrite } from '../../io/safetensors.js';
import { Linear, type Module } from '../../nn/index.js';
import { Rng } from '../../tensor/index.js';
import { isModuleToSave, sortedJson } from '../config.js';
import { loraConfig, loraConfigToJson } from '../lora/config.js';
import { modelShapesFromConfig, type LinearShape } from '../model_shapes.js';
import { ADAPTER_WEIGHTS, adapterDtype, readAdapterFolder, type AdapterDtype } from '../peft_model.js';
import type { AdapterTensors } from '../tuner.js';
import type { VeraConfig } from './config.js';
import { generateProjections, largestShape } from './model.js';

export interface VeraToLoraOptions {
  /** Storage dtype of the LoRA tensors; default F32. */
  dtype?: AdapterDtype;
}

export interface LoraExport {
  /** adapter_config.json text (PEFT's LoraConfig). */
  config: string;
  /** adapter_model.safetensors bytes. */
  weights: Uint8Array;
  /** Layers converted. */
  layers: number;
  /** LoRA parameters written (Σ r·(in + out)). */
  loraParams: number;
}

/** The linear layers of a built (unadapted) model, for veraToLora's shapes. */
export function linearShapes(model: Module): LinearShape[] {
  const out: LinearShape[] = [];
  for (const [path, m] of model.namedModules()) if (m instanceof Linear) out.push({ path, in: m.inFeatures, out: m.outFeatures });
  return out;
}

/**
 * The LoRA adapter computing what the VeRA adapter (`config`, `tensors` as read from `file`)
 * computes, on a model whose linear layers are `shapes` (in model order).
 */
export function veraToLora(config: VeraConfig, tensors: AdapterTensors, shapes: readonly LinearShape[], file: string, opts: VeraToLoraOptions = {}): LoraExport {
  const r = config.r;
  const byPath = new Map(shapes.map((s, i) => [s.path, { ...s, index: i }]));
  const used = new Set<string>();
  const get = (key: string, shape: readonly number[], why: string): Float32Array => {
    if (!tensors.has(key)) fail(`${file}: missing tensor ${key}`);
    const got = tensors.shape(key);
    if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) fail(`${file}: ${key} has shape [${got.join(', ')}], expected [${shape.join(', ')}] (${why})`);
    used.add(key);
    return tensors.get(key);
  };

  // the adapted layers are those with vectors, in model order (the order unique projections are drawn in)
  const layers = tensors.keys().flatMap((k) => {
    const m = /^base_model\.model\.(.+)\.vera_lambda_b$/.exec(k);
    if (m === null) return [];
    const shape = byPath.get(m[1]);
    if (shape === undefined) fail(`${file}: ${m[1]} is not a linear layer of the base model`);
    return [shape];
  });
  layers.sort((a, b) => a.index - b.index);
  if (layers.length === 0) fail(`${file}: no vera_lambda_b tensor: not a VeRA adapter's weights`);

  // the pair(s): stored when save_projection is true (as PEFT loads them), else regenerated from the key
  const pairOf = (rows: number, inF: number, outF: number, aKey: string, bKey: string, rng: Rng): { A: Float32Array; B: Float32Array; lda: number } => {
    if (config.saveProjection) {
      if (!tensors.has(aKey) || !tensors.has(bKey)) fail(`${file}: missing ${aKey}/${bKey} although adapter_config.json says save_projection: true`);
      const [aRows, aCols] = tensors.shape(aKey);
      const [bRows, bCols] = tensors.shape(bKey);
      if (aRows !== r || bCols !== r) fail(`${file}: ${aKey} has ${aRows} rows and ${bKey} ${bCols} columns but r is ${r} (an adapter trained beside a larger first one is not converted)`);
      if (aCols < inF || bRows < outF) fail(`${file}: ${aKey}/${bKey} are [${aRows}, ${aCols}]/[${bRows}, ${bCols}], too small for a layer of in ${inF}, out ${outF}`);
      return { A: get(aKey, [aRows, aCols], 'VeRA projection'), B: get(bKey, [bRows, bCols], 'VeRA projection'), lda: aCols };
    }
    for (const k of [aKey, bKey]) if (tensors.has(k)) used.add(k); // PEFT ignores stored ones then
    const p = generateProjections(rows, inF, outF, config.projectionPrngKey, config.projectionInit, rng);
    return { A: p.A.data(), B: p.B.data(), lda: inF };
  };
  const rng = new Rng(config.projectionPrngKey);
  const [maxIn, maxOut] = largestShape(layers.map((l) => ({ inFeatures: l.in, outFeatures: l.out })));
  const shared = config.uniqueProjections ? null : pairOf(r, maxIn, maxOut, 'base_model.vera_A', 'base_model.vera_B', rng);

  const dtype = adapterDtype(opts.dtype);
  const out: Record<string, TensorToWrite> = {};
  let loraParams = 0;
  for (const l of layers) {
    const key = `base_model.model.${l.path}`;
    const lambdaB = get(`${key}.vera_lambda_b`, [l.out], `out_features of ${l.path}`);
    const lambdaD = get(`${key}.vera_lambda_d`, [r], 'r');
    const { A, B, lda } = shared ?? pairOf(r, l.in, l.out, `${key}.vera_A`, `${key}.vera_B`, rng);
    const loraA = new Float32Array(r * l.in);
    for (let i = 0; i < r; i++) for (let j = 0; j < l.in; j++) loraA[i * l.in + j] = lambdaD[i] * A[i * lda + j];
    const loraB = new Float32Array(l.out * r);
    for (let o = 0; o < l.out; o++) for (let j = 0; j < r; j++) loraB[o * r + j] = lambdaB[o] * B[o * r + j];
    for (const [what, data] of [['lora_A', loraA], ['lora_B', loraB]] as const) {
      if (!data.every(Number.isFinite)) fail(`${file}: ${key} gives a ${what} with NaN or Inf`);
    }
    out[`${key}.lora_A.weight`] = { data: loraA, shape: [r, l.in], dtype };
    out[`${key}.lora_B.weight`] = { data: loraB, shape: [l.out, r], dtype };
    loraParams += r * (l.in + l.out);
    if (config.useDora) {
      // DVoRA → DoRA: the same ΔW, hence the same norms, so the magnitude carries over as it is
      out[`${key}.lora_magnitude_vector`] = { data: get(`${key}.vera_magnitude_vector`, [l.out], `DVoRA magnitude (out_features) of ${l.path}`), shape: [l.out], dtype };
      loraParams += l.out;
    }
  }
  // modules_to_save copies mean the same under LoRA; anything else (a trained bias) is not converted
  for (const k of tensors.keys()) {
    if (used.has(k)) continue;
    const parts = k.replace(/^base_model\.model\./, '').split('.');
    const saved = parts.slice(0, -1).some((_, i) => isModuleToSave(config, parts.slice(0, i + 1).join('.')));
    if (!saved) fail(`${file}: tensor ${k} is not a VeRA vector, projection or modules_to_save parameter; it cannot be converted to LoRA`);
    out[k] = { data: tensors.get(k), shape: [...tensors.shape(k)], dtype };
  }

  // PEFT's VeRA files hold no biases, so `bias` changed nothing the file records: LoRA gets none
  const lora = loraConfig({
    targetModules: config.targetModules,
    layersToTransform: config.layersToTransform,
    layersPattern: config.layersPattern,
    modulesToSave: config.modulesToSave,
    bias: 'none',
    fanInFanOut: config.fanInFanOut,
    baseModelNameOrPath: config.baseModelNameOrPath,
    revision: config.revision ?? null,
    taskType: config.taskType,
    inferenceMode: true,
    r,
    loraAlpha: r, // scaling α / r = 1: the vectors are folded into A and B
    loraDropout: config.veraDropout,
    useDora: config.useDora,
  });
  return { config: sortedJson(loraConfigToJson(lora)), weights: serializeSafetensors(out, { format: 'pt' }), layers: layers.length, loraParams };
}

export interface VeraToLoraReport {
  inBytes: number;
  outBytes: number;
  layers: number;
  loraParams: number;
}

/** Converts the VeRA adapter folder `inDir` into a LoRA one in `outDir` (atomically); shapes from `modelDir`/config.json. */
export function convertVeraToLora(inDir: string, outDir: string, modelDir: string, opts: VeraToLoraOptions = {}, write: WriteDirOptions = {}): VeraToLoraReport {
  const { config, tensors, file, configFile } = readAdapterFolder(inDir);
  if (config.peftType !== 'VERA') fail(`${configFile}: is a ${config.peftType} adapter; --to lora converts VeRA adapters`);
  const modelConfig = path.join(modelDir, 'config.json');
  if (!fs.existsSync(modelConfig)) fail(`${modelConfig}: not found (--model must be the base model folder)`);
  const shapes = modelShapesFromConfig(readJsonFile(modelConfig, 'model config'), modelConfig);
  const lora = veraToLora(config as VeraConfig, tensors, shapes.layers, file, opts);
  writeDirAtomic(outDir, { 'adapter_config.json': lora.config, [ADAPTER_WEIGHTS]: lora.weights }, write);
  return { inBytes: fs.statSync(file).size, outBytes: lora.weights.byteLength, layers: lora.layers, loraParams: lora.loraParams };
}
