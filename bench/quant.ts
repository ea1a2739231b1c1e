// The compact weight formats on our runtime (bench section "quant"), in one child process:
// - GEMM: y = x·Wᵀ for x (n×n) and an (n×n) nn.Linear weight held in each format, through
//   Kernels.quantMatmul (f32: Kernels.matmul with transB), GFLOP/s against f32;
// - batch-1 decoding on a SmolLM-135M-shaped Llama (random weights, seeded) with its linear layers in
//   each format: seconds per token, bytes read per token (linear weights in the format, plus the
//   f32 lm_head and norms), and the time to read exactly those bytes once (Σx² over them on all
//   threads): the bandwidth bound of a step in that format;
// - accuracy on a real small model (data/fortune-llama): perplexity of a fixed slice of the
//   fortunes' eval set and max |Δlogit| against f32.
import '../src/backends/index.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Rng, kernels, noGrad, quantize, quantizedBytes, type QuantFormat, type QuantizedData, type WeightFormat } from '../src/tensor/index.js';
import { loadPretrained, quantizableLinears, type LlamaForCausalLM } from '../src/models/index.js';
import { KVCache } from '../src/models/kv-cache.js';
import { perplexity } from '../src/train/lm.js';
import { loadTokenizer } from '../src/data/tokenizer.js';
import { loadAddon } from '../src/backends/native/index.js';
import { buildModel, type DecodeShape } from './decode.js';

export const QUANT_FORMATS: readonly WeightFormat[] = ['f32', 'bf16', 'int8', 'nf4'];

export interface QuantSpec {
  sizes: number[];
  runs: number;
  minSeconds: number;
  decode: { shape: DecodeShape; prompt: number; newTokens: number; runs: number };
  /** Model folder, eval jsonl, fortunes taken from its start, tokens for max |Δlogit|; null: skipped. */
  accuracy: { model: string; evalFile: string; fortunes: number; logitTokens: number } | null;
}

export interface QuantResult {
  backend: string;
  /** Register-only FMA loop on all threads (native only; null elsewhere). */
  peakGflops: number | null;
  gemm: { n: number; format: WeightFormat; seconds: number[] }[];
  decode: { format: WeightFormat; linearBytes: number; otherBytes: number; tokenSeconds: number[]; readSeconds: number[] }[];
  accuracy: { format: WeightFormat; tokens: number; perplexity: number; maxDeltaLogit: number }[] | null;
  accuracyError?: string;
}

function timedRuns(fn: () => void, runs: number, minSeconds: number): number[] {
  fn(); // warm-up
  const out: number[] = [];
  let total = 0;
  while (out.length < runs || total < minSeconds) {
    const t0 = performance.now();
    fn();
    out.push((performance.now() - t0) / 1000);
    total += out[out.length - 1];
  }
  return out;
}

function gemmRows(spec: QuantSpec): QuantResult['gemm'] {
  const k = kernels();
  const out: QuantResult['gemm'] = [];
  for (const n of spec.sizes) {
    const rng = new Rng(n);
    const wValues = rng.fillNormal(new Float32Array(n * n), 0, 0.02);
    const x = k.fromArray(rng.fillUniform(new Float32Array(n * n), -1, 1));
    const y = k.alloc(n * n);
    for (const format of QUANT_FORMATS) {
      let fn: () => void;
      let w: ReturnType<typeof k.fromArray> | null = null;
      if (format === 'f32') {
        w = k.fromArray(wValues);
        const p = { batch: 1, m: n, n, k: n, transA: false, transB: true, strideA: 0, strideB: 0, accumulate: false };
        fn = () => k.matmul(x, w!, y, p);
      } else {
        const q = quantize(wValues, n, n, format);
        fn = () => k.quantMatmul(x, q, n, y);
      }
      out.push({ n, format, seconds: timedRuns(fn, spec.runs, spec.minSeconds) });
      if (w) k.free?.(w);
    }
    for (const s of [x, y]) k.free?.(s);
  }
  return out;
}

/** A float view of a byte array's whole 4-byte words (for Σx² to read them: the values do not matter). */
function words(b: Uint8Array | Float32Array): Float32Array {
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength >> 2);
}

function decodeRows(spec: QuantSpec): QuantResult['decode'] {
  const k = kernels();
  const d = spec.decode;
  const out: QuantResult['decode'] = [];
  const rng = new Rng(7);
  const prompt = Int32Array.from({ length: d.prompt }, () => rng.int(d.shape.vocab));
  for (const format of QUANT_FORMATS) {
    const model = buildModel(d.shape);
    const linears = quantizableLinears(model).map(([, m]) => m);
    const quantized = new Set(linears.map((m) => m.weight));
    const reads: Float32Array[] = [];
    let linearBytes = 0;
    for (const m of linears) {
      if (format === 'f32') {
        linearBytes += 4 * m.weight.size;
        reads.push(m.weight.storage as Float32Array);
        continue;
      }
      m.quantize(format as QuantFormat);
      const q = m.quantized as QuantizedData;
      linearBytes += quantizedBytes(q);
      reads.push(words(q.data));
      if (q.scales.length > 0) reads.push(q.scales);
      if (q.nested) reads.push(words(q.nested.qscales), q.nested.scales2);
    }
    // the rest a step reads: lm_head (tied: the whole embedding matrix) and the norms, in f32
    let otherBytes = 0;
    for (const t of new Set(model.parameters())) {
      if (quantized.has(t)) continue;
      otherBytes += 4 * t.size;
      reads.push(t.storage as Float32Array);
    }
    const readSeconds = timedRuns(() => {
      for (const r of reads) k.sumSquares(r);
    }, d.runs, 0);
    const tokenSeconds: number[] = [];
    noGrad(() => {
      for (let run = 0; run < d.runs + 1; run++) {
        const cache = new KVCache();
        let ids = prompt;
        for (let step = 0; step <= d.newTokens; step++) {
          const t0 = performance.now();
          const row = model.forward(ids, [1, ids.length], { cache, logitsToKeep: 1 }).toFloat32Array();
          // the prompt step and the warm-up run are not timed
          if (step > 0 && run > 0) tokenSeconds.push((performance.now() - t0) / 1000);
          let best = 0;
          for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
          ids = Int32Array.of(best);
        }
      }
    });
    out.push({ format, linearBytes, otherBytes, tokenSeconds, readSeconds });
  }
  return out;
}

async function accuracyRows(a: NonNullable<QuantSpec['accuracy']>): Promise<NonNullable<QuantResult['accuracy']>> {
  const lines = fs.readFileSync(a.evalFile, 'utf8').split('\n').filter((l) => l.trim() !== '').slice(0, a.fortunes);
  const text = lines.map((l) => (JSON.parse(l) as { text: string }).text).join('\n\n');
  const tokenizer = await loadTokenizer(a.model);
  if (tokenizer === null) throw new Error(`${a.model}: no tokenizer.json`);
  const ids = Int32Array.from(tokenizer.encode(text));
  const head = ids.subarray(0, Math.min(a.logitTokens, ids.length));
  let base: Float32Array | null = null;
  const out: NonNullable<QuantResult['accuracy']> = [];
  for (const format of QUANT_FORMATS) {
    const model = loadPretrained(a.model, { weights: format }).model as LlamaForCausalLM;
    const logits = noGrad(() => model.forward(head, [1, head.length]).toFloat32Array());
    base ??= logits;
    let maxDelta = 0;
    for (let i = 0; i < logits.length; i++) maxDelta = Math.max(maxDelta, Math.abs(logits[i] - base[i]));
    const p = perplexity(model, ids);
    out.push({ format, tokens: p.tokens, perplexity: p.perplexity, maxDeltaLogit: maxDelta });
  }
  return out;
}

export async function runQuantSpec(spec: QuantSpec): Promise<QuantResult> {
  const k = kernels();
  const addon = k.name === 'native' ? loadAddon().addon : null;
  const peakGflops = addon ? addon.machinePeak(1) : null;
  const gemm = gemmRows(spec);
  const decode = decodeRows(spec);
  let accuracy: QuantResult['accuracy'] = null;
  let accuracyError: string | undefined;
  if (spec.accuracy !== null) {
    try {
      accuracy = await accuracyRows({ ...spec.accuracy, model: path.resolve(spec.accuracy.model) });
    } catch (err) {
      accuracyError = (err as Error).message;
    }
  }
  return { backend: k.name, peakGflops, gemm, decode, accuracy, ...(accuracyError ? { accuracyError } : {}) };
}
