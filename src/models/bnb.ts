// Pre-quantized bitsandbytes folders (transformers' save_pretrained of a model loaded with
// BitsAndBytesConfig): their nf4 and int8 weights are read into our compact formats as they are
// stored, with no float32 copy and no requantization; anything we cannot represent exactly is
// refused in one line naming the file and the field.
//
// What bitsandbytes writes per quantized nn.Linear at prefix P (Params4bit / QuantState.as_dict(packed=True),
// Linear8bitLt._save_to_state_dict):
// - 4-bit: P.weight (U8, [⌈n/2⌉, 1], two codes a byte, first element in the high nibble), P.weight.absmax
//   (F32 per block, or U8 codes of the nested map when double-quantized), P.weight.quant_map (F32 ×16),
//   P.weight.nested_absmax (F32 per 256 block absmaxes), P.weight.nested_quant_map (F32 ×256), and
//   P.weight.quant_state.bitsandbytes__<nf4|fp4> (U8: UTF-8 JSON with quant_type, blocksize, dtype,
//   shape, nested_blocksize, nested_dtype, nested_offset). Blocks run over the flattened (out, in) weight.
//   That is our nf4 format exactly (tensor/quant.ts): codes, block absmaxes, and the nested form
//   absmax = code2[q]·nested_absmax[b/256] + offset.
// - 8-bit: P.weight (I8, [out, in]), P.SCB (F32, [out], each row's absmax), P.weight_format (U8, 0 = row):
//   w = q·SCB/127, our int8 format. bitsandbytes' llm_int8_threshold splits outlier activation columns
//   into fp16 and quantizes the rest of the activations to int8; here activations are never quantized
//   (float32 times the dequantized weights), which the threshold only approximates, so any threshold loads.
// A GPT-2 Conv1D is stored transposed to (out, in) by transformers, which is how we hold it too.
import { Linear, type Module } from '../nn/index.js';
import { NF4_BLOCK, NF4_CODE, NESTED_BLOCK, dequantize, nf4Blocks, type QuantizedData, type Tensor, type WeightFormat } from '../tensor/index.js';
import { fail } from '../io/errors.js';
import type { CheckpointTensor, CheckpointTensors } from '../io/safetensors.js';
import type { JsonObject } from './config.js';

export interface BnbQuantization {
  format: 'nf4' | 'int8';
  doubleQuant: boolean;
}

const FOUR_BIT_AUX = ['.absmax', '.quant_map', '.nested_absmax', '.nested_quant_map'];
const STATE_PREFIX = '.quant_state.bitsandbytes__';
const WEIGHT_FORMATS = ['row', 'col32', 'col_turing', 'col_ampere'];

const flag = (qc: JsonObject, key: string): boolean => qc[key] === true || qc[`_${key}`] === true;

/**
 * Reads config.json's `quantization_config`: null when it has none; the format when it is a
 * bitsandbytes nf4 or int8 config we load; otherwise a one-line refusal naming the field.
 */
export function bnbQuantization(configJson: JsonObject, configFile: string): BnbQuantization | null {
  const qc = configJson.quantization_config;
  if (qc === undefined || qc === null) return null;
  const where = `${configFile}: quantization_config`;
  if (typeof qc !== 'object' || Array.isArray(qc)) fail(`${where} must be an object`);
  const c = qc as JsonObject;
  const method = c.quant_method ?? 'bitsandbytes'; // configs before transformers 4.31 have no quant_method
  if (method !== 'bitsandbytes') fail(`${where}.quant_method ${JSON.stringify(method)} is not supported (bitsandbytes nf4 and int8 folders load)`);
  const four = flag(c, 'load_in_4bit');
  const eight = flag(c, 'load_in_8bit');
  if (four === eight) fail(`${where}: exactly one of load_in_4bit and load_in_8bit must be true (got ${four} and ${eight})`);
  if (eight) return { format: 'int8', doubleQuant: false };
  const type = c.bnb_4bit_quant_type ?? 'fp4'; // BitsAndBytesConfig's default
  if (type !== 'nf4') fail(`${where}.bnb_4bit_quant_type ${JSON.stringify(type)} is not supported (only nf4 loads)`);
  const storage = c.bnb_4bit_quant_storage ?? 'uint8';
  if (storage !== 'uint8') fail(`${where}.bnb_4bit_quant_storage ${JSON.stringify(storage)} is not supported (only uint8 loads)`);
  return { format: 'nf4', doubleQuant: c.bnb_4bit_use_double_quant === true };
}

/** The weight key a bitsandbytes auxiliary tensor belongs to (P.weight for P.weight.absmax, P.SCB …), or null. */
function auxOwner(key: string): string | null {
  const s = key.indexOf(STATE_PREFIX);
  if (s >= 0 && key.endsWith('.weight', s)) return key.slice(0, s);
  for (const suf of FOUR_BIT_AUX) if (key.endsWith(`.weight${suf}`)) return key.slice(0, -suf.length);
  if (key.endsWith('.weight.SCB')) return key.slice(0, -'.SCB'.length);
  if (key.endsWith('.SCB')) return `${key.slice(0, -'.SCB'.length)}.weight`;
  if (key.endsWith('.weight_format')) return `${key.slice(0, -'.weight_format'.length)}.weight`;
  return null;
}

/**
 * What a bitsandbytes checkpoint holds, for the loader's bounds: `elements` counts each packed 4-bit
 * weight as the values it dequantizes to (the model is built with float32 parameters first, each
 * released as its compact weight is stored), `bytes` is what the checkpoint occupies.
 */
export function bnbStoredSize(ckpt: CheckpointTensors): { elements: number; bytes: number } {
  let elements = 0;
  let bytes = 0;
  for (const name of ckpt.names) {
    const t = ckpt.get(name);
    bytes += t.byteLength;
    elements += (t.dtype === 'U8' && auxOwner(name) === null ? 2 : 1) * count(t);
  }
  return { elements, bytes };
}

const same = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((v, i) => v === b[i]);
const count = (t: CheckpointTensor): number => t.shape.reduce((a, b) => a * b, 1);

function f32Of(t: CheckpointTensor): Float32Array {
  const r = t.raw();
  return new Float32Array(r.buffer, r.byteOffset, r.byteLength / 4);
}

/**
 * A view of `ckpt` in which each bitsandbytes-quantized linear weight is one float-typed entry with
 * the model parameter's shape (its auxiliary tensors hidden), and the `store` hook that
 * loadCheckpointInto calls for it: it builds the QuantizedData from the stored tensors (or, with
 * `weights: 'f32'`, writes the dequantized values into the parameter).
 */
export function bnbCheckpoint(
  ckpt: CheckpointTensors,
  model: Module,
  checkpointPath: (key: string) => string | null,
  q: BnbQuantization,
  weights: WeightFormat,
  allowNonFinite: boolean,
): { ckpt: CheckpointTensors; store: (t: Tensor, values: Float32Array, key: string) => boolean } {
  const state = model.stateDict();
  const linearOf = new Map<Tensor, Linear>();
  for (const [p, m] of model.namedModules()) if (m instanceof Linear && !/(^|\.)lm_head$/.test(p)) linearOf.set(m.weight, m);
  const aux = new Map<string, string[]>();
  for (const key of ckpt.names) {
    const owner = auxOwner(key);
    if (owner === null) continue;
    if (!ckpt.has(owner)) fail(`${ckpt.get(key).file}: ${key} belongs to ${owner}, which the checkpoint lacks`);
    aux.set(owner, [...(aux.get(owner) ?? []), key]);
  }
  const loaders = new Map<string, { linear: Linear; param: Tensor; load: () => QuantizedData }>();
  for (const key of ckpt.names) {
    const w = ckpt.get(key);
    if (w.dtype !== 'U8' && w.dtype !== 'I8') continue;
    if (auxOwner(key) !== null) continue;
    const target = checkpointPath(key);
    const param = target === null ? undefined : state.get(target);
    const linear = param && linearOf.get(param);
    if (!param || !linear) fail(`${w.file}: ${key} is stored quantized (${w.dtype}) but is not the weight of a linear layer we quantize (lm_head and non-linear tensors stay float)`);
    const keys = new Set(aux.get(key) ?? []);
    const load = q.format === 'nf4' ? nf4Loader(ckpt, key, w, keys, linear, allowNonFinite) : int8Loader(ckpt, key, w, keys, linear, allowNonFinite);
    loaders.set(key, { linear, param, load });
  }
  if (loaders.size === 0) fail(`${ckpt.dir}: config.json declares bitsandbytes ${q.format} weights but no weight is stored quantized`);
  const hidden = new Set([...aux.values()].flat());
  const names = ckpt.names.filter((n) => !hidden.has(n));
  const view: CheckpointTensors = {
    dir: ckpt.dir,
    names,
    files: ckpt.files,
    ...(ckpt.source === undefined ? {} : { source: ckpt.source }),
    has: (n) => !hidden.has(n) && ckpt.has(n),
    get(n) {
      const l = loaders.get(n);
      const t = ckpt.get(n);
      if (!l) return t;
      // the dequantized weight is written in F32 when saved: the grid values exactly
      return { name: n, dtype: 'F32', shape: [...l.param.shape], byteLength: t.byteLength, file: t.file, data: () => new Float32Array(0), raw: () => new Uint8Array(0) };
    },
  };
  const store = (t: Tensor, _values: Float32Array, key: string): boolean => {
    const l = loaders.get(key);
    if (!l) return false;
    const qd = l.load();
    if (weights !== 'f32') {
      l.linear.setQuantized(qd, true);
      return true;
    }
    const d = dequantize(qd);
    if (!l.linear.fanInFanOut) t.copyFrom(d);
    else {
      const tr = new Float32Array(d.length);
      for (let r = 0; r < qd.rows; r++) for (let c = 0; c < qd.cols; c++) tr[c * qd.rows + r] = d[r * qd.cols + c];
      t.copyFrom(tr);
    }
    return true;
  };
  return { ckpt: view, store };
}

function checkFinite(values: Float32Array, file: string, key: string): void {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) fail(`${file}: ${key} contains NaN or Inf (${values[i]} at index ${i})`);
}

function nf4Loader(ckpt: CheckpointTensors, key: string, w: CheckpointTensor, keys: Set<string>, linear: Linear, allowNonFinite: boolean): () => QuantizedData {
  const file = w.file;
  const rows = linear.outFeatures;
  const cols = linear.inFeatures;
  const n = rows * cols;
  if (w.dtype !== 'U8') fail(`${file}: ${key} has dtype ${w.dtype}; a bitsandbytes 4-bit weight is U8`);
  const states = [...keys].filter((k) => k.startsWith(`${key}${STATE_PREFIX}`));
  if (states.length !== 1) fail(`${file}: ${key} needs one ${key}${STATE_PREFIX}<type> tensor, found ${states.length}`);
  const stateKey = states[0];
  const qtype = stateKey.slice(`${key}${STATE_PREFIX}`.length);
  if (qtype !== 'nf4') fail(`${file}: ${stateKey}: quant_type ${qtype} is not supported (only nf4 loads)`);
  let st: JsonObject;
  try {
    st = JSON.parse(new TextDecoder().decode(ckpt.get(stateKey).raw())) as JsonObject;
  } catch {
    fail(`${file}: ${stateKey} is not the UTF-8 JSON bitsandbytes packs there`);
  }
  if (st === null || typeof st !== 'object' || Array.isArray(st)) fail(`${file}: ${stateKey} is not a JSON object`);
  if (st.quant_type !== 'nf4') fail(`${file}: ${stateKey}: quant_type ${JSON.stringify(st.quant_type)} is not supported (only nf4 loads)`);
  if (st.blocksize !== NF4_BLOCK) fail(`${file}: ${stateKey}: blocksize ${JSON.stringify(st.blocksize)} is not supported (only ${NF4_BLOCK} loads)`);
  if (!Array.isArray(st.shape) || !same(st.shape as number[], [rows, cols])) fail(`${file}: ${stateKey}: shape ${JSON.stringify(st.shape)}, the layer is [${rows}, ${cols}] (out, in)`);
  if (count(w) !== Math.ceil(n / 2)) fail(`${file}: ${key} holds ${count(w)} bytes, ${Math.ceil(n / 2)} expected for ${rows}×${cols} 4-bit codes`);
  const blocks = nf4Blocks(rows, cols);
  const nested = st.nested_offset !== undefined;
  const need = (suffix: string, dtype: string, len: number): CheckpointTensor => {
    const k = `${key}${suffix}`;
    if (!keys.has(k)) fail(`${file}: ${k} is missing`);
    const t = ckpt.get(k);
    if (t.dtype !== dtype || count(t) !== len) fail(`${file}: ${k} is ${t.dtype} [${t.shape.join(', ')}], expected ${dtype} with ${len} values`);
    return t;
  };
  const qmap = need('.quant_map', 'F32', 16);
  if (nested) {
    if (st.nested_blocksize !== NESTED_BLOCK) fail(`${file}: ${stateKey}: nested_blocksize ${JSON.stringify(st.nested_blocksize)} is not supported (only ${NESTED_BLOCK} loads)`);
    if (st.nested_dtype !== undefined && st.nested_dtype !== 'float32') fail(`${file}: ${stateKey}: nested_dtype ${JSON.stringify(st.nested_dtype)} is not supported (only float32 loads)`);
    if (typeof st.nested_offset !== 'number' || !Number.isFinite(st.nested_offset)) fail(`${file}: ${stateKey}: nested_offset must be a finite number`);
  }
  const absmax = need('.absmax', nested ? 'U8' : 'F32', blocks);
  const nabs = nested ? need('.nested_absmax', 'F32', Math.ceil(blocks / NESTED_BLOCK)) : null;
  const nmap = nested ? need('.nested_quant_map', 'F32', 256) : null;
  if (!nested && (keys.has(`${key}.nested_absmax`) || keys.has(`${key}.nested_quant_map`))) fail(`${file}: ${key}.nested_absmax is stored but ${stateKey} has no nested_offset`);
  return () => {
    const code = f32Of(qmap);
    for (let i = 0; i < 16; i++) {
      if (!Object.is(code[i], NF4_CODE[i]) && !(code[i] === 0 && NF4_CODE[i] === 0)) {
        fail(`${file}: ${key}.quant_map is not the NF4 code book (value ${i} is ${code[i]}, NF4's is ${NF4_CODE[i]})`);
      }
    }
    const data = w.raw();
    if (!nested) {
      const scales = f32Of(absmax).slice();
      if (!allowNonFinite) checkFinite(scales, file, `${key}.absmax`);
      return { format: 'nf4', rows, cols, data, scales, blockSize: NF4_BLOCK, code: NF4_CODE, nested: null };
    }
    const scales2 = f32Of(nabs!).slice();
    const code2 = f32Of(nmap!).slice();
    if (!allowNonFinite) {
      checkFinite(scales2, file, `${key}.nested_absmax`);
      checkFinite(code2, file, `${key}.nested_quant_map`);
    }
    return {
      format: 'nf4', rows, cols, data, scales: new Float32Array(0), blockSize: NF4_BLOCK, code: NF4_CODE,
      nested: { qscales: absmax.raw(), scales2, code2, offset: Math.fround(st.nested_offset as number) },
    };
  };
}

function int8Loader(ckpt: CheckpointTensors, key: string, w: CheckpointTensor, keys: Set<string>, linear: Linear, allowNonFinite: boolean): () => QuantizedData {
  const file = w.file;
  const rows = linear.outFeatures;
  const cols = linear.inFeatures;
  if (w.dtype !== 'I8') fail(`${file}: ${key} has dtype ${w.dtype}; a bitsandbytes 8-bit weight is I8`);
  if (!same(w.shape, [rows, cols])) fail(`${file}: ${key} has shape [${w.shape.join(', ')}], the layer is [${rows}, ${cols}] (out, in)`);
  const prefix = key.slice(0, -'.weight'.length);
  const scbKey = [`${prefix}.SCB`, `${key}.SCB`].find((k) => keys.has(k));
  if (!scbKey) fail(`${file}: ${prefix}.SCB is missing (the per-row absmax of the int8 weight ${key})`);
  const scb = ckpt.get(scbKey);
  if (scb.dtype !== 'F32' || count(scb) !== rows) fail(`${file}: ${scbKey} is ${scb.dtype} [${scb.shape.join(', ')}], expected F32 with ${rows} values`);
  const fmtKey = `${prefix}.weight_format`;
  if (keys.has(fmtKey)) {
    const f = ckpt.get(fmtKey);
    const v = f.dtype === 'U8' || f.dtype === 'I8' || f.dtype === 'I64' ? f.data() : null;
    if (!v || v.length !== 1) fail(`${file}: ${fmtKey} must be one integer (0 = row)`);
    if (v[0] !== 0) fail(`${file}: ${fmtKey} is ${v[0]} (${WEIGHT_FORMATS[v[0]] ?? 'unknown'}, a GPU tile layout); only 0 (row) loads`);
  }
  for (const k of keys) if (k !== scbKey && k !== fmtKey) fail(`${file}: ${k} is not part of a bitsandbytes 8-bit weight`);
  return () => {
    const scales = f32Of(scb).slice();
    if (!allowNonFinite) checkFinite(scales, file, scbKey);
    return { format: 'int8', rows, cols, data: w.raw(), scales, blockSize: 0, code: new Float32Array(0), nested: null };
  };
}
