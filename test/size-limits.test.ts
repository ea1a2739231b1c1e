// Sizes a file declares are checked against what the files really hold (or the memory there is)
// before anything is allocated: config.json sizes against the checkpoint, an adapter's r against
// its stored λd, declared tensor sizes against memory. Each refusal is one line, fast and small.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, ftruncateSync, mkdirSync, openSync, readFileSync, readdirSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

import '../src/backends/index.js';
import { checkModelFitsMemory, loadPretrained, modelFromConfig, GPT2LMHeadModel } from '../src/models/index.js';
import { PeftModel, getPeftModel, veraConfig, checkAdapterFitsMemory } from '../src/peft/index.js';
import { SafetensorsFile, loadCheckpointTensors } from '../src/io/safetensors.js';
import { runVera, throwsVera, withTmp } from './helpers.js';

const fixtures = new URL('../../test/fixtures/', import.meta.url).pathname;

function copyDir(from: string, to: string): void {
  for (const f of readdirSync(from)) copyFileSync(join(from, f), join(to, f));
}

function patchJson(file: string, patch: Record<string, unknown>): void {
  writeFileSync(file, JSON.stringify({ ...(JSON.parse(readFileSync(file, 'utf8')) as object), ...patch }));
}

/** A safetensors file whose header declares `shape` (F32) over a sparse data section: no disk or memory used. */
function sparseSafetensors(file: string, key: string, shape: number[]): void {
  const bytes = shape.reduce((a, b) => a * b, 1) * 4;
  const header = Buffer.from(JSON.stringify({ [key]: { dtype: 'F32', shape, data_offsets: [0, bytes] } }));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  const fd = openSync(file, 'w');
  try {
    writeSync(fd, Buffer.concat([len, header]));
    ftruncateSync(fd, 8 + header.length + bytes);
  } finally {
    closeSync(fd);
  }
}

for (const [field, value] of [['n_layer', 5000], ['vocab_size', 1e12], ['n_embd', 1e6]] as const) {
  test(`config.json ${field}: ${value} is refused against the checkpoint before allocating`, () => {
    withTmp((dir) => {
      copyDir(join(fixtures, 'gpt2-tiny'), dir);
      patchJson(join(dir, 'config.json'), { [field]: value });
      const rss = process.memoryUsage().rss;
      const t0 = Date.now();
      throwsVera(() => loadPretrained(dir), /config\.json: the sizes it gives .* need more than \d+ values, its checkpoint holds \d+/);
      assert.ok(Date.now() - t0 < 5000, 'refused within seconds');
      assert.ok(process.memoryUsage().rss - rss < 512 * 2 ** 20, 'without allocating the model');
    });
  });
}

test('without a checkpoint, a config is bounded by the memory available', () => {
  const json = JSON.parse(readFileSync(join(fixtures, 'gpt2-tiny', 'config.json'), 'utf8')) as Record<string, unknown>;
  throwsVera(() => modelFromConfig({ ...json, vocab_size: 1e12 }, 'config.json', { init: false }), /config\.json: .*more than the [\d.]+ GB of memory available/);
  assert.ok(modelFromConfig(json, 'config.json', { init: false }) instanceof GPT2LMHeadModel);
  // given the checkpoint about to be loaded, its sizes are the bound
  const checkpoint = loadCheckpointTensors(join(fixtures, 'gpt2-tiny'));
  throwsVera(() => modelFromConfig({ ...json, n_layer: 5000 }, 'config.json', { init: false, checkpoint }), /config\.json: .* its checkpoint holds \d+/);
  // past any real model's depth a layer count is refused by the config reader itself
  throwsVera(() => modelFromConfig({ ...json, n_layer: 1e9 }, 'config.json', { init: false, checkpoint }), /config\.json: field "n_layer" is 1000000000, more than 10000/);
  assert.ok(modelFromConfig(json, 'config.json', { init: false, checkpoint }) instanceof GPT2LMHeadModel);
});

test('a model larger than the memory available is refused with both figures', () => {
  throwsVera(() => checkModelFitsMemory('big', 3e9, 8 * 2 ** 30), /big: the model needs about 11\.2 GB in memory \(3000000000 float32 values\), more than the 8\.0 GB available/);
  checkModelFitsMemory('small', 1e6, 8 * 2 ** 30);
  // a checkpoint declaring more than memory (a sparse file) is refused from its headers
  withTmp((dir) => {
    copyFileSync(join(fixtures, 'gpt2-tiny', 'config.json'), join(dir, 'config.json'));
    sparseSafetensors(join(dir, 'model.safetensors'), 'transformer.wte.weight', [1e6, 1e6]);
    throwsVera(() => loadPretrained(dir), /the model needs about 3725\.3 GB in memory .* more than the [\d.]+ GB available/);
  });
});

test('a VeRA adapter whose r contradicts its stored λd is refused before projections are generated', () => {
  withTmp((dir) => {
    copyDir(join(fixtures, 'gpt2-tiny-vera'), dir);
    patchJson(join(dir, 'adapter_config.json'), { r: 10_000_000 });
    const { model } = loadPretrained(join(fixtures, 'gpt2-tiny'));
    const rss = process.memoryUsage().rss;
    const t0 = Date.now();
    throwsVera(() => PeftModel.fromPretrained(model, dir), /vera_lambda_d has shape \[16\], but adapter_config\.json says r = 10000000/);
    assert.ok(Date.now() - t0 < 5000);
    assert.ok(process.memoryUsage().rss - rss < 512 * 2 ** 20);
    // the model is left as it was, and a second adapter through loadAdapter is checked the same way
    const peft = PeftModel.fromPretrained(model, join(fixtures, 'gpt2-tiny-vera'));
    throwsVera(() => peft.loadAdapter(dir, { adapterName: 'other' }), /but adapter_config\.json says r = 10000000/);
  });
});

test('a LoRA adapter whose r contradicts its stored lora_A is refused before A and B are allocated', () => {
  withTmp((dir) => {
    copyDir(join(fixtures, 'gpt2-tiny-lora'), dir);
    patchJson(join(dir, 'adapter_config.json'), { r: 10_000_000 });
    const { model } = loadPretrained(join(fixtures, 'gpt2-tiny'));
    throwsVera(() => PeftModel.fromPretrained(model, dir), /lora_[AB]\.weight has shape \[\d+, \d+\], but adapter_config\.json says r = 10000000/);
  });
});

test('getPeftModel with an r no memory holds is refused in one line', () => {
  const { model } = loadPretrained(join(fixtures, 'gpt2-tiny'));
  throwsVera(() => getPeftModel(model, veraConfig({ r: 1e9, targetModules: ['c_attn'] })), /adapter 'default': .* needs \d+ float32 values, more than the [\d.]+ GB of memory available/);
});

test('adapter files declaring a tensor no buffer holds are refused from the header (library and CLI)', async () => {
  const key = 'base_model.model.transformer.h.0.attn.c_attn.vera_lambda_d';
  await withTmp(async (root) => {
    const dir = join(root, 'adapter');
    mkdirSync(dir);
    copyFileSync(join(fixtures, 'gpt2-tiny-vera', 'adapter_config.json'), join(dir, 'adapter_config.json'));
    patchJson(join(dir, 'adapter_config.json'), { r: 1e12 });
    const weights = join(dir, 'adapter_model.safetensors');
    sparseSafetensors(weights, key, [1e12]);
    throwsVera(() => checkAdapterFitsMemory(SafetensorsFile.open(weights), weights), /declares 1000000000000 values .* more than one buffer can hold/);
    for (const args of [['inspect', '--adapter', dir], ['convert-adapter', '--adapter', dir, '--out', join(root, 'out'), '--dtype', 'f16']]) {
      const r = await runVera(args);
      assert.notEqual(r.code, 0, `${args[0]} exit code`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${args[0]}: one line, got ${r.stderr}`);
      assert.match(lines[0], /more than one buffer can hold/);
      assert.doesNotMatch(r.stderr, /internal error|RangeError/);
    }
  });
});
