// savePretrained carries the model folder's companion files (tokenizer, generation_config.json):
// a model loaded from a folder is saved with them by default, in the same atomic step as the weights.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { AutoModelForCausalLM, COMPANION_FILES, getPeftModel, modelConfigJson, pretrainedDir, readCompanionFiles, savePretrained, veraConfig } from '../src/index.js';
import { AutoTokenizer } from '../src/data/auto-tokenizer.js';
import { noGrad } from '../src/tensor/index.js';
import { withTmp } from './helpers.js';

const LLAMA = fileURLToPath(new URL('../../data/fortune-llama', import.meta.url));
const COMPANIONS = COMPANION_FILES.filter((f) => fs.existsSync(path.join(LLAMA, f))).sort();

const ls = (dir: string): string[] => fs.readdirSync(dir).sort();

test('fortune-llama has companion files to copy', () => {
  assert.deepEqual(COMPANIONS, ['generation_config.json', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']);
});

test('a model loaded from a folder is saved with its tokenizer files, byte for byte; a merged one too', async () => {
  await withTmp(async (dir) => {
    const model = AutoModelForCausalLM.fromPretrained(LLAMA);
    assert.equal(pretrainedDir(model), LLAMA);
    const out = path.join(dir, 'plain');
    savePretrained(out, model, modelConfigJson(model));
    assert.deepEqual(ls(out), [...COMPANIONS, 'config.json', 'model.safetensors'].sort());
    for (const f of COMPANIONS) assert.deepEqual(fs.readFileSync(path.join(out, f)), fs.readFileSync(path.join(LLAMA, f)), f);

    // after an adapter is merged the model is the same object: still known by its folder
    const peft = getPeftModel(model, veraConfig({ r: 8, targetModules: ['q_proj'] }));
    const merged = peft.mergeAndUnload();
    assert.equal(pretrainedDir(merged), LLAMA);
    const mergedOut = path.join(dir, 'merged');
    savePretrained(mergedOut, merged, modelConfigJson(merged));
    assert.deepEqual(ls(mergedOut), ls(out));

    // the saved folder loads as a model with a tokenizer, and is itself the source of what is loaded from it
    const tokenizer = await AutoTokenizer.fromPretrained(mergedOut);
    const original = await AutoTokenizer.fromPretrained(LLAMA);
    assert.deepEqual(tokenizer.encode('Tao is the way.'), original.encode('Tao is the way.'));
    const again = AutoModelForCausalLM.fromPretrained(mergedOut);
    assert.equal(pretrainedDir(again), mergedOut);
    const ids = Int32Array.from(original.encode('Tao is the way.'));
    const a = noGrad(() => merged.forward(ids, [1, ids.length])).toFloat32Array();
    const b = noGrad(() => again.forward(ids, [1, ids.length])).toFloat32Array();
    assert.deepEqual(b, a); // F32, no rounding
  });
});

test('extraFiles chooses: {} writes none, another folder\'s files are written instead', () => {
  withTmp((dir) => {
    const model = AutoModelForCausalLM.fromPretrained(LLAMA);
    const none = path.join(dir, 'none');
    savePretrained(none, model, modelConfigJson(model), undefined, {});
    assert.deepEqual(ls(none), ['config.json', 'model.safetensors']);

    const other = path.join(dir, 'other');
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, 'tokenizer.json'), '{"other": true}');
    const chosen = path.join(dir, 'chosen');
    savePretrained(chosen, model, modelConfigJson(model), undefined, readCompanionFiles(other));
    assert.deepEqual(ls(chosen), ['config.json', 'model.safetensors', 'tokenizer.json']);
    assert.equal(fs.readFileSync(path.join(chosen, 'tokenizer.json'), 'utf8'), '{"other": true}');
  });
});

test('a model built from a config has no folder: config.json and model.safetensors only', () => {
  withTmp((dir) => {
    const config = JSON.parse(fs.readFileSync(path.join(LLAMA, 'config.json'), 'utf8')) as Record<string, unknown>;
    const model = AutoModelForCausalLM.fromConfig({ ...config, num_hidden_layers: 1 });
    assert.equal(pretrainedDir(model), undefined);
    savePretrained(path.join(dir, 'm'), model, modelConfigJson(model));
    assert.deepEqual(ls(path.join(dir, 'm')), ['config.json', 'model.safetensors']);
  });
});

test('replacing a folder replaces its tokenizer files with the weights, in one swap', () => {
  withTmp((dir) => {
    const out = path.join(dir, 'm');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'tokenizer.json'), 'stale');
    fs.writeFileSync(path.join(out, 'vocab.txt'), 'stale');
    const model = AutoModelForCausalLM.fromPretrained(LLAMA);
    savePretrained(out, model, modelConfigJson(model), undefined, undefined, { mode: 'replace' });
    assert.deepEqual(ls(out), [...COMPANIONS, 'config.json', 'model.safetensors'].sort());
    assert.deepEqual(fs.readFileSync(path.join(out, 'tokenizer.json')), fs.readFileSync(path.join(LLAMA, 'tokenizer.json')));
  });
});
