// Pre-quantized bitsandbytes folders (test/fixtures/bnb, from scripts/fixtures/make_bnb_fixtures.py,
// which writes bitsandbytes' key layout by hand: no bitsandbytes here): nf4 (with and without double
// quantization) and int8 load into our formats exactly as the f32 folder quantized by us, a GPT-2
// Conv1D model included; weights 'f32' dequantizes; each unsupported variant is refused in one line.
import '../src/backends/index.js';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { noGrad, dequantize } from '../src/tensor/index.js';
import { Linear } from '../src/nn/index.js';
import { loadPretrained } from '../src/models/auto.js';
import { bnbStoredSize } from '../src/models/bnb.js';
import { loadCheckpointTensors } from '../src/io/safetensors.js';
import { assertVeraError, runVera, withTmp } from './helpers.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/', import.meta.url));
const BNB = path.join(FIXTURES, 'bnb');
const LLAMA = path.join(FIXTURES, 'decoders', 'llama-gqa');
const GPT2 = path.join(FIXTURES, 'gpt2-tiny');
const IDS = Int32Array.from({ length: 2 * 10 }, (_, i) => (i * 37 + 11) % 100);

interface LM {
  forward(ids: Int32Array, shape: readonly [number, number]): { toFloat32Array(): Float32Array };
  namedModules(): Iterable<[string, unknown]>;
}
const logits = (m: unknown): Float32Array => noGrad(() => (m as LM).forward(IDS, [2, 10])).toFloat32Array();
const linears = (m: unknown): [string, Linear][] => [...(m as LM).namedModules()].filter(([, l]) => l instanceof Linear) as [string, Linear][];

function sameArray(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) assert.fail(`${what}: index ${i}: ${a[i]} vs ${b[i]}`);
}

describe('pre-quantized bitsandbytes folders', () => {
  const cases = [
    { dir: 'llama-nf4', src: LLAMA, weights: 'nf4', doubleQuant: false },
    { dir: 'llama-nf4-dq', src: LLAMA, weights: 'nf4', doubleQuant: true },
    { dir: 'llama-int8', src: LLAMA, weights: 'int8', doubleQuant: false },
    { dir: 'gpt2-nf4-dq', src: GPT2, weights: 'nf4', doubleQuant: true },
  ] as const;
  for (const c of cases) {
    test(`${c.dir}: the same codes, scales and logits as the f32 folder quantized by us`, () => {
      const ours = loadPretrained(c.src, { weights: c.weights, doubleQuant: c.doubleQuant }).model;
      const loaded = loadPretrained(path.join(BNB, c.dir));
      assert.equal(loaded.configJson.quantization_config, undefined, 'the returned config.json drops quantization_config');
      const a = linears(ours);
      const b = new Map(linears(loaded.model));
      for (const [p, l] of a) {
        const m = b.get(p)!;
        assert.equal(m.weightFormat, l.weightFormat, p);
        if (!l.quantized) continue;
        const [x, y] = [l.quantized, m.quantized!];
        sameArray(y.data, x.data, `${p} codes`);
        sameArray(y.scales, x.scales, `${p} scales`);
        assert.equal(!!y.nested, !!x.nested, `${p} nested`);
        if (x.nested && y.nested) {
          sameArray(y.nested.qscales, x.nested.qscales, `${p} nested codes`);
          sameArray(y.nested.scales2, x.nested.scales2, `${p} nested scales`);
          sameArray(y.nested.code2, x.nested.code2, `${p} nested map`);
          assert.equal(y.nested.offset, x.nested.offset, `${p} offset`);
        }
      }
      sameArray(logits(loaded.model), logits(ours), 'logits');
    });
  }

  test('the loader bounds the build by the dequantized sizes and memory by the stored bytes', () => {
    const f32 = loadCheckpointTensors(LLAMA);
    let elements = 0;
    for (const n of f32.names) elements += f32.get(n).shape.reduce((a, b) => a * b, 1);
    const nf4 = bnbStoredSize(loadCheckpointTensors(path.join(BNB, 'llama-nf4')));
    assert.ok(nf4.elements >= elements, `${nf4.elements} ≥ ${elements}`);
    assert.ok(nf4.bytes < 4 * elements / 2, `${nf4.bytes} bytes`);
  });

  test('weights f32 dequantizes a bitsandbytes folder; another format is refused in one line', () => {
    const q = loadPretrained(path.join(BNB, 'gpt2-nf4-dq')).model;
    const f = loadPretrained(path.join(BNB, 'gpt2-nf4-dq'), { weights: 'f32' }).model;
    for (const [p, l] of linears(f)) assert.equal(l.weightFormat, 'f32', p);
    const lq = new Map(linears(q)).get('transformer.h.0.attn.c_attn')!;
    const lf = new Map(linears(f)).get('transformer.h.0.attn.c_attn')!;
    sameArray(lf.dequantizedWeight().toFloat32Array(), lq.dequantizedWeight().toFloat32Array(), 'dequantized Conv1D weight');
    void dequantize;
    const d = logits(q).reduce((m, v, i) => Math.max(m, Math.abs(v - logits(f)[i])), 0);
    assert.ok(d < 1e-3, `nf4 kernels vs f32 on the dequantized weights: ${d}`);
    assertVeraError(() => loadPretrained(path.join(BNB, 'llama-nf4'), { weights: 'int8' }), [
      'config.json: quantization_config holds bitsandbytes nf4 weights; weights int8 cannot be made from them',
    ]);
  });

  const refused: [string, string][] = [
    ['llama-fp4', 'config.json: quantization_config.bnb_4bit_quant_type "fp4" is not supported (only nf4 loads)'],
    ['llama-nf4-bs128', 'model.safetensors: model.layers.0.mlp.down_proj.weight.quant_state.bitsandbytes__nf4: blocksize 128 is not supported (only 64 loads)'],
    ['llama-int8-col32', 'model.safetensors: model.layers.0.mlp.down_proj.weight_format is 1 (col32, a GPU tile layout); only 0 (row) loads'],
  ];
  for (const [dir, msg] of refused) {
    test(`${dir} is refused in one line`, () => assertVeraError(() => loadPretrained(path.join(BNB, dir)), [msg]));
  }

  test('a quant_map that is not NF4 is refused in one line, naming the tensor and the value', () => {
    assertVeraError(() => loadPretrained(path.join(BNB, 'llama-nf4-badmap')), [
      /model\.safetensors: model\.layers\.0\.\w+\.\w+\.weight\.quant_map is not the NF4 code book \(value 3 is -0\.4\d*, NF4's is -0\.39491748809814453\)/,
    ]);
  });

  test('config variants: another quant_method, fp4 by default, quant storage, both or neither bit width', () => withTmp((dir) => {
    const base = JSON.parse(fs.readFileSync(path.join(BNB, 'llama-nf4', 'config.json'), 'utf8'));
    fs.copyFileSync(path.join(BNB, 'llama-nf4', 'model.safetensors'), path.join(dir, 'model.safetensors'));
    const withQc = (qc: object): void => fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...base, quantization_config: qc }));
    withQc({ quant_method: 'gptq', bits: 4 });
    assertVeraError(() => loadPretrained(dir), ['config.json: quantization_config.quant_method "gptq" is not supported (bitsandbytes nf4 and int8 folders load)']);
    withQc({ load_in_4bit: true });
    assertVeraError(() => loadPretrained(dir), ['quantization_config.bnb_4bit_quant_type "fp4" is not supported']);
    withQc({ load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_quant_storage: 'bfloat16' });
    assertVeraError(() => loadPretrained(dir), ['quantization_config.bnb_4bit_quant_storage "bfloat16" is not supported (only uint8 loads)']);
    withQc({ load_in_4bit: true, load_in_8bit: true });
    assertVeraError(() => loadPretrained(dir), ['exactly one of load_in_4bit and load_in_8bit must be true']);
    withQc({ load_in_8bit: true });
    assertVeraError(() => loadPretrained(dir), ['model.layers.0.mlp.down_proj.weight has dtype U8; a bitsandbytes 8-bit weight is I8']);
    withQc({ load_in_4bit: true, bnb_4bit_quant_type: 'nf4' }); // an old config (no quant_method) loads
    assert.equal(new Map(linears(loadPretrained(dir).model)).get('model.layers.1.mlp.up_proj')!.weightFormat, 'nf4');
  }));

  test('vera perplexity reads a bitsandbytes folder as stored; a refusal is one line and a non-zero exit', async () => {
    const ok = await runVera(['inspect', '--model', path.join(BNB, 'llama-int8'), '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    const bad = await runVera(['perplexity', '--model', path.join(BNB, 'llama-fp4'), '--token-ids', '1,2,3']);
    assert.notEqual(bad.code, 0);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    assert.match(bad.stderr, /bnb_4bit_quant_type "fp4" is not supported/);
  });
});
