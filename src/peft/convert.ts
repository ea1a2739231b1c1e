// Rewriting a saved adapter without its base model: another storage dtype, and VeRA's compact form
// (save_projection false: the vectors and projection_prng_key only), after checking that the stored
// projections are exactly what the key regenerates.
import { fs, path } from '../io/node.js';
import { readJsonFile, writeDirAtomic, type WriteDirOptions } from '../io/atomic.js';
import { VeraError } from '../io/errors.js';
import { parseJsonExact } from '../io/json.js';
import { SafetensorsFile, serializeSafetensors, type Dtype, type TensorToWrite, type WriteDtype } from '../io/safetensors.js';
import { sortedJson } from './config.js';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapterDtype, adapterTensors, checkAdapterFitsMemory, parsePeftConfig, peftMethod, type AdapterDtype } from './peft_model.js';
import type { VeraConfig } from './vera/config.js';
import { generateProjections } from './vera/model.js';

export interface ConvertOptions {
  dtype?: AdapterDtype;
  /** VeRA: false drops vera_A/vera_B (checked against the key). Adding them needs the base model (PeftModel.saveAdapter). */
  saveProjection?: boolean;
  /** How an existing `outDir` is treated (default `merge`). */
  write?: WriteDirOptions;
  /** Copy tensors holding NaN/±Inf as they are (default: refused, naming the tensor). */
  allowNonFinite?: boolean;
}

export interface ConvertReport {
  inBytes: number;
  outBytes: number;
  /** The shared projections were left out (verified bit-exact against projection_prng_key). */
  droppedProjections: boolean;
}

const same = (a: Float32Array, b: Float32Array): boolean => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));

/** Convert the adapter folder `inDir` into `outDir` (written atomically); adapter_config.json keeps every field it had. */
export function convertAdapter(inDir: string, outDir: string, opts: ConvertOptions = {}): ConvertReport {
  const configPath = path.join(inDir, ADAPTER_CONFIG);
  const weightsPath = path.join(inDir, ADAPTER_WEIGHTS);
  if (!fs.existsSync(configPath)) throw new VeraError(`${configPath}: not found (is ${inDir} an adapter folder?)`);
  if (!fs.existsSync(weightsPath)) throw new VeraError(`${weightsPath}: not found`);
  const raw = readJsonFile(configPath, 'adapter config') as Record<string, unknown>;
  const { config, weights, dropped } = rewrite(raw, SafetensorsFile.open(weightsPath), configPath, weightsPath, opts, !(opts.allowNonFinite ?? false));
  writeDirAtomic(outDir, { [ADAPTER_CONFIG]: config, [ADAPTER_WEIGHTS]: weights }, opts.write);
  return { inBytes: fs.statSync(weightsPath).size, outBytes: weights.byteLength, droppedProjections: dropped };
}

/**
 * The rewrite shared by folders and uploaded bytes: `raw` is adapter_config.json as parsed, `st`
 * its weights; `configName`/`weightsName` name them in errors. `finite` refuses NaN and ±Inf.
 */
function rewrite(
  raw: Record<string, unknown>,
  st: SafetensorsFile,
  configName: string,
  weightsName: string,
  opts: ConvertOptions,
  finite: boolean,
): { config: string; weights: Uint8Array; dropped: boolean } {
  const config = parsePeftConfig(raw, configName);
  // sizes from the headers before any tensor is read: a declared size must fit memory and the config
  checkAdapterFitsMemory(st, weightsName);
  peftMethod(config.peftType).checkStoredSizes?.(config, adapterTensors(st), weightsName);
  const keys = st.keys();
  let dropped = false;
  const out: Record<string, unknown> = { ...raw };
  if (opts.saveProjection !== undefined) {
    if (config.peftType !== 'VERA') throw new VeraError(`--save-projection/--no-save-projection apply to VeRA adapters; ${configName} is ${config.peftType}`);
    const vera = config as VeraConfig;
    const hasA = st.has('base_model.vera_A');
    const hasB = st.has('base_model.vera_B');
    if (hasA !== hasB) throw new VeraError(`${weightsName}: has ${hasA ? 'vera_A without vera_B' : 'vera_B without vera_A'}`);
    const stored = hasA && hasB;
    if (opts.saveProjection && !stored) throw new VeraError(`${weightsName}: has no vera_A/vera_B to keep; adding them needs the base model (give --model DIR)`);
    if (!opts.saveProjection && stored) {
      if (vera.uniqueProjections) throw new VeraError(`${configName}: unique_projections adapters are converted with their base model (give --model DIR)`);
      const A = st.getFloat32('base_model.vera_A');
      const B = st.getFloat32('base_model.vera_B');
      const [r, maxIn] = st.info('base_model.vera_A').shape;
      const maxOut = st.info('base_model.vera_B').shape[0];
      const fresh = generateProjections(r, maxIn, maxOut, vera.projectionPrngKey, vera.projectionInit);
      if (!same(A, fresh.A.data()) || !same(B, fresh.B.data())) {
        throw new VeraError(`${weightsName}: vera_A/vera_B are not what projection_prng_key ${vera.projectionPrngKey} regenerates; this adapter must keep its projections`);
      }
      dropped = true;
    }
    out.save_projection = opts.saveProjection;
  }
  const tensors: Record<string, TensorToWrite> = {};
  for (const k of keys) {
    if (dropped && (k === 'base_model.vera_A' || k === 'base_model.vera_B')) continue;
    // without a dtype asked for, each tensor keeps its stored one (compacting an F16 adapter stays F16)
    const dtype = opts.dtype !== undefined ? adapterDtype(opts.dtype) : writableDtype(st.info(k).dtype);
    const data = st.getFloat32(k);
    if (finite && !data.every(Number.isFinite)) throw new VeraError(`${weightsName}: tensor ${k} contains NaN or Inf`);
    tensors[k] = { data, shape: [...st.info(k).shape], dtype };
  }
  const weights = serializeSafetensors(tensors, { format: 'pt' });
  return { config: sortedJson(out), weights, dropped };
}

const writableDtype = (d: Dtype): WriteDtype => (d === 'F16' || d === 'BF16' ? d : 'F32');

/** An uploaded adapter in the form a serving store keeps (see compactAdapterBytes). */
export interface CompactAdapter {
  /** adapter_config.json text (VeRA: save_projection false). */
  config: string;
  /** adapter_model.safetensors bytes: every tensor in `dtype`; VeRA without vera_A/vera_B. */
  weights: Uint8Array;
  method: 'VERA' | 'LORA';
  dtype: 'F16' | 'F32';
}

/**
 * Turns an uploaded PEFT adapter (adapter_config.json text and adapter_model.safetensors bytes)
 * into its stored form, with no base model: VeRA becomes the compact form (vectors only; vera_A/
 * vera_B, if sent, must be exactly what projection_prng_key regenerates), LoRA is kept as sent.
 * Tensors stay F16 when all are F16, else become F32 (BF16 widens exactly). A truncated or invalid
 * file, a config that does not parse, NaN/Inf in any tensor: one-line VeraError starting with `where`.
 */
export function compactAdapterBytes(configText: string, weights: Uint8Array, where: string): CompactAdapter {
  const configName = `${where}: ${ADAPTER_CONFIG}`;
  const weightsName = `${where}: ${ADAPTER_WEIGHTS}`;
  let raw: unknown;
  try {
    raw = parseJsonExact(configText.charCodeAt(0) === 0xfeff ? configText.slice(1) : configText);
  } catch (e) {
    throw new VeraError(`${configName}: invalid JSON: ${(e as Error).message}`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new VeraError(`${configName}: must be a JSON object`);
  const rec = raw as Record<string, unknown>;
  const peftType = parsePeftConfig(rec, configName).peftType;
  if (peftType !== 'VERA' && peftType !== 'LORA') throw new VeraError(`${configName}: peft_type ${peftType} cannot be stored (VERA or LORA)`);
  const st = SafetensorsFile.fromBytes(weights, weightsName);
  if (st.keys().length === 0) throw new VeraError(`${weightsName}: holds no tensors`);
  const allF16 = st.keys().every((k) => st.info(k).dtype === 'F16');
  const dtype = allF16 ? 'F16' : 'F32';
  const opts: ConvertOptions = { dtype, saveProjection: peftType === 'VERA' ? false : undefined };
  const done = rewrite(rec, st, configName, weightsName, opts, true);
  // LoRA is stored as sent when its tensors already are in the stored dtype (checked above by rewrite)
  if (peftType === 'LORA' && st.keys().every((k) => st.info(k).dtype === dtype)) return { config: configText, weights, method: 'LORA', dtype };
  return { config: done.config, weights: done.weights, method: peftType, dtype };
}
