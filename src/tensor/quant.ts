// Compact formats for frozen linear weights (bf16, int8, nf4) and their reference quantize /
// dequantize. A quantized weight is always held as (out, in) row-major — a Conv1D (in, out)
// weight is transposed once when it is quantized — and never as a float32 copy: the matmul kernels
// (`Kernels.quantMatmul`, `quantMatmulInputGrad`) dequantize tiles of it as they go.
//
// Formats (element i of the flattened (out, in) matrix, row-major):
// - bf16: the top 16 bits of the float32 (round to nearest even; a BF16 checkpoint is kept as stored).
//   `data` holds 2 bytes per element, little-endian.
// - int8: bitsandbytes' LLM.int8 weight format (`int8_vectorwise_quant`) without the outlier split:
//   per output row absmax s (`scales`, float32), q = round_half_even(w · (127 / s)) as int8, and
//   w ≈ (q · s) · (1/127). An all-zero row has s = 0 and q = 0. Activations stay float32 (bitsandbytes
//   quantizes them to int8 per row and keeps outlier columns in fp16; here nothing needs splitting).
// - nf4: QLoRA's 4-bit NormalFloat (bitsandbytes `quantize_4bit`, quant_type nf4): blocks of 64
//   consecutive elements, absmax per block (`scales`, float32), x = clamp(w · (1/absmax), −1, 1) and the
//   code is the index of the nearest of the 16 NF4 values (ties: the lower index), w ≈ NF4[q] · absmax.
//   Two codes per byte, the first element in the high nibble (bitsandbytes' packing). An all-zero block
//   has absmax 0 and codes 7 (the exact 0). With double quantization (QLoRA's), the block absmaxes are
//   stored as 8-bit codes of bitsandbytes' signed dynamic map over blocks of 256, after subtracting
//   their mean (`offset`): absmax ≈ code2[q] · scales2[b / 256] + offset.
import { VeraError } from '../io/errors.js';

export type QuantFormat = 'bf16' | 'int8' | 'nf4';
export type WeightFormat = 'f32' | QuantFormat;
export const WEIGHT_FORMATS: readonly WeightFormat[] = ['f32', 'bf16', 'int8', 'nf4'];

export function isWeightFormat(s: unknown): s is WeightFormat {
  return typeof s === 'string' && (WEIGHT_FORMATS as readonly string[]).includes(s);
}

/** Parses a `--weights` / `weights` value, refusing anything else in one line. */
export function parseWeightFormat(s: unknown, where = '--weights'): WeightFormat {
  if (!isWeightFormat(s)) throw new VeraError(`${where} must be one of ${WEIGHT_FORMATS.join(', ')}, got ${JSON.stringify(s)}`);
  return s;
}

/** bitsandbytes' NF4 code book (QLoRA, Appendix E): quantiles of N(0, 1) scaled to [−1, 1], with an exact 0. */
export const NF4_CODE = Float32Array.of(
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
);
export const NF4_BLOCK = 64;
export const NESTED_BLOCK = 256;

/**
 * bitsandbytes' signed dynamic 8-bit map (`create_dynamic_map(signed=True, max_exponent_bits=7,
 * total_bits=8)`), the code of the double-quantized block scales: for exponent e = 0…6,
 * ±10^(e−6)·(midpoints of linspace(0.1, 1, 2^e + 1)), plus 0 and 1, sorted (256 values). The table
 * is the one torch's float32 linspace gives (as bitsandbytes builds it), so codes match exactly.
 */
const DYNAMIC_MAP = Float32Array.of(
  -0.992968738079071, -0.9789062142372131, -0.96484375, -0.9507812261581421, -0.9367187023162842, -0.922656238079071,
  -0.9085937738418579, -0.89453125, -0.8804687261581421, -0.8664062023162842, -0.852343738079071, -0.8382812142372131,
  -0.82421875, -0.8101562261581421, -0.7960937023162842, -0.782031238079071, -0.7679687738418579, -0.75390625,
  -0.7398437857627869, -0.725781261920929, -0.7117187976837158, -0.6976562738418579, -0.68359375, -0.6695312857627869,
  -0.655468761920929, -0.641406238079071, -0.6273437738418579, -0.61328125, -0.5992187261581421, -0.585156261920929,
  -0.5710937976837158, -0.5570312738418579, -0.54296875, -0.5289062261581421, -0.514843761920929, -0.500781238079071,
  -0.4867187738418579, -0.47265625, -0.4585937261581421, -0.44453126192092896, -0.43046873807907104, -0.41640621423721313,
  -0.40234375, -0.3882812261581421, -0.37421876192092896, -0.36015623807907104, -0.34609371423721313, -0.33203125,
  -0.3179687261581421, -0.30390626192092896, -0.28984373807907104, -0.2757812738418579, -0.26171875, -0.24765625596046448,
  -0.23359376192092896, -0.21953125298023224, -0.20546874403953552, -0.19140625, -0.17734374105930328, -0.16328124701976776,
  -0.14921875298023224, -0.13515624403953552, -0.12109375, -0.10703125596046448, -0.09859374910593033, -0.09578124433755875,
  -0.09296875447034836, -0.09015624970197678, -0.08734375238418579, -0.08453124761581421, -0.08171874284744263,
  -0.07890625298023224, -0.07609374821186066, -0.07328125089406967, -0.07046874612569809, -0.0676562562584877,
  -0.06484375149011612, -0.06203124672174454, -0.05921875312924385, -0.05640624836087227, -0.053593751043081284, -0.05078125,
  -0.047968748956918716, -0.04515625163912773, -0.04234374687075615, -0.039531249552965164, -0.03671875223517418,
  -0.0339062474668026, -0.031093750149011612, -0.02828124724328518, -0.025468749925494194, -0.02265625074505806,
  -0.019843749701976776, -0.017031250521540642, -0.014218750409781933, -0.011406250298023224, -0.009718749672174454,
  -0.009156249463558197, -0.008593750186264515, -0.008031249977648258, -0.0074687497690320015, -0.006906250026077032,
  -0.006343749817460775, -0.005781250074505806, -0.0052187503315508366, -0.0046562496572732925, -0.004093749914318323,
  -0.0035312497057020664, -0.002968749962747097, -0.002406249986961484, -0.001843750011175871, -0.001281249918974936,
  -0.0009437500848434865, -0.0008312499849125743, -0.0007187500596046448, -0.0006062500760890543, -0.000493750034365803,
  -0.0003812500217463821, -0.0002687500382307917, -0.00015625001105945557, -8.874999912222847e-05, -6.625000241911039e-05,
  -4.374999844003469e-05, -2.1249998098937795e-05, -7.749999895168003e-06, -3.250000190746505e-06, -5.500000384017767e-07, 0,
  5.500000384017767e-07, 3.250000190746505e-06, 7.749999895168003e-06, 2.1249998098937795e-05, 4.374999844003469e-05,
  6.625000241911039e-05, 8.874999912222847e-05, 0.00015625001105945557, 0.0002687500382307917, 0.0003812500217463821,
  0.000493750034365803, 0.0006062500760890543, 0.0007187500596046448, 0.0008312499849125743, 0.0009437500848434865,
  0.001281249918974936, 0.001843750011175871, 0.002406249986961484, 0.002968749962747097, 0.0035312497057020664,
  0.004093749914318323, 0.0046562496572732925, 0.0052187503315508366, 0.005781250074505806, 0.006343749817460775,
  0.006906250026077032, 0.0074687497690320015, 0.008031249977648258, 0.008593750186264515, 0.009156249463558197,
  0.009718749672174454, 0.011406250298023224, 0.014218750409781933, 0.017031250521540642, 0.019843749701976776,
  0.02265625074505806, 0.025468749925494194, 0.02828124724328518, 0.031093750149011612, 0.0339062474668026, 0.03671875223517418,
  0.039531249552965164, 0.04234374687075615, 0.04515625163912773, 0.047968748956918716, 0.05078125, 0.053593751043081284,
  0.05640624836087227, 0.05921875312924385, 0.06203124672174454, 0.06484375149011612, 0.0676562562584877, 0.07046874612569809,
  0.07328125089406967, 0.07609374821186066, 0.07890625298023224, 0.08171874284744263, 0.08453124761581421, 0.08734375238418579,
  0.09015624970197678, 0.09296875447034836, 0.09578124433755875, 0.09859374910593033, 0.10703125596046448, 0.12109375,
  0.13515624403953552, 0.14921875298023224, 0.16328124701976776, 0.17734374105930328, 0.19140625, 0.20546874403953552,
  0.21953125298023224, 0.23359376192092896, 0.24765625596046448, 0.26171875, 0.2757812738418579, 0.28984373807907104,
  0.30390626192092896, 0.3179687261581421, 0.33203125, 0.34609371423721313, 0.36015623807907104, 0.37421876192092896,
  0.3882812261581421, 0.40234375, 0.41640621423721313, 0.43046873807907104, 0.44453126192092896, 0.4585937261581421, 0.47265625,
  0.4867187738418579, 0.500781238079071, 0.514843761920929, 0.5289062261581421, 0.54296875, 0.5570312738418579,
  0.5710937976837158, 0.585156261920929, 0.5992187261581421, 0.61328125, 0.6273437738418579, 0.641406238079071,
  0.655468761920929, 0.6695312857627869, 0.68359375, 0.6976562738418579, 0.7117187976837158, 0.725781261920929,
  0.7398437857627869, 0.75390625, 0.7679687738418579, 0.782031238079071, 0.7960937023162842, 0.8101562261581421, 0.82421875,
  0.8382812142372131, 0.852343738079071, 0.8664062023162842, 0.8804687261581421, 0.89453125, 0.9085937738418579,
  0.922656238079071, 0.9367187023162842, 0.9507812261581421, 0.96484375, 0.9789062142372131, 0.992968738079071, 1.0,
);

export function dynamicMap(): Float32Array {
  return DYNAMIC_MAP;
}

/** The double-quantized block scales of an nf4 weight. */
export interface NestedScales {
  /** 8-bit codes into `code2`, one per 64-block. */
  qscales: Uint8Array;
  /** absmax of each 256-block of (absmax − offset). */
  scales2: Float32Array;
  code2: Float32Array;
  offset: number;
}

/** What a quantized-matmul kernel reads: a frozen (rows = out, cols = in) matrix in a compact format. */
export interface QuantizedData {
  readonly format: QuantFormat;
  readonly rows: number;
  readonly cols: number;
  /** bf16: 2·rows·cols bytes (LE); int8: rows·cols (two's complement); nf4: ⌈rows·cols/2⌉ (high nibble first). */
  readonly data: Uint8Array;
  /** int8: per-row absmax (rows); nf4: per-block absmax (⌈rows·cols/64⌉, empty when nested); bf16: empty. */
  readonly scales: Float32Array;
  /** nf4: 64. */
  readonly blockSize: number;
  /** nf4: the 16-entry code book (NF4; a bitsandbytes fp4 checkpoint brings its own). */
  readonly code: Float32Array;
  readonly nested: NestedScales | null;
}

export function nf4Blocks(rows: number, cols: number, blockSize = NF4_BLOCK): number {
  return Math.ceil((rows * cols) / blockSize);
}

/** Bytes the compact weight occupies (data, scales, nested scales). */
export function quantizedBytes(q: QuantizedData): number {
  let n = q.data.byteLength + q.scales.byteLength;
  if (q.nested) n += q.nested.qscales.byteLength + q.nested.scales2.byteLength + 4;
  return n;
}

function checkFiniteWeight(values: Float32Array, format: QuantFormat, name: string): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) throw new VeraError(`${format} quantization: ${name} holds ${values[i]} at index ${i}; refusing to quantize a non-finite weight`);
  }
}

function bf16Bits(x: number, f32: Float32Array, u32: Uint32Array): number {
  f32[0] = x;
  const b = u32[0];
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

export interface QuantizeOptions {
  /** nf4: double-quantize the block scales (QLoRA). Default false. */
  doubleQuant?: boolean;
  /** Named in the one-line error on NaN/Inf. */
  name?: string;
  /**
   * The weight is given as (cols, rows) (GPT-2's Conv1D (in, out)) and is transposed to (rows, cols)
   * as it is quantized.
   */
  transposed?: boolean;
}

/** Quantizes a (rows, cols) float32 matrix (values in row-major order, or (cols, rows) with `transposed`). */
export function quantize(values: Float32Array, rows: number, cols: number, format: QuantFormat, opts: QuantizeOptions = {}): QuantizedData {
  const n = rows * cols;
  if (values.length !== n) throw new Error(`quantize: ${values.length} values for a ${rows}×${cols} matrix`);
  checkFiniteWeight(values, format, opts.name ?? 'the weight');
  const at = opts.transposed ? (i: number): number => values[(i % cols) * rows + Math.floor(i / cols)] : (i: number): number => values[i];
  const src = opts.transposed ? Float32Array.from({ length: n }, (_, i) => at(i)) : values;
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  if (format === 'bf16') {
    const data = new Uint8Array(2 * n);
    for (let i = 0; i < n; i++) {
      const b = bf16Bits(src[i], f32, u32);
      data[2 * i] = b & 0xff;
      data[2 * i + 1] = b >>> 8;
    }
    return { format, rows, cols, data, scales: new Float32Array(0), blockSize: 0, code: new Float32Array(0), nested: null };
  }
  if (format === 'int8') {
    const data = new Uint8Array(n);
    const scales = new Float32Array(rows);
    for (let r = 0; r < rows; r++) {
      let amax = 0;
      for (let c = 0; c < cols; c++) amax = Math.max(amax, Math.abs(src[r * cols + c]));
      scales[r] = amax;
      if (amax === 0) continue;
      const inv = Math.fround(127 / Math.fround(amax));
      for (let c = 0; c < cols; c++) {
        const q = roundHalfEven(Math.fround(src[r * cols + c] * inv));
        data[r * cols + c] = Math.max(-127, Math.min(127, q)) & 0xff;
      }
    }
    return { format, rows, cols, data, scales, blockSize: 0, code: new Float32Array(0), nested: null };
  }
  const blocks = nf4Blocks(rows, cols);
  const absmax = new Float32Array(blocks);
  const data = new Uint8Array(Math.ceil(n / 2)).fill(0x77);
  const code = NF4_CODE;
  for (let b = 0; b < blocks; b++) {
    const lo = b * NF4_BLOCK;
    const hi = Math.min(n, lo + NF4_BLOCK);
    let amax = 0;
    for (let i = lo; i < hi; i++) amax = Math.max(amax, Math.abs(src[i]));
    absmax[b] = amax;
    const inv = amax === 0 ? 0 : Math.fround(1 / Math.fround(amax));
    for (let i = lo; i < hi; i++) {
      const x = Math.max(-1, Math.min(1, Math.fround(src[i] * inv)));
      const q = nearest(code, x);
      data[i >> 1] = i & 1 ? (data[i >> 1] & 0xf0) | q : (data[i >> 1] & 0x0f) | (q << 4);
    }
  }
  const nested = opts.doubleQuant ? quantizeNested(absmax) : null;
  return { format, rows, cols, data, scales: nested ? new Float32Array(0) : absmax, blockSize: NF4_BLOCK, code, nested };
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Index of the nearest code value (f32 distances; ties go to the lower index, as torch.argmin). */
function nearest(code: Float32Array, x: number): number {
  let best = 0;
  let bestD = Infinity;
  for (let j = 0; j < code.length; j++) {
    const d = Math.abs(Math.fround(x - code[j]));
    if (d < bestD) {
      bestD = d;
      best = j;
    }
  }
  return best;
}

/** QLoRA's double quantization of the block absmaxes (bitsandbytes `quantize_blockwise`, blocks of 256). */
export function quantizeNested(absmax: Float32Array): NestedScales {
  let sum = 0;
  for (const v of absmax) sum += v;
  const offset = Math.fround(absmax.length > 0 ? sum / absmax.length : 0);
  const code2 = dynamicMap();
  const nb = Math.ceil(absmax.length / NESTED_BLOCK);
  const scales2 = new Float32Array(nb);
  const qscales = new Uint8Array(absmax.length);
  const zero = code2.indexOf(0);
  for (let b = 0; b < nb; b++) {
    const lo = b * NESTED_BLOCK;
    const hi = Math.min(absmax.length, lo + NESTED_BLOCK);
    let amax = 0;
    for (let i = lo; i < hi; i++) amax = Math.max(amax, Math.abs(Math.fround(absmax[i] - offset)));
    scales2[b] = amax;
    const inv = amax === 0 ? 0 : Math.fround(1 / amax);
    for (let i = lo; i < hi; i++) {
      qscales[i] = amax === 0 ? zero : nearest(code2, Math.max(-1, Math.min(1, Math.fround(Math.fround(absmax[i] - offset) * inv))));
    }
  }
  return { qscales, scales2, code2, offset };
}

/** The block absmaxes of an nf4 weight (expanded from the nested form when double-quantized). */
export function blockScales(q: QuantizedData): Float32Array {
  if (!q.nested) return q.scales;
  const { qscales, scales2, code2, offset } = q.nested;
  const out = new Float32Array(qscales.length);
  for (let i = 0; i < out.length; i++) out[i] = Math.fround(Math.fround(code2[qscales[i]] * scales2[Math.floor(i / NESTED_BLOCK)]) + offset);
  return out;
}

/** Writes elements [lo, hi) of the flattened (rows, cols) matrix, dequantized, into dst[0 …]. */
export function dequantizeRange(q: QuantizedData, lo: number, hi: number, dst: Float32Array, scales?: Float32Array): void {
  if (q.format === 'bf16') {
    const u32 = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
    for (let i = lo; i < hi; i++) u32[i - lo] = ((q.data[2 * i] | (q.data[2 * i + 1] << 8)) << 16) >>> 0;
  } else if (q.format === 'int8') {
    for (let i = lo; i < hi; i++) {
      const v = (q.data[i] << 24) >> 24;
      dst[i - lo] = Math.fround(Math.fround(v * q.scales[Math.floor(i / q.cols)]) * INV127);
    }
  } else {
    const s = scales ?? blockScales(q);
    for (let i = lo; i < hi; i++) {
      const byte = q.data[i >> 1];
      const c = i & 1 ? byte & 15 : byte >> 4;
      dst[i - lo] = Math.fround(q.code[c] * s[Math.floor(i / q.blockSize)]);
    }
  }
}

/** bitsandbytes' 1/127 (int8_vectorwise_dequant). */
export const INV127 = Math.fround(7.874015718698502e-3);

/** The whole weight as float32 (rows, cols): for merging and checks, never on the forward path. */
export function dequantize(q: QuantizedData): Float32Array {
  const out = new Float32Array(q.rows * q.cols);
  dequantizeRange(q, 0, out.length, out);
  return out;
}
