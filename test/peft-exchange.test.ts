// PEFT exchange: adapters in PEFT's layout (both ways), VeRA projections regenerated from the key,
// default target modules, all-linear, modules_to_save beside VeRA. References: the PyTorch script
// scripts/fixtures/make_peft_fixtures.py (test/fixtures/peft/).
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tensor, noGrad, Rng } from '../src/tensor/index.js';
import { Linear, Module } from '../src/nn/index.js';
import { SafetensorsFile, serializeSafetensors } from '../src/io/safetensors.js';
import { VeraError } from '../src/io/errors.js';
import { CNN, GPT2LMHeadModel, MLP, loadPretrained } from '../src/models/index.js';
import {
  ADAPTER_CONFIG, ADAPTER_WEIGHTS, PeftModel, convertAdapter, generateProjections, getPeftModel, kaimingBound, loraConfig, parsePeftConfig, veraConfig,
} from '../src/peft/index.js';
import { main } from '../src/cli/main.js';
import { maxAbsDiff, withTmp } from './helpers.js';

const gpt2Config = (): GPT2LMHeadModel['config'] => (loadPretrained(join(fixtures, 'gpt2-tiny')).model as GPT2LMHeadModel).config;
const fixtures = new URL('../../test/fixtures/', import.meta.url).pathname;
const peftDir = join(fixtures, 'peft');
const gpt2Dir = join(fixtures, 'gpt2-tiny');

function bitEqual(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) assert.fail(`${what}: element ${i} is ${a[i]}, PyTorch has ${b[i]}`);
}

test('the kaiming bound is the float32 PEFT passes to uniform_, for every fan_in up to 8192', () => {
  const bounds = SafetensorsFile.open(join(peftDir, 'projections.safetensors')).getFloat32('bounds');
  for (let fan = 1; fan <= bounds.length; fan++) assert.equal(kaimingBound(fan), bounds[fan - 1], `fan_in ${fan}`);
});

test('the shared VeRA pair is bit-exact with PyTorch for several keys, ranks and sizes', () => {
  const st = SafetensorsFile.open(join(peftDir, 'projections.safetensors'));
  const cases = JSON.parse(readFileSync(join(peftDir, 'projections.json'), 'utf8')) as { name: string; key_text: string; r: number; max_in: number; max_out: number; sampled: boolean }[];
  assert.ok(cases.length >= 14);
  assert.ok(cases.some((c) => c.key_text.startsWith('-')), 'negative keys, as torch takes them');
  for (const c of cases) {
    const key = BigInt(c.key_text);
    const { A, B } = generateProjections(c.r, c.max_in, c.max_out, Number.isSafeInteger(Number(key)) ? Number(key) : key);
    for (const [which, m] of [['A', A], ['B', B]] as const) {
      const data = m.data();
      if (!c.sampled) {
        bitEqual(data, st.getFloat32(`${c.name}.${which}`), `${c.name}.${which}`);
        continue;
      }
      bitEqual(data.subarray(0, 64), st.getFloat32(`${c.name}.${which}.head`), `${c.name}.${which} head`);
      bitEqual(data.subarray(data.length - 64), st.getFloat32(`${c.name}.${which}.tail`), `${c.name}.${which} tail`);
      const sum = data.reduce((a, v) => a + v, 0);
      assert.ok(Math.abs(sum - st.getFloat32(`${c.name}.${which}.sum`)[0]) < 1e-3, `${c.name}.${which} sum`);
    }
  }
});

const veraCases = readdirSync(peftDir).filter((d) => d.startsWith('gpt2-vera-'));

for (const name of veraCases) {
  test(`a PEFT-layout VeRA adapter without projections merges into GPT-2 as PyTorch does (${name})`, () => {
    const dir = join(peftDir, name);
    const loaded = loadPretrained(gpt2Dir);
    const before = new Map([...loaded.model.namedParameters()].map(([p, t]) => [p, t.data().slice()]));
    const peft = PeftModel.fromPretrained(loaded.model, dir);
    const merged = peft.mergeAndUnload({ safe: true });
    const expected = SafetensorsFile.open(join(dir, 'expected.safetensors'));
    let changed = 0;
    for (const [p, t] of merged.namedParameters()) {
      const data = t.data();
      if (expected.has(p)) {
        const err = maxAbsDiff(data, expected.getFloat32(p));
        assert.ok(err <= 1e-6, `${name}: ${p} differs from PyTorch's merge by ${err}`);
        changed++;
      } else bitEqual(data, before.get(p)!, `${name}: untouched ${p}`);
    }
    assert.equal(changed, expected.keys().length, 'every expected tensor is a model parameter');
  });
}

test('vera merge (CLI) writes the merged checkpoint PyTorch computes for a PEFT adapter without projections', async () => {
  const dir = join(peftDir, 'gpt2-vera-key42-r16-mixed');
  const tmp = mkdtempSync(join(tmpdir(), 'vera-test-'));
  try {
    const out = join(tmp, 'merged');
    assert.equal(await main(['merge', '--model', gpt2Dir, '--adapter', dir, '--out', out, '--quiet']), 0);
    const got = SafetensorsFile.open(join(out, 'model.safetensors'));
    const expected = SafetensorsFile.open(join(dir, 'expected.safetensors'));
    for (const k of expected.keys()) assert.ok(maxAbsDiff(got.getFloat32(k), expected.getFloat32(k)) <= 1e-6, k);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('a LoRA adapter from a newer PEFT (F16 weights, rslora, unknown fields) loads and merges as PyTorch does', () => {
  const dir = join(peftDir, 'gpt2-lora-rslora-f16');
  const config = parsePeftConfig(JSON.parse(readFileSync(join(dir, ADAPTER_CONFIG), 'utf8')), 'adapter_config.json');
  assert.deepEqual([...(config.ignoredFields ?? [])].sort(), ['some_future_option']);
  const loaded = loadPretrained(gpt2Dir);
  const merged = PeftModel.fromPretrained(loaded.model, dir).mergeAndUnload();
  const expected = SafetensorsFile.open(join(dir, 'expected.safetensors'));
  for (const k of expected.keys()) {
    const p = merged.namedParameters().find(([n]) => n === k)![1];
    assert.ok(maxAbsDiff(p.data(), expected.getFloat32(k)) <= 1e-6, k);
  }
});

test('fields that change what LoRA weights mean are refused in one line, naming the field', () => {
  const json = { peft_type: 'LORA', r: 4, target_modules: ['c_attn'], lora_bias: true };
  assert.throws(() => parsePeftConfig(json, 'x/adapter_config.json'), (e: Error) => e instanceof VeraError && /^x\/adapter_config\.json: field "lora_bias" is set \(true\)/.test(e.message) && !e.message.includes('\n'));
  // use_dora is DoRA, supported since issue 14
  assert.equal((parsePeftConfig({ ...json, lora_bias: false, use_dora: true }, 'f') as { useDora?: boolean }).useDora, true);
  // at their defaults they are fine
  assert.doesNotThrow(() => parsePeftConfig({ ...json, lora_bias: false, rank_pattern: {} }, 'f'));
});

function mlpLogits(model: Module, input: Float32Array): Float32Array {
  return noGrad(() => (model as MLP).forward(Tensor.fromArray(input, [5, 8])).data().slice());
}

test('a classifier trained beside VeRA (modules_to_save, SEQ_CLS) loads from PEFT layout and round-trips', () => {
  const adapterDir = join(peftDir, 'mlp-vera-classifier');
  const expected = SafetensorsFile.open(join(adapterDir, 'expected.safetensors'));
  const input = expected.getFloat32('input');
  const peft = PeftModel.fromPretrained(loadPretrained(join(peftDir, 'mlp-base')).model, adapterDir);
  assert.ok(maxAbsDiff(mlpLogits(peft.model, input), expected.getFloat32('logits')) <= 1e-5);
  withTmp((tmp) => {
    peft.saveAdapter(tmp);
    const saved = SafetensorsFile.open(join(tmp, ADAPTER_WEIGHTS));
    const original = SafetensorsFile.open(join(adapterDir, ADAPTER_WEIGHTS));
    assert.deepEqual(saved.keys().sort(), original.keys().sort(), 'the same keys as PEFT writes');
    const cfg = JSON.parse(readFileSync(join(tmp, ADAPTER_CONFIG), 'utf8'));
    assert.equal(cfg.task_type, 'SEQ_CLS');
    assert.deepEqual(cfg.modules_to_save, ['layers.2', 'classifier', 'score']);
    assert.equal(cfg.save_projection, false);
    const again = PeftModel.fromPretrained(loadPretrained(join(peftDir, 'mlp-base')).model, tmp);
    assert.ok(maxAbsDiff(mlpLogits(again.model, input), expected.getFloat32('logits')) <= 1e-5);
  });
});

test('modules_to_save tensors under a PeftModel state-dict key (modules_to_save.default) load too', () => {
  const adapterDir = join(peftDir, 'mlp-vera-classifier');
  const expected = SafetensorsFile.open(join(adapterDir, 'expected.safetensors'));
  withTmp((tmp) => {
    const peft = PeftModel.fromPretrained(loadPretrained(join(peftDir, 'mlp-base')).model, adapterDir);
    peft.saveAdapter(tmp);
    // rename the head's keys as torch's state_dict of a PeftModel names them
    const st = SafetensorsFile.open(join(tmp, ADAPTER_WEIGHTS));
    const renamed: Record<string, { data: Float32Array; shape: number[]; dtype: 'F32' }> = {};
    for (const k of st.keys()) renamed[k.replace('layers.2.', 'layers.2.modules_to_save.default.')] = { data: st.getFloat32(k), shape: [...st.info(k).shape], dtype: 'F32' };
    writeFileSync(join(tmp, ADAPTER_WEIGHTS), serializeSafetensors(renamed));
    const again = PeftModel.fromPretrained(loadPretrained(join(peftDir, 'mlp-base')).model, tmp);
    assert.ok(maxAbsDiff(mlpLogits(again.model, expected.getFloat32('input')), expected.getFloat32('logits')) <= 1e-5);
  });
});

test('compact form: F16 vectors plus the key, regenerated on load; bytes as counted', () => {
  const model = loadPretrained(gpt2Dir).model;
  const peft = getPeftModel(model, veraConfig({ r: 8, saveProjection: false, projectionPrngKey: 5 }));
  for (const [, t] of peft.trainableParameters()) t.copyFrom(new Rng(1).fillUniform(new Float32Array(t.size), -1, 1));
  const x = new Int32Array([1, 2, 3, 4]);
  const logits = noGrad(() => (peft.model as GPT2LMHeadModel).forward(x, [1, 4]).data().slice());
  withTmp((tmp) => {
    peft.saveAdapter(tmp, { dtype: 'F16' });
    const st = SafetensorsFile.open(join(tmp, ADAPTER_WEIGHTS));
    assert.ok(st.keys().every((k) => /vera_lambda_[bd]$/.test(k) && st.info(k).dtype === 'F16'));
    // λb (96) + λd (8) per c_attn, 2 layers, 2 bytes each: the data; the rest is the header
    const dataBytes = 2 * 2 * (96 + 8);
    const size = statSync(join(tmp, ADAPTER_WEIGHTS)).size;
    assert.ok(size > dataBytes && size < dataBytes + 1024, `file ${size} bytes`);
    const again = PeftModel.fromPretrained(loadPretrained(gpt2Dir).model, tmp);
    const got = noGrad(() => (again.model as GPT2LMHeadModel).forward(x, [1, 4]).data());
    assert.ok(maxAbsDiff(got, logits) < 1e-2, 'F16 rounding of the vectors only');
  });
});

// ---------------------------------------------------------------- which layers a config targets

const adapted = (peft: PeftModel): string[] => [...peft.model.namedModules()].filter(([, m]) => m.constructor.name.endsWith('Linear') && m.constructor.name !== 'Linear').map(([p]) => p);

test('no target_modules: PEFT\'s default for the model_type (gpt2: c_attn), saved as a list', () => {
  const peft = getPeftModel(new GPT2LMHeadModel(gpt2Config()), veraConfig({ r: 4 }));
  assert.deepEqual(adapted(peft), ['transformer.h.0.attn.c_attn', 'transformer.h.1.attn.c_attn']);
  assert.deepEqual(peft.peftConfig.get('default')!.targetModules, ['c_attn']);
  assert.equal(peft.peftConfig.get('default')!.fanInFanOut, true, 'PEFT sets fan_in_fan_out for Conv1D');
  const lora = getPeftModel(new GPT2LMHeadModel(gpt2Config()), loraConfig({ r: 2 }));
  assert.deepEqual(adapted(lora), ['transformer.h.0.attn.c_attn', 'transformer.h.1.attn.c_attn']);
});

test('no target_modules for a model_type without a default: one line asking for --target-modules', () => {
  for (const model of [new CNN({ numClasses: 10 }), new MLP({ inputSize: 4, hiddenSizes: [8], numClasses: 2 })]) {
    assert.throws(() => getPeftModel(model, veraConfig({ r: 2 })), (e: Error) => e instanceof VeraError && /no default target modules for model_type "vera_(cnn|mlp)"; give them with --target-modules/.test(e.message) && !e.message.includes('\n'));
  }
});

test('all-linear: every linear layer but the output layer (gpt2: not lm_head; image classifiers: not the last)', () => {
  const gpt2 = getPeftModel(new GPT2LMHeadModel(gpt2Config()), veraConfig({ r: 4, targetModules: 'all-linear' }));
  const names = adapted(gpt2);
  assert.equal(names.length, 8);
  assert.ok(!names.includes('lm_head'));
  assert.deepEqual(gpt2.peftConfig.get('default')!.targetModules, names, 'saved as the list of paths, as PEFT does');
  assert.deepEqual(adapted(getPeftModel(new CNN({ numClasses: 10 }), loraConfig({ r: 2, targetModules: 'ALL-LINEAR' }))), ['fc1', 'fc2', 'fc3', 'fc4']);
  assert.deepEqual(adapted(getPeftModel(new MLP({ inputSize: 4, hiddenSizes: [8, 8], numClasses: 2 }), veraConfig({ r: 2, targetModules: 'all-linear' }))), ['layers.0', 'layers.1']);
});

class Encoder extends Module {
  readonly dense = this.addModule('dense', new Linear(4, 4));
  readonly classifier = this.addModule('classifier', new Linear(4, 2));
}

test('all-linear with task_type SEQ_CLS leaves the classifier out and trains it as modules_to_save (a model without output embeddings)', () => {
  const plain = getPeftModel(new Encoder(), veraConfig({ r: 2, targetModules: 'all-linear' }));
  assert.deepEqual(adapted(plain), ['dense', 'classifier'], 'PEFT adapts a custom model\'s head too');
  const cls = getPeftModel(new Encoder(), veraConfig({ r: 2, targetModules: 'all-linear', taskType: 'SEQ_CLS' }));
  assert.deepEqual(adapted(cls), ['dense']);
  assert.ok(cls.trainableParameters().some(([p]) => p === 'classifier.weight'));
});

test('exclude_modules (LoRA; not a VeraConfig field, as in PEFT) and modules_to_save keep layers out of the targets', () => {
  const peft = getPeftModel(new GPT2LMHeadModel(gpt2Config()), loraConfig({ r: 4, targetModules: ['c_attn', 'c_proj'], excludeModules: ['h.1.attn.c_proj', 'mlp.c_proj'] }));
  assert.deepEqual(adapted(peft), ['transformer.h.0.attn.c_attn', 'transformer.h.0.attn.c_proj', 'transformer.h.1.attn.c_attn']);
  assert.throws(() => veraConfig({ r: 4, targetModules: ['c_attn'], excludeModules: ['h.1.attn.c_attn'] }), /exclude_modules is not a VeraConfig field/);
  const json = JSON.parse(readFileSync(join(peftDir, 'gpt2-vera-key0-r4-cattn', ADAPTER_CONFIG), 'utf8'));
  const parsed = parsePeftConfig({ ...json, exclude_modules: '.*h\\.0.*' }, 'f');
  assert.equal(parsed.excludeModules, null, 'PEFT drops the unknown field from a VeRA config');
  assert.ok(parsed.ignoredFields?.includes('exclude_modules'));
  const lora = parsePeftConfig({ ...json, peft_type: 'LORA', lora_alpha: 8, save_projection: undefined, exclude_modules: '.*h\\.0.*' }, 'f');
  assert.equal(lora.excludeModules, '.*h\\.0.*');
  const mlp = getPeftModel(new MLP({ inputSize: 4, hiddenSizes: [8], numClasses: 2 }), veraConfig({ r: 2, targetModules: ['layers.0', 'layers.1'], modulesToSave: ['layers.1'] }));
  assert.deepEqual(adapted(mlp), ['layers.0']);
});

test('adapter_config.json fields survive a load/save round trip (revision, task_type, layers, bias)', () => {
  const dir = join(peftDir, 'gpt2-vera-key1-r2-layers');
  const json = JSON.parse(readFileSync(join(dir, ADAPTER_CONFIG), 'utf8'));
  const peft = PeftModel.fromPretrained(loadPretrained(gpt2Dir).model, dir);
  peft.peftConfig.set('default', { ...peft.peftConfig.get('default')!, revision: 'v1.0' });
  withTmp((tmp) => {
    peft.saveAdapter(tmp);
    const out = JSON.parse(readFileSync(join(tmp, ADAPTER_CONFIG), 'utf8'));
    for (const k of ['task_type', 'bias', 'layers_to_transform', 'layers_pattern', 'projection_prng_key', 'r', 'save_projection', 'target_modules', 'base_model_name_or_path']) {
      assert.deepEqual(out[k], json[k], k);
    }
    assert.equal(out.revision, 'v1.0');
    assert.equal(out.fan_in_fan_out, true);
  });
});

test('vera convert-adapter: compact F16 form without the base model, and back with it; projections checked against the key', async () => {
  const src = join(fixtures, 'gpt2-tiny-vera');
  const tmp = mkdtempSync(join(tmpdir(), 'vera-test-'));
  try {
    const compact = join(tmp, 'compact');
    assert.equal(await main(['convert-adapter', '--adapter', src, '--out', compact, '--dtype', 'f16', '--no-save-projection', '--json']), 0);
    const st = SafetensorsFile.open(join(compact, ADAPTER_WEIGHTS));
    assert.ok(!st.has('base_model.vera_A') && st.keys().every((k) => st.info(k).dtype === 'F16'));
    assert.equal(JSON.parse(readFileSync(join(compact, ADAPTER_CONFIG), 'utf8')).save_projection, false);
    // without --dtype the tensors keep their stored dtype: compacting an F16 adapter stays F16
    const compactAgain = join(tmp, 'compact-again');
    assert.equal(await main(['convert-adapter', '--adapter', compact, '--out', compactAgain, '--no-save-projection', '--json']), 0);
    const st2 = SafetensorsFile.open(join(compactAgain, ADAPTER_WEIGHTS));
    assert.ok(st2.keys().every((k) => st2.info(k).dtype === 'F16'));
    // the compact adapter merges like the original, up to F16 rounding of the vectors
    const a = PeftModel.fromPretrained(loadPretrained(gpt2Dir).model, src).mergeAndUnload();
    const b = PeftModel.fromPretrained(loadPretrained(gpt2Dir).model, compact).mergeAndUnload();
    const bp = new Map(b.namedParameters());
    for (const [p, t] of a.namedParameters()) assert.ok(maxAbsDiff(t.data(), bp.get(p)!.data()) < 1e-3, p);
    // back to stored projections needs the model; they come back bit for bit
    const full = join(tmp, 'full');
    assert.equal(await main(['convert-adapter', '--adapter', compact, '--out', full, '--save-projection', '--model', gpt2Dir, '--json']), 0);
    const orig = SafetensorsFile.open(join(src, ADAPTER_WEIGHTS));
    const again = SafetensorsFile.open(join(full, ADAPTER_WEIGHTS));
    bitEqual(again.getFloat32('base_model.vera_A'), orig.getFloat32('base_model.vera_A'), 'vera_A');
    bitEqual(again.getFloat32('base_model.vera_B'), orig.getFloat32('base_model.vera_B'), 'vera_B');
    // projections the key does not regenerate must stay in the file
    const tampered: Record<string, { data: Float32Array; shape: number[] }> = {};
    for (const k of orig.keys()) tampered[k] = { data: orig.getFloat32(k), shape: [...orig.info(k).shape] };
    tampered['base_model.vera_A'].data[3] += 1e-3;
    const bad = join(tmp, 'bad');
    mkdirSync(bad);
    writeFileSync(join(bad, ADAPTER_CONFIG), readFileSync(join(src, ADAPTER_CONFIG)));
    writeFileSync(join(bad, ADAPTER_WEIGHTS), serializeSafetensors(tampered));
    assert.throws(() => convertAdapter(bad, join(tmp, 'x'), { saveProjection: false }), /not what projection_prng_key 7 regenerates/);
    const peft = PeftModel.fromPretrained(loadPretrained(gpt2Dir).model, bad);
    assert.throws(() => peft.saveAdapter(join(tmp, 'y'), { saveProjection: false }), /vera_A \(shape \[16, 128\], shared by the model's adapters\) is not what projection_prng_key 7 regenerates/);
    assert.ok(!existsSync(join(tmp, 'x')) && !existsSync(join(tmp, 'y')), 'no partial output');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('a LoRA adapter whose trained biases are missing from the file is refused (only PEFT\'s VeRA saves none)', () =>
  withTmp((tmp) => {
    const saved = join(tmp, 'lora');
    getPeftModel(loadPretrained(gpt2Dir).model, loraConfig({ r: 2, targetModules: ['c_attn'], bias: 'all' })).saveAdapter(saved);
    const st = SafetensorsFile.open(join(saved, ADAPTER_WEIGHTS));
    const biasKeys = st.keys().filter((k) => k.endsWith('.bias'));
    assert.ok(biasKeys.length > 0, 'bias "all" saves biases');
    const kept: Record<string, { data: Float32Array; shape: number[] }> = {};
    for (const k of st.keys()) if (!biasKeys.includes(k)) kept[k] = { data: st.getFloat32(k), shape: [...st.info(k).shape] };
    writeFileSync(join(saved, ADAPTER_WEIGHTS), serializeSafetensors(kept));
    assert.throws(() => PeftModel.fromPretrained(loadPretrained(gpt2Dir).model, saved), (e: unknown) => e instanceof VeraError && /missing tensor .*\.bias/.test(e.message));
  }));
