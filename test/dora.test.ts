// DoRA (LoRA + magnitude) and DVoRA (VeRA + magnitude) against an independent PyTorch
// implementation of PEFT's formula (scripts/fixtures/make_dora_fixtures.py): forward, gradients of
// m, the factors and x, the magnitude's init, merge/unmerge, safe merge, PEFT's key names.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { F, Rng, Tensor, noGrad } from '../src/tensor/index.js';
import { Linear, type Module } from '../src/nn/index.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { VeraError } from '../src/io/errors.js';
import { LoraLinear } from '../src/peft/lora/layer.js';
import { VeraLinear } from '../src/peft/vera/layer.js';
import { PeftModel, getPeftModel, loraConfig, veraConfig } from '../src/peft/index.js';
import { AdamW } from '../src/train/index.js';
import { MLP4 } from './peft-models.js';
import { maxAbsDiff, runVera, throwsVera, withTmp } from './helpers.js';
import { makeAdapter } from './serve-helpers.js';
import { InferenceEngine } from '../src/engine/index.js';
import { loadPretrained, type CausalLM } from '../src/models/index.js';
import { inspectAdapter } from '../src/cli/commands/inspect.js';
import { convertVeraToLora } from '../src/peft/vera/to-lora.js';

const dir = new URL('../../test/fixtures/dora/', import.meta.url).pathname;

function fixture(name: string): { get: (k: string) => Float32Array; shape: (k: string) => number[]; has: (k: string) => boolean } {
  const st = SafetensorsFile.open(join(dir, `${name}.safetensors`));
  return { get: (k) => st.getFloat32(k), shape: (k) => [...st.info(k).shape], has: (k) => st.keys().includes(k) };
}

function close(got: ArrayLike<number>, want: ArrayLike<number>, what: string, tol = 2e-5): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let scale = 1;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  const d = maxAbsDiff(got, want);
  assert.ok(d <= tol * scale, `${what}: max |diff| ${d} (scale ${scale})`);
}

/** The fixture's base layer: Conv1D-style (in, out) storage when w0 is (12, 10). */
function baseLayer(fx: ReturnType<typeof fixture>): Linear {
  const [a, b] = fx.shape('w0');
  const fio = a === 12;
  const [nIn, nOut] = fio ? [a, b] : [b, a];
  const lin = new Linear(nIn, nOut, { bias: fx.has('bias'), fanInFanOut: fio, rng: new Rng(0) });
  lin.weight.copyFrom(fx.get('w0'));
  if (lin.bias) lin.bias.copyFrom(fx.get('bias'));
  lin.requiresGrad_(false);
  return lin;
}

/** An Rng whose draws make F.dropout keep exactly where `keep` is 1 (dropout keeps when random() >= p). */
function maskRng(keep: Float32Array): Rng {
  let i = 0;
  return { random: () => (keep[i++] === 1 ? 0.999 : 0) } as unknown as Rng;
}

function loraCase(name: string): void {
  const fx = fixture(name);
  const base = baseLayer(fx);
  const dropout = fx.has('keep') ? 0.3 : 0;
  const layer = new LoraLinear(base, fx.has('keep') ? maskRng(fx.get('keep')) : null);
  const r = fx.shape('A')[0];
  const scaling = 8 / r;
  if (fx.has('A0')) {
    layer.addAdapter('plain', r, scaling, 0, true, new Rng(1));
    layer.adapter('plain').A.copyFrom(fx.get('A0'));
    layer.adapter('plain').B.copyFrom(fx.get('B0'));
  }
  layer.addAdapter('d', r, scaling, dropout, true, new Rng(1), true);
  const a = layer.adapter('d');
  a.A.copyFrom(fx.get('A'));
  a.B.copyFrom(fx.get('B'));
  // the magnitude's init: ‖W0 + s·B·A‖ per row (PEFT initialises it with whatever A and B hold)
  layer.initMagnitude('d');
  close(a.magnitude!.data(), fx.get('ref.m0'), `${name} m0`);
  a.magnitude!.copyFrom(fx.get('m'));
  layer.activeAdapters = fx.has('A0') ? ['plain', 'd'] : ['d'];
  for (const t of [...layer.trainableTensors('d'), ...(fx.has('A0') ? layer.trainableTensors('plain') : [])]) t.requiresGrad_(true);
  layer.train(dropout > 0);
  const x = Tensor.fromArray(fx.get('x'), fx.shape('x'), true);
  const y = layer.forward(x);
  close(y.data(), fx.get('ref.y'), `${name} forward`);
  F.sum(F.mul(y, Tensor.fromArray(fx.get('grad_out'), fx.shape('grad_out')))).backward();
  close(a.A.grad!.data(), fx.get('ref.grad_A'), `${name} grad A`);
  close(a.B.grad!.data(), fx.get('ref.grad_B'), `${name} grad B`);
  close(a.magnitude!.grad!.data(), fx.get('ref.grad_m'), `${name} grad m`);
  close(x.grad!.data(), fx.get('ref.grad_x'), `${name} grad x`);
  if (fx.has('ref.merged')) checkMerge(layer, 'd', fx, x);
}

function checkMerge(layer: LoraLinear | VeraLinear, name: string, fx: ReturnType<typeof fixture>, x: Tensor): void {
  layer.eval();
  const w0 = layer.base_layer.weight.toFloat32Array();
  const unmerged = noGrad(() => layer.forward(x)).toFloat32Array();
  layer.merge([name]);
  close(layer.base_layer.weight.data(), fx.get('ref.merged'), 'merged weight');
  const merged = noGrad(() => layer.forward(x)).toFloat32Array();
  assert.ok(maxAbsDiff(merged, unmerged) <= 1e-5, `merged == unmerged within 1e-5 (${maxAbsDiff(merged, unmerged)})`);
  layer.unmerge();
  assert.ok(maxAbsDiff(layer.base_layer.weight.data(), w0) <= 1e-6, 'unmerge restores W0 through the norm cached at merge time');
  // safe merge refuses NaN and leaves the weight alone
  const m = layer.magnitude(name)!;
  const keep = m.toFloat32Array();
  const w1 = layer.base_layer.weight.toFloat32Array();
  const bad = keep.slice();
  bad[3] = Number.NaN;
  m.copyFrom(bad);
  assert.throws(() => layer.merge([name], true), (e: unknown) => e instanceof VeraError && /NaN\/Inf/.test(e.message));
  assert.deepEqual(layer.mergedAdapters, []);
  assert.ok(maxAbsDiff(layer.base_layer.weight.data(), w1) === 0);
  m.copyFrom(keep);
}

test('DoRA on a Conv1D layer (GPT-2 layout, bias): forward, gradients, init, merge against PyTorch', () => loraCase('lora-conv1d'));
test('DoRA on a Llama-style Linear (no bias): forward, gradients, init, merge against PyTorch', () => loraCase('lora-linear'));
test('DoRA with lora_dropout > 0 while training: the base term is W0·dropout(x), as PEFT', () => loraCase('lora-dropout'));
test('DoRA after an active plain LoRA adapter: PEFT scales the running result (base + earlier adapters) by m/‖·‖ − 1', () => loraCase('lora-two-active'));

function dvoraCase(name: string): void {
  const fx = fixture(name);
  const base = baseLayer(fx);
  const layer = new VeraLinear(base);
  const A = Tensor.fromArray(fx.get('vera_A'), fx.shape('vera_A'));
  const B = Tensor.fromArray(fx.get('vera_B'), fx.shape('vera_B'));
  const r = fx.shape('vera_A')[0];
  layer.addAdapter('d', { A, B }, { r, dInitial: 0.1, bInitial: 0, dropout: 0, trainD: true, trainB: true, shared: true, useDora: true });
  const a = layer.adapter('d');
  a.lambdaD.copyFrom(fx.get('lambda_d'));
  a.lambdaB.copyFrom(fx.get('lambda_b'));
  layer.initMagnitude('d');
  close(a.magnitude!.data(), fx.get('ref.m0'), `${name} m0`);
  a.magnitude!.copyFrom(fx.get('m'));
  layer.activeAdapters = ['d'];
  for (const t of layer.trainableTensors('d')) t.requiresGrad_(true);
  assert.equal(layer.trainableTensors('d').length, 3);
  const x = Tensor.fromArray(fx.get('x'), fx.shape('x'), true);
  const y = layer.forward(x);
  close(y.data(), fx.get('ref.y'), `${name} forward`);
  F.sum(F.mul(y, Tensor.fromArray(fx.get('grad_out'), fx.shape('grad_out')))).backward();
  close(a.lambdaD.grad!.data(), fx.get('ref.grad_lambda_d'), `${name} grad λd`);
  close(a.lambdaB.grad!.data(), fx.get('ref.grad_lambda_b'), `${name} grad λb`);
  close(a.magnitude!.grad!.data(), fx.get('ref.grad_m'), `${name} grad m`);
  close(x.grad!.data(), fx.get('ref.grad_x'), `${name} grad x`);
  checkMerge(layer, 'd', fx, x);
}

test('DVoRA on a Conv1D layer: forward, gradients of λd, λb, m and x, init, merge against PyTorch', () => dvoraCase('dvora-conv1d'));
test('DVoRA on a Linear layer: the same', () => dvoraCase('dvora-linear'));

test('the DoRA norm is detached and recomputed from the factors as they train', () => {
  const fx = fixture('lora-linear');
  const layer = new LoraLinear(baseLayer(fx));
  layer.addAdapter('d', 4, 2, 0, true, new Rng(1), true);
  const a = layer.adapter('d');
  // B = 0 at the start: m = ‖W0‖ and the layer computes exactly the base
  const w = layer.base_layer.weight.data();
  for (let i = 0; i < 10; i++) {
    let s = 0;
    for (let j = 0; j < 12; j++) s += w[i * 12 + j] ** 2;
    assert.ok(Math.abs(a.magnitude!.data()[i] - Math.sqrt(s)) < 1e-5);
  }
  layer.activeAdapters = ['d'];
  const x = Tensor.fromArray(fx.get('x'), fx.shape('x'));
  assert.ok(maxAbsDiff(noGrad(() => layer.forward(x)).data(), noGrad(() => layer.base_layer.forward(x)).data()) < 1e-5);
  a.B.copyFrom(fx.get('B'));
  const n1 = layer.doraNorm('d').toFloat32Array();
  a.B.copyFrom(new Float32Array(a.B.size).fill(0.5));
  const n2 = layer.doraNorm('d').toFloat32Array();
  assert.ok(maxAbsDiff(n1, n2) > 1e-3, 'the norm follows B');
  assert.equal(layer.doraNorm('d').requiresGrad, false);
});

// ---------------------------------------------------------------- PeftModel level: keys, round trips, training

test('LoRA use_dora: PEFT key names (base_model.model.<path>.lora_magnitude_vector), use_dora true, round trip', () => {
  const model = new MLP4({ bias: true, seed: 3 });
  const peft = getPeftModel(model, loraConfig({ r: 4, loraAlpha: 8, targetModules: ['lin0', 'lin1'], useDora: true, initLoraWeights: false }));
  const names = peft.trainableParameters().map(([n]) => n);
  assert.ok(names.includes('lin0.lora_magnitude_vector.default.weight'), names.join());
  const keys = [...peft.adapterStateDict().keys()].sort();
  assert.deepEqual(keys, [
    'base_model.model.lin0.lora_A.weight', 'base_model.model.lin0.lora_B.weight', 'base_model.model.lin0.lora_magnitude_vector',
    'base_model.model.lin1.lora_A.weight', 'base_model.model.lin1.lora_B.weight', 'base_model.model.lin1.lora_magnitude_vector',
  ]);
  const x = Tensor.fromArray(Float32Array.from({ length: 30 }, (_, i) => Math.sin(i)), [3, 10]);
  // move m off its init so the round trip carries information
  for (const [n, t] of peft.trainableParameters()) if (n.includes('magnitude')) t.copyFrom(t.toFloat32Array().map((v, i) => v * (1 + 0.1 * Math.cos(i))));
  const before = noGrad(() => peft.model.forward(x)).toFloat32Array();
  withTmp((tmp) => {
    peft.saveAdapter(tmp);
    const cfg = JSON.parse(readFileSync(join(tmp, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.use_dora, true);
    assert.equal(cfg.peft_type, 'LORA');
    const loaded = PeftModel.fromPretrained(new MLP4({ bias: true, seed: 3 }), tmp);
    assert.ok(maxAbsDiff(noGrad(() => loaded.model.forward(x)).data(), before) < 1e-6);
    const st = SafetensorsFile.open(join(tmp, 'adapter_model.safetensors'));
    assert.deepEqual(st.keys().sort(), keys);
    // the adapter without use_dora refuses the file's magnitude keys; one with use_dora refuses a file without them
    cfg.use_dora = false;
    writeFileSync(join(tmp, 'adapter_config.json'), JSON.stringify(cfg));
    assert.throws(() => PeftModel.fromPretrained(new MLP4({ bias: true, seed: 3 }), tmp), /lora_magnitude_vector matches no adapted module/);
  });
  // merged == unmerged for the whole model, safe merge
  const unmerged = noGrad(() => peft.model.forward(x)).toFloat32Array();
  peft.merge(undefined, { safe: true });
  assert.ok(maxAbsDiff(noGrad(() => peft.model.forward(x)).data(), unmerged) < 1e-5);
  peft.unmerge();
  assert.ok(maxAbsDiff(noGrad(() => peft.model.forward(x)).data(), unmerged) < 1e-5);
});


test('DVoRA (VeRA use_dora): vera_magnitude_vector keys, Σ out extra trainables, trains on a tiny model, round-trips', () => {
  const model = new MLP4({ bias: false, seed: 5 });
  const peft = getPeftModel(model, veraConfig({ r: 8, targetModules: ['lin0', 'lin1', 'lin2', 'lin3'], useDora: true, projectionPrngKey: 7 }));
  const plain = getPeftModel(new MLP4({ bias: false, seed: 5 }), veraConfig({ r: 8, targetModules: ['lin0', 'lin1', 'lin2', 'lin3'], projectionPrngKey: 7 }));
  assert.equal(peft.getNbTrainableParameters().trainable - plain.getNbTrainableParameters().trainable, 20 + 20 + 20 + 2);
  const keys = [...peft.adapterStateDict().keys()].filter((k) => k.includes('magnitude')).sort();
  assert.deepEqual(keys, ['lin0', 'lin1', 'lin2', 'lin3'].map((l) => `base_model.model.${l}.vera_magnitude_vector`));
  // a small regression task: the loss must fall
  const rng = new Rng(11);
  const x = Tensor.fromArray(rng.fillNormal(new Float32Array(16 * 10)), [16, 10]);
  const targets = Int32Array.from({ length: 16 }, (_, i) => (x.data()[i * 10] > 0 ? 1 : 0)); // learnable from x
  const params = peft.trainableParameters().map(([, t]) => t);
  const lossOf = (): Tensor => F.crossEntropy(peft.model.forward(x), targets);
  const first = noGrad(() => lossOf()).item();
  const opt = new AdamW([{ params, lr: 0.05 }], { weightDecay: 0 });
  for (let step = 0; step < 60; step++) {
    opt.zeroGrad();
    lossOf().backward();
    opt.step();
  }
  const last = noGrad(() => lossOf()).item();
  assert.ok(last < first * 0.9, `loss ${first} → ${last}`);
  const before = noGrad(() => peft.model.forward(x)).toFloat32Array();
  withTmp((tmp) => {
    peft.saveAdapter(tmp, { dtype: 'f32', saveProjection: false }); // the compact form carries m too
    const cfg = JSON.parse(readFileSync(join(tmp, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.use_dora, true);
    assert.equal(cfg.peft_type, 'VERA');
    const loaded = PeftModel.fromPretrained(new MLP4({ bias: false, seed: 5 }), tmp);
    assert.ok(maxAbsDiff(noGrad(() => loaded.model.forward(x)).data(), before) < 1e-6);
  });
  peft.merge(undefined, { safe: true });
  assert.ok(maxAbsDiff(noGrad(() => peft.model.forward(x)).data(), before) < 1e-5, 'merged == unmerged');
  peft.unmerge();
});

// ---------------------------------------------------------------- engine, inspect, vera → lora

const gpt2Dir = new URL('../../test/fixtures/gpt2-tiny', import.meta.url).pathname;

test('the multi-adapter engine refuses DoRA and DVoRA adapters in one line naming use_dora', () => {
  withTmp((tmp) => {
    const dvora = makeAdapter(gpt2Dir, tmp, 'dvora', veraConfig({ targetModules: ['c_attn'], r: 4, useDora: true }), 1);
    const dora = makeAdapter(gpt2Dir, tmp, 'dora', loraConfig({ targetModules: ['c_attn'], r: 2, useDora: true }), 2);
    const engine = new InferenceEngine(loadPretrained(gpt2Dir).model as CausalLM & Module, { vera: { r: 4, targetModules: ['c_attn'] } });
    try {
      throwsVera(() => engine.addAdapter('dvora', dvora), /use_dora is set/);
      throwsVera(() => engine.addAdapter('dora', dora), /use_dora is set/);
    } finally {
      void engine.close();
    }
  });
});

test('vera inspect: DVoRA says PEFT cannot load it; DoRA that PEFT loads it; the magnitude has its column', () => {
  withTmp((tmp) => {
    const dvora = makeAdapter(gpt2Dir, tmp, 'dvora', veraConfig({ targetModules: ['c_attn'], r: 4, useDora: true }), 1);
    const dora = makeAdapter(gpt2Dir, tmp, 'dora', loraConfig({ targetModules: ['c_attn'], r: 2, useDora: true }), 2);
    const a = inspectAdapter(dvora);
    assert.equal(a.useDora, true);
    assert.equal(a.peftLoadable, false);
    assert.ok('magnitude' in a.layers[0].norms);
    assert.equal(a.trainableParams, 2 * (4 + 96 + 96)); // two layers × (r + out + out)
    const b = inspectAdapter(dora);
    assert.equal(b.peftLoadable, true);
    assert.ok('magnitude' in b.layers[0].norms);
  });
});

test('vera convert --to lora: a DVoRA adapter becomes a DoRA one (use_dora, lora_magnitude_vector) computing the same', () => {
  withTmp((tmp) => {
    const dvora = makeAdapter(gpt2Dir, tmp, 'dvora', veraConfig({ targetModules: ['c_attn', 'c_proj'], r: 4, useDora: true }), 3, 0.3);
    const out = join(tmp, 'as-lora');
    convertVeraToLora(dvora, out, gpt2Dir);
    const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.use_dora, true);
    const keys = SafetensorsFile.open(join(out, 'adapter_model.safetensors')).keys();
    assert.ok(keys.includes('base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector'), keys.join());
    const ids = Int32Array.from([1, 5, 9, 2, 7]);
    const run = (dir: string): Float32Array => {
      const peft = PeftModel.fromPretrained(loadPretrained(gpt2Dir).model as CausalLM & Module, dir);
      return noGrad(() => (peft.model as unknown as { forward(ids: Int32Array, shape: number[]): Tensor }).forward(ids, [1, 5])).toFloat32Array();
    };
    assert.ok(maxAbsDiff(run(dvora), run(out)) < 1e-4);
  });
});

test('vera train --use-dora writes a DoRA (lora) or DVoRA (vera) adapter; --method full refuses the flag', async () => {
  await withTmp(async (tmp) => {
    const data = join(tmp, 'd.jsonl');
    writeFileSync(data, '{"input_ids":[1,2,3,4,5,6]}\n{"input_ids":[7,8,9,10,11]}\n');
    for (const method of ['lora', 'vera']) {
      const out = join(tmp, method);
      const r = await runVera(['train', '--model', gpt2Dir, '--data', data, '--method', method, '--r', '4', '--use-dora', '--epochs', '1', '--batch-size', '2', '--out', out, '--quiet']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as { use_dora: boolean }).use_dora, true);
      assert.ok(SafetensorsFile.open(join(out, 'adapter_model.safetensors')).keys().includes(`base_model.model.transformer.h.0.attn.c_attn.${method}_magnitude_vector`));
    }
    const full = await runVera(['train', '--model', gpt2Dir, '--data', data, '--method', 'full', '--use-dora', '--out', join(tmp, 'f'), '--quiet']);
    assert.match(full.stderr, /--use-dora is for --method vera or lora/);
  });
});
