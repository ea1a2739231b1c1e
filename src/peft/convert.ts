// Rewriting a saved adapter without its base model: another storage dtype, and VeRA's compact form
// (save_projection false: the vectors and projection_prng_key only), after checking that the stored
// projections are exactly what the key regenerates.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { readJsonFile, writeDirAtomic } from '../io/atomic.js';
import { VeraError } from '../io/errors.js';
import { SafetensorsFile, serializeSafetensors, type Dtype, type TensorToWrite, type WriteDtype } from '../io/safetensors.js';
import { sortedJson } from './config.js';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapterDtype, parsePeftConfig, type AdapterDtype } from './peft_model.js';
import type { VeraConfig } from './vera/config.js';
import { generateProjections } from './vera/model.js';

export interface ConvertOptions {
  dtype?: AdapterDtype;
  /** VeRA: false drops vera_A/vera_B (checked against the key). Adding them needs the base model (PeftModel.saveAdapter). */
  saveProjection?: boolean;
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
  const configPath = join(inDir, ADAPTER_CONFIG);
  const weightsPath = join(inDir, ADAPTER_WEIGHTS);
  if (!existsSync(configPath)) throw new VeraError(`${configPath}: not found (is ${inDir} an adapter folder?)`);
  if (!existsSync(weightsPath)) throw new VeraError(`${weightsPath}: not found`);
  const raw = readJsonFile(configPath, 'adapter config') as Record<string, unknown>;
  const config = parsePeftConfig(raw, configPath);
  const st = SafetensorsFile.open(weightsPath);
  const keys = st.keys();
  let dropped = false;
  const out: Record<string, unknown> = { ...raw };
  if (opts.saveProjection !== undefined) {
    if (config.peftType !== 'VERA') throw new VeraError(`--save-projection/--no-save-projection apply to VeRA adapters; ${configPath} is ${config.peftType}`);
    const vera = config as VeraConfig;
    const stored = st.has('base_model.vera_A') && st.has('base_model.vera_B');
    if (opts.saveProjection && !stored) throw new VeraError(`${weightsPath}: has no vera_A/vera_B to keep; adding them needs the base model (give --model DIR)`);
    if (!opts.saveProjection && stored) {
      if (vera.uniqueProjections) throw new VeraError(`${configPath}: unique_projections adapters are converted with their base model (give --model DIR)`);
      const A = st.getFloat32('base_model.vera_A');
      const B = st.getFloat32('base_model.vera_B');
      const [r, maxIn] = st.info('base_model.vera_A').shape;
      const maxOut = st.info('base_model.vera_B').shape[0];
      const fresh = generateProjections(r, maxIn, maxOut, vera.projectionPrngKey, vera.projectionInit);
      if (!same(A, fresh.A.data()) || !same(B, fresh.B.data())) {
        throw new VeraError(`${weightsPath}: vera_A/vera_B are not what projection_prng_key ${vera.projectionPrngKey} regenerates; this adapter must keep its projections`);
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
    tensors[k] = { data: st.getFloat32(k), shape: [...st.info(k).shape], dtype };
  }
  const weights = serializeSafetensors(tensors, { format: 'pt' });
  writeDirAtomic(outDir, { [ADAPTER_CONFIG]: sortedJson(out), [ADAPTER_WEIGHTS]: weights });
  return { inBytes: statSync(weightsPath).size, outBytes: weights.byteLength, droppedProjections: dropped };
}

const writableDtype = (d: Dtype): WriteDtype => (d === 'F16' || d === 'BF16' ? d : 'F32');
