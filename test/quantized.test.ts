// Quantized frozen bases (bf16, int8, nf4 with and without double quantization): quantize /
// dequantize against the PyTorch reference (scripts/fixtures/make_quant_fixtures.py), adversarial
// blocks, NaN refused, the quantized matmuls on both backends against float32 on the dequantized
// weights, gradients through a quantized linear layer, an adapter trained on an nf4 base used on
// the f32 base, merging into a quantized base, and the --weights flag.
import '../src/backends/index.js';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { tsKernels } from '../src/backends/index.js';
import { loadAddon, nativeKernels } from '../src/backends/native/index.js';
import { F, Rng, Tensor, noGrad, quantize, dequantize, dynamicMap, blockScales, quantizedBytes, type Kernels, type QuantFormat, type QuantizedData } from '../src/tensor/index.js';
import { Linear } from '../src/nn/index.js';
import { loadPretrained } from '../src/models/auto.js';
import { causalLmLoss, type GPT2LMHeadModel } from '../src/models/gpt2.js';
import { PeftModel, getPeftModel, veraConfig } from '../src/peft/index.js';
import { AdamW } from '../src/train/optim.js';
import { assertVeraError, maxAbsDiff, runVera, withTmp } from './helpers.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/', import.meta.url));
const fixture = (name: string): string => path.join(FIXTURES, name);

const load = loadAddon();
const native: Kernels | null = load.addon ? nativeKernels(load.addon) : null;
const backends: [string, Kernels | null][] = [['ts', tsKernels], ['native', native]];

const bytes = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));
const f32 = (s: string): Float32Array => {
  const b = bytes(s);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4).slice();
};

interface Case {
  name: string;
  rows: number;
  cols: number;
  values: string;
  bf16: { bits: string; dequant: string };
  int8: { q: string; scales: string; dequant: string };
  nf4: { packed: string; absmax: string; dequant: string };
  nf4_dq: { packed: string; qscales: string; scales2: string; offset: number; code2: string; scales_dq: string; dequant: string };
}
const ref = JSON.parse(fs.readFileSync(fixture('quant/quant.json'), 'utf8')) as { nf4_code: number[]; dynamic_map: string; cases: Case[] };

/** Bit-for-bit equality of two float arrays (−0 and +0 count as equal: both dequantize a zero). */
function sameFloats(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: lengths`);
  for (let i = 0; i < a.length; i++) if (!(a[i] === b[i])) assert.fail(`${what}: index ${i}: ${a[i]} vs ${b[i]}`);
}

describe('formats against the PyTorch reference', () => {
  test('the NF4 code book and the dynamic map of the nested scales', () => {
    assert.deepEqual([...quantize(new Float32Array(64).fill(1), 1, 64, 'nf4').code], ref.nf4_code.map(Math.fround));
    sameFloats(dynamicMap(), f32(ref.dynamic_map), 'dynamic map');
  });

  for (const c of ref.cases) {
    test(c.name, () => {
      const w = f32(c.values);
      const b = quantize(w, c.rows, c.cols, 'bf16');
      assert.deepEqual([...b.data], [...bytes(c.bf16.bits)], 'bf16 bits (round to nearest even)');
      sameFloats(dequantize(b), f32(c.bf16.dequant), 'bf16 dequant');

      const i8 = quantize(w, c.rows, c.cols, 'int8');
      assert.deepEqual([...i8.data], [...bytes(c.int8.q)], 'int8 codes');
      sameFloats(i8.scales, f32(c.int8.scales), 'int8 row absmax');
      sameFloats(dequantize(i8), f32(c.int8.dequant), 'int8 dequant');

      const n4 = quantize(w, c.rows, c.cols, 'nf4');
      assert.deepEqual([...n4.data], [...bytes(c.nf4.packed)], 'nf4 packed codes (first element in the high nibble)');
      sameFloats(n4.scales, f32(c.nf4.absmax), 'nf4 block absmax');
      sameFloats(dequantize(n4), f32(c.nf4.dequant), 'nf4 dequant');

      const dq = quantize(w, c.rows, c.cols, 'nf4', { doubleQuant: true });
      assert.deepEqual([...dq.data], [...bytes(c.nf4_dq.packed)], 'nf4 (double quant) codes');
      assert.deepEqual([...dq.nested!.qscales], [...bytes(c.nf4_dq.qscales)], 'nested 8-bit scale codes');
      sameFloats(dq.nested!.scales2, f32(c.nf4_dq.scales2), 'nested block absmax');
      assert.equal(dq.nested!.offset, Math.fround(c.nf4_dq.offset), 'nested offset (mean absmax)');
      // the reference computes code2·s2 + offset in float32 as we do
      sameFloats(blockScales(dq), f32(c.nf4_dq.scales_dq), 'nf4 block scales from the nested form');
      sameFloats(dequantize(dq), f32(c.nf4_dq.dequant), 'nf4 (double quant) dequant');
    });
  }

  test('adversarial blocks: zero blocks stay exactly zero, an outlier is kept exactly, its block flushes', () => {
    const w = new Float32Array(256);
    w[70] = 1e4;
    for (let i = 71; i < 128; i++) w[i] = 0.01;
    for (const fmt of ['int8', 'nf4'] as const) {
      const d = dequantize(quantize(w, 2, 128, fmt));
      assert.ok(d.subarray(0, 64).every((v) => v === 0), `${fmt}: all-zero block`);
      assert.equal(d[70], 1e4, `${fmt}: the outlier is the scale itself`);
      assert.ok(d.subarray(71, 128).every((v) => v === 0), `${fmt}: small values next to the outlier flush to 0`);
    }
  });

  test('NaN and Inf are refused in one line naming the weight', () => {
    for (const fmt of ['bf16', 'int8', 'nf4'] as const) {
      const w = new Float32Array(128).fill(0.5);
      w[77] = NaN;
      assertVeraError(() => quantize(w, 2, 64, fmt, { name: 'h.0.attn.c_attn.weight' }), [fmt, 'h.0.attn.c_attn.weight', 'NaN', 'index 77']);
      w[77] = -Infinity;
      assertVeraError(() => quantize(w, 2, 64, fmt), ['-Infinity']);
    }
  });

  test('sizes: bf16 2 bytes, int8 1 byte + 4 per row, nf4 0.5 byte + 4 per 64 (double quant: 1 per 64 + 4 per 16384)', () => {
    const w = new Rng(1).fillNormal(new Float32Array(128 * 512), 0, 1);
    assert.equal(quantizedBytes(quantize(w, 128, 512, 'bf16')), 2 * 65536);
    assert.equal(quantizedBytes(quantize(w, 128, 512, 'int8')), 65536 + 4 * 128);
    assert.equal(quantizedBytes(quantize(w, 128, 512, 'nf4')), 32768 + 4 * 1024);
    assert.equal(quantizedBytes(quantize(w, 128, 512, 'nf4', { doubleQuant: true })), 32768 + 1024 + 4 * 4 + 4);
  });
});

// Tolerance of the quantized matmuls against a float32 GEMM on the dequantized weight:
// |Δ| ≤ 1e-4·(1 + |ref|) for k ≤ 1100. The compact weights dequantize bit-identically on both backends;
// what differs is summation order, and on AVX-512 BF16 CPUs the bf16 decode path's activations split
// into two bf16 halves (x = hi + lo, |x − hi − lo| ≤ 2⁻¹⁶|x|), which bounds the relative error near 2e-5.
const TOL = 1e-4;
function close(got: Float32Array, want: Float32Array, what: string): void {
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= TOL * (1 + Math.abs(want[i])))) assert.fail(`${what}: index ${i}: ${got[i]} vs ${want[i]}`);
  }
}

describe('quantized matmuls against float32 on the dequantized weights', () => {
  const rng = new Rng(1313);
  const shapes: [number, number, number][] = [[1, 37, 70], [3, 130, 257], [70, 65, 200], [5, 300, 1024], [1, 64, 4096 / 4]];
  for (const [name, k] of backends) {
    test(`${name} backend`, { skip: k === null ? 'native addon not built' : false }, () => {
      for (const [m, n, kk] of shapes) {
        const w = rng.fillNormal(new Float32Array(n * kk), 0, 0.1);
        const x = rng.fillNormal(new Float32Array(m * kk), 0, 1);
        const gy = rng.fillNormal(new Float32Array(m * n), 0, 1);
        const variants: [QuantFormat, boolean][] = [['bf16', false], ['int8', false], ['nf4', false], ['nf4', true]];
        for (const [fmt, dq] of variants) {
          const q = quantize(w, n, kk, fmt, { doubleQuant: dq });
          const d = dequantize(q);
          const want = new Float32Array(m * n);
          tsKernels.matmul(x, d, want, { batch: 1, m, n, k: kk, transA: false, transB: true, strideA: 0, strideB: 0, accumulate: false });
          const got = new Float32Array(m * n);
          k!.quantMatmul(x, q, m, got);
          close(got, want, `${fmt}${dq ? '+dq' : ''} forward ${m}×${n}×${kk}`);
          const gwant = new Float32Array(m * kk);
          tsKernels.matmul(gy, d, gwant, { batch: 1, m, n: kk, k: n, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: false });
          const ggot = new Float32Array(m * kk);
          k!.quantMatmulInputGrad(gy, q, m, ggot);
          close(ggot, gwant, `${fmt}${dq ? '+dq' : ''} input gradient ${m}×${n}×${kk}`);
        }
      }
    });
  }
});

describe('a quantized Linear', () => {
  for (const fanInFanOut of [false, true]) {
    test(`forward and input gradient match the f32 layer on the dequantized weight (fanInFanOut ${fanInFanOut})`, () => {
      const rng = new Rng(7);
      const lin = new Linear(96, 40, { fanInFanOut, rng });
      lin.requiresGrad_(false);
      lin.quantize('nf4');
      assert.equal(lin.weightFormat, 'nf4');
      assert.equal(lin.parameters().length, 1, 'only the bias stays a parameter');
      assert.throws(() => lin.weight, /holds its weight as nf4/);
      const wd = lin.dequantizedWeight();
      assert.deepEqual(wd.shape, fanInFanOut ? [96, 40] : [40, 96]);
      const x1 = Tensor.fromArray(rng.fillNormal(new Float32Array(3 * 5 * 96), 0, 1), [3, 5, 96], true);
      const x2 = Tensor.fromArray(x1.toFloat32Array(), [3, 5, 96], true);
      const y1 = lin.forward(x1);
      const y2 = F.linear(x2, wd, lin.bias, fanInFanOut);
      close(y1.toFloat32Array(), y2.toFloat32Array(), 'forward');
      const gy = Tensor.fromArray(rng.fillNormal(new Float32Array(3 * 5 * 40), 0, 1), [3, 5, 40]);
      y1.backward(gy);
      y2.backward(gy);
      close(x1.grad!.toFloat32Array(), x2.grad!.toFloat32Array(), 'input gradient');
    });
  }
});

const TINY = fixture('gpt2-tiny');
const IDS = Int32Array.from({ length: 2 * 12 }, (_, i) => (i * 37 + 11) % 100);
const SHAPE: [number, number] = [2, 12];
const logits = (m: GPT2LMHeadModel): Float32Array => noGrad(() => m.forward(IDS, SHAPE)).toFloat32Array();

describe('loading a base in a compact format', () => {
  test('every linear layer but lm_head is quantized; logits stay near f32', () => {
    const f = loadPretrained(TINY).model as GPT2LMHeadModel;
    const base = logits(f);
    for (const fmt of ['bf16', 'int8', 'nf4'] as const) {
      const q = loadPretrained(TINY, { weights: fmt }).model as GPT2LMHeadModel;
      const lins = [...q.namedModules()].filter(([, m]) => m instanceof Linear) as [string, Linear][];
      for (const [p, m] of lins) assert.equal(m.weightFormat, p.endsWith('lm_head') ? 'f32' : fmt, p);
      const d = maxAbsDiff(logits(q), base);
      assert.ok(d > 0 && d < { bf16: 0.1, int8: 0.3, nf4: 3 }[fmt], `${fmt}: max |Δlogit| ${d}`);
    }
  });

  test('a bad weights value, and a non-causal-LM model, are refused in one line', () => {
    assertVeraError(() => loadPretrained(TINY, { weights: 'fp8' as never }), ['weights must be one of f32, bf16, int8, nf4', '"fp8"']);
  });

  test('DoRA / DVoRA on a quantized base is refused in one line naming use_dora', () => {
    const nf4 = loadPretrained(TINY, { weights: 'nf4' }).model as GPT2LMHeadModel;
    assertVeraError(() => getPeftModel(nf4, veraConfig({ r: 4, targetModules: ['c_attn'], useDora: true })), ['use_dora', 'nf4 base is not supported']);
  });

  test('a VeRA adapter trained on an nf4 base loads on the f32 base: outputs differ by the quantization error only', () => withTmp((dir) => {
    const nf4 = loadPretrained(TINY, { weights: 'nf4' }).model as GPT2LMHeadModel;
    const f32base = loadPretrained(TINY).model as GPT2LMHeadModel;
    const quantError = maxAbsDiff(logits(nf4), logits(f32base));
    const peft = getPeftModel(nf4, veraConfig({ targetModules: ['c_attn', 'c_fc'], r: 8, projectionPrngKey: 3 }));
    const opt = new AdamW([{ params: nf4.parameters().filter((t) => t.requiresGrad), lr: 0.05 }]);
    nf4.train();
    let first = 0;
    let last = 0;
    for (let step = 0; step < 8; step++) {
      const loss = causalLmLoss(nf4.forward(IDS, SHAPE), IDS, SHAPE);
      if (step === 0) first = loss.item();
      last = loss.item();
      loss.backward();
      opt.step();
      opt.zeroGrad();
    }
    assert.ok(last < first, `loss fell (${first} → ${last})`);
    nf4.eval();
    const onNf4 = logits(nf4);
    peft.saveAdapter(path.join(dir, 'a'));
    const onF32Model = PeftModel.fromPretrained(f32base, path.join(dir, 'a'));
    void onF32Model;
    const onF32 = logits(f32base);
    const adapterEffect = maxAbsDiff(onF32, logits(loadPretrained(TINY).model as GPT2LMHeadModel));
    assert.ok(adapterEffect > 2 * quantError, `the adapter changes the outputs (${adapterEffect}) well beyond the quantization error (${quantError})`);
    const d = maxAbsDiff(onNf4, onF32);
    assert.ok(d < 2 * quantError, `nf4+adapter vs f32+adapter: ${d}, quantization error of the base alone ${quantError}`);
  }));

  test('merging into an nf4 base dequantizes, adds ΔW and requantizes (one warning line)', () => withTmp((dir) => {
    const f32base = loadPretrained(TINY).model as GPT2LMHeadModel;
    const peft = getPeftModel(f32base, veraConfig({ targetModules: ['c_attn'], r: 4, projectionPrngKey: 5, initWeights: false }));
    peft.saveAdapter(path.join(dir, 'a'));
    const want = logits(f32base);
    const nf4 = loadPretrained(TINY, { weights: 'nf4' }).model as GPT2LMHeadModel;
    const p = PeftModel.fromPretrained(nf4, path.join(dir, 'a'));
    const quantError = maxAbsDiff(logits(loadPretrained(TINY, { weights: 'nf4' }).model as GPT2LMHeadModel), logits(loadPretrained(TINY).model as GPT2LMHeadModel));
    const before = logits(nf4);
    const merged = p.mergeAndUnload() as GPT2LMHeadModel;
    const lin = merged.getSubmodule('transformer.h.0.attn.c_attn') as Linear;
    assert.equal(lin.weightFormat, 'nf4', 'still nf4 after the merge');
    const after = logits(merged);
    const dMerge = maxAbsDiff(after, before);
    const dF32 = maxAbsDiff(after, want);
    assert.ok(dMerge > 0 && dMerge < 2 * quantError, `merged vs unmerged nf4: ${dMerge} (nf4 rounding of the base: ${quantError})`);
    assert.ok(dF32 < 2 * quantError, `merged nf4 vs f32 + adapter: ${dF32}`);
  }));
});

describe('--weights on the CLI', () => {
  test('vera inspect --weights nf4 loads; a bad value is one line and a non-zero exit', async () => {
    const ok = await runVera(['inspect', '--model', TINY, '--weights', 'nf4', '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    const bad = await runVera(['perplexity', '--model', TINY, '--weights', 'fp8', '--token-ids', '1,2,3']);
    assert.notEqual(bad.code, 0);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    assert.match(bad.stderr, /--weights.*must be one of f32, bf16, int8, nf4/);
  });

  test('vera merge --weights bf16 writes the merged linear weights as BF16', () => withTmp(async (dir) => {
    const f32base = loadPretrained(TINY).model as GPT2LMHeadModel;
    getPeftModel(f32base, veraConfig({ targetModules: ['c_attn'], r: 4, projectionPrngKey: 5, initWeights: false })).saveAdapter(path.join(dir, 'a'));
    const r = await runVera(['merge', '--model', TINY, '--adapter', path.join(dir, 'a'), '--out', path.join(dir, 'm'), '--weights', 'bf16', '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: merging into a bf16 base/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    const { SafetensorsFile } = await import('../src/io/safetensors.js');
    const st = SafetensorsFile.open(path.join(dir, 'm', 'model.safetensors'));
    assert.equal(st.info('transformer.h.0.attn.c_attn.weight').dtype, 'BF16');
    assert.equal(st.info('transformer.wte.weight').dtype, 'F32');
  }));
});

void ({} as QuantizedData);

test('native quantized decoding (m ≤ 64): a row\'s result does not depend on the other rows (bit for bit), and matches float32 on the dequantized weight', { skip: native === null ? 'native addon not built' : false }, () => {
  const k = native!;
  const rng = new Rng(77);
  const rows = 40;
  for (const cols of [192, 200]) {
    for (const [format, doubleQuant] of [['int8', false], ['nf4', false], ['nf4', true]] as [QuantFormat, boolean][]) {
      if (format === 'nf4' && cols % 64 !== 0) continue;
      const q = quantize(rng.fillNormal(new Float32Array(rows * cols), 0, 0.05), rows, cols, format, { doubleQuant });
      const w = dequantize(q);
      const xs = rng.fillNormal(new Float32Array(20 * cols), 0, 1);
      const alone: Float32Array[] = [];
      for (let i = 0; i < 20; i++) {
        const out = new Float32Array(rows);
        k.quantMatmul(xs.subarray(i * cols, (i + 1) * cols).slice(), q, 1, out);
        alone.push(out);
        for (let n = 0; n < rows; n++) {
          let ref = 0;
          for (let p = 0; p < cols; p++) ref += xs[i * cols + p] * w[n * cols + p];
          assert.ok(Math.abs(out[n] - ref) <= 1e-4 * (1 + Math.abs(ref)), `${format}${doubleQuant ? ' nested' : ''} ${cols}: row ${i} col ${n}: ${out[n]} vs ${ref}`);
        }
      }
      for (const m of [2, 7, 8, 9, 17, 20]) {
        const out = new Float32Array(m * rows);
        k.quantMatmul(xs.slice(0, m * cols), q, m, out);
        for (let i = 0; i < m; i++) assert.deepEqual(out.subarray(i * rows, (i + 1) * rows), alone[i], `${format}${doubleQuant ? ' nested' : ''} ${cols}: m = ${m}, row ${i}`);
      }
    }
  }
});
