// `vera convert-adapter --to lora`: the LoRA adapter (lora_A = λd·Aₛ, lora_B = λb·Bₛ, lora_alpha = r)
// loaded on the base model gives the VeRA adapter's outputs, on GPT-2 (Conv1D weights) and on a
// Llama-shaped model, with the projections stored, regenerated from the key, or one pair per layer.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Rng, noGrad } from '../src/tensor/index.js';
import { loadPretrained, type CausalLM } from '../src/models/index.js';
import { PeftModel, getPeftModel, loraConfig, veraConfig, type VeraConfigInit } from '../src/peft/index.js';
import { convertVeraToLora, linearShapes, veraToLora } from '../src/peft/vera/to-lora.js';
import { readAdapterFolder } from '../src/peft/peft_model.js';
import type { VeraConfig } from '../src/peft/vera/config.js';
import { maxAbsDiff, runVera, throwsVera, withTmp } from './helpers.js';

const gpt2Dir = new URL('../../test/fixtures/gpt2-tiny', import.meta.url).pathname;
const llamaDir = new URL('../../test/fixtures/decoders/llama-gqa', import.meta.url).pathname;
type Lm = CausalLM & ReturnType<typeof loadPretrained>['model'];
const load = (dir: string): Lm => loadPretrained(dir).model as Lm;

/** A VeRA adapter with non-trivial ("trained") vectors, saved in dir/name. */
function makeVera(modelDir: string, dir: string, name: string, init: VeraConfigInit, seed: number): string {
  const peft = getPeftModel(load(modelDir), veraConfig({ r: 8, ...init }));
  const rng = new Rng(seed);
  for (const [, t] of peft.trainableParameters()) t.copyFrom(rng.fillNormal(new Float32Array(t.size), 0, 0.5));
  const out = join(dir, name);
  peft.saveAdapter(out);
  return out;
}

function logits(modelDir: string, adapter: string, ids: Int32Array): Float32Array {
  const peft = PeftModel.fromPretrained(load(modelDir), adapter);
  return noGrad(() => (peft.model as Lm).forward(ids, [2, ids.length / 2]).toFloat32Array());
}

const cases: [string, string, VeraConfigInit][] = [
  ['gpt2, shared pair stored', gpt2Dir, { targetModules: ['c_attn', 'c_fc', 'attn.c_proj'] }],
  ['gpt2, compact (pair regenerated from the key)', gpt2Dir, { targetModules: ['c_attn', 'mlp.c_proj'], saveProjection: false, projectionPrngKey: 5 }],
  ['gpt2, one pair per layer, regenerated', gpt2Dir, { targetModules: ['c_attn', 'c_fc'], saveProjection: false, uniqueProjections: true, projectionPrngKey: 3 }],
  ['llama, shared pair stored', llamaDir, { targetModules: ['q_proj', 'v_proj', 'down_proj'] }],
  ['llama, compact, all-linear', llamaDir, { targetModules: 'all-linear', saveProjection: false }],
];

for (const [name, modelDir, init] of cases) {
  test(`VeRA → LoRA (${name}): the LoRA adapter gives the VeRA adapter's logits`, (t) => {
    withTmp((dir) => {
      const veraDir = makeVera(modelDir, dir, 'vera', init, 17);
      const loraDir = join(dir, 'lora');
      const report = convertVeraToLora(veraDir, loraDir, modelDir);
      assert.equal(report.inBytes, statSync(join(veraDir, 'adapter_model.safetensors')).size);
      assert.equal(report.outBytes, statSync(join(loraDir, 'adapter_model.safetensors')).size);
      t.diagnostic(`${name}: VeRA ${report.inBytes} B → LoRA ${report.outBytes} B (${report.layers} layers, ${report.loraParams} params)`);

      const vera = JSON.parse(readFileSync(join(veraDir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
      const lora = JSON.parse(readFileSync(join(loraDir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(lora.peft_type, 'LORA');
      assert.equal(lora.r, 8);
      assert.equal(lora.lora_alpha, 8);
      assert.equal(lora.use_rslora, false);
      assert.deepEqual(lora.target_modules, vera.target_modules);
      assert.equal(lora.fan_in_fan_out, vera.fan_in_fan_out);

      const rng = new Rng(2);
      const ids = Int32Array.from({ length: 2 * 12 }, () => rng.int(100));
      const want = logits(modelDir, veraDir, ids);
      const got = logits(modelDir, loraDir, ids);
      const base = noGrad(() => load(modelDir).forward(ids, [2, 12]).toFloat32Array());
      assert.ok(maxAbsDiff(want, base) > 1e-2, 'the adapter changes the outputs');
      const diff = maxAbsDiff(got, want);
      assert.ok(diff < 1e-5, `LoRA vs VeRA logits differ by ${diff}`);
    });
  });
}

test('veraToLora from a loaded model\'s shapes gives the bytes convertVeraToLora writes; F16 output', () => {
  withTmp((dir) => {
    const veraDir = makeVera(gpt2Dir, dir, 'vera', { targetModules: ['c_attn'] }, 4);
    convertVeraToLora(veraDir, join(dir, 'lora'), gpt2Dir);
    const { config, tensors, file } = readAdapterFolder(veraDir);
    const fromModel = veraToLora(config as VeraConfig, tensors, linearShapes(load(gpt2Dir)), file);
    assert.ok(Buffer.from(fromModel.weights).equals(readFileSync(join(dir, 'lora', 'adapter_model.safetensors'))));
    assert.equal(fromModel.config, readFileSync(join(dir, 'lora', 'adapter_config.json'), 'utf8'));
    const half = veraToLora(config as VeraConfig, tensors, linearShapes(load(gpt2Dir)), file, { dtype: 'f16' });
    assert.ok(half.weights.byteLength < 0.6 * fromModel.weights.byteLength);
  });
});

test('vera convert-adapter --to lora: --json byte sizes; refuses LoRA input, a missing --model, projection flags, and --to vera on LoRA', async () => {
  await withTmp(async (dir) => {
    const veraDir = makeVera(gpt2Dir, dir, 'vera', { targetModules: ['c_attn', 'c_fc'], saveProjection: false }, 9);
    const out = join(dir, 'out');
    const ok = await runVera(['convert-adapter', '--adapter', veraDir, '--out', out, '--to', 'lora', '--model', gpt2Dir, '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    const j = JSON.parse(ok.stdout) as { inBytes: number; outBytes: number; layers: number; loraParams: number; method: string };
    assert.equal(j.inBytes, statSync(join(veraDir, 'adapter_model.safetensors')).size);
    assert.equal(j.outBytes, statSync(join(out, 'adapter_model.safetensors')).size);
    assert.equal(j.layers, 4);
    assert.equal(j.loraParams, 2 * 8 * (32 + 96) + 2 * 8 * (32 + 128));
    assert.equal(j.method, 'LORA');

    const loraPeft = getPeftModel(load(gpt2Dir), loraConfig({ targetModules: ['c_attn'], r: 2 }));
    const loraDir = join(dir, 'lora-in');
    loraPeft.saveAdapter(loraDir);
    const refused = async (args: string[], pattern: RegExp): Promise<void> => {
      const target = join(dir, 'refused');
      const r = await runVera(['convert-adapter', '--out', target, ...args]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, pattern);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
      assert.ok(!existsSync(target), 'nothing written');
    };
    await refused(['--adapter', loraDir, '--to', 'lora', '--model', gpt2Dir], /--to lora: .*adapter_config\.json is a LORA adapter, not VeRA/);
    await refused(['--adapter', veraDir, '--to', 'lora'], /--to lora needs --model DIR/);
    await refused(['--adapter', veraDir, '--to', 'lora', '--model', gpt2Dir, '--no-save-projection'], /--no-save-projection does not apply with --to lora/);
    await refused(['--adapter', loraDir, '--to', 'vera'], /--to vera: .* is a LORA adapter; only VeRA → LoRA is an exact conversion/);
    await refused(['--adapter', veraDir, '--to', 'lora', '--model', llamaDir], /is not a linear layer of the base model/);
    await refused(['--adapter', veraDir, '--to', 'dora', '--model', gpt2Dir], /--to.*dora.*(invalid|choices)/i);
  });
});

test('veraToLora refuses a trained bias it cannot carry and a λb that does not fit the layer', () => {
  withTmp((dir) => {
    const veraDir = makeVera(gpt2Dir, dir, 'vera', { targetModules: ['c_attn'] }, 4);
    const { config, tensors, file } = readAdapterFolder(veraDir);
    const shapes = linearShapes(load(gpt2Dir));
    const extra = { ...tensors, has: (k: string) => k === 'base_model.model.transformer.h.0.attn.c_attn.base_layer.bias' || tensors.has(k), keys: () => [...tensors.keys(), 'base_model.model.transformer.h.0.attn.c_attn.base_layer.bias'], shape: (k: string) => (k.endsWith('.bias') ? [96] : tensors.shape(k)), get: (k: string) => (k.endsWith('.bias') ? new Float32Array(96) : tensors.get(k)) };
    throwsVera(() => veraToLora(config as VeraConfig, extra, shapes, file), /tensor base_model\.model\.transformer\.h\.0\.attn\.c_attn\.base_layer\.bias is not a VeRA vector/);
    const narrow = shapes.map((s) => (s.path === 'transformer.h.1.attn.c_attn' ? { ...s, out: 64 } : s));
    throwsVera(() => veraToLora(config as VeraConfig, tensors, narrow, file), /vera_lambda_b has shape \[96\], expected \[64\]/);
  });
});
