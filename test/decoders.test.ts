// Llama-family decoders against the PyTorch references of scripts/fixtures/make_decoder_fixtures.py,
// and the KV cache against the full forward.
import '../src/backends/index.js';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Rng, noGrad } from '../src/tensor/index.js';
import { SafetensorsFile, loadCheckpointTensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { loadPretrained, modelFromConfig, savePretrained } from '../src/models/auto.js';
import { GPT2LMHeadModel } from '../src/models/gpt2.js';
import { KVCache } from '../src/models/kv-cache.js';
import { LlamaForCausalLM, llamaConfigFromJson, ropeInverseFrequencies } from '../src/models/llama.js';
import type { CausalLM } from '../src/models/generation.js';
import { getPeftModel, loraConfig, veraConfig } from '../src/peft/index.js';
import { perplexity } from '../src/cli/commands/perplexity.js';
import { maxAbsDiff, throwsVera, withTmp } from './helpers.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/', import.meta.url));
const DECODERS = path.join(FIXTURES, 'decoders');
const NAMES = ['llama-gqa', 'llama3-rope', 'qwen2', 'mistral', 'smollm-tied'] as const;

function llama(dir: string): LlamaForCausalLM {
  const loaded = loadPretrained(dir);
  assert.ok(loaded.model instanceof LlamaForCausalLM, `${dir} is a ${loaded.modelType}`);
  return loaded.model;
}

function reference(name: string): { inputIds: Int32Array; logits: Float32Array; prompt: number[]; greedy: number[] } {
  const ref = SafetensorsFile.open(path.join(DECODERS, `${name}.reference.safetensors`));
  const ints = (key: string): number[] => Array.from(ref.getFloat32(key), (v) => Math.round(v));
  return { inputIds: Int32Array.from(ints('input_ids')), logits: ref.getFloat32('logits'), prompt: ints('prompt'), greedy: ints('greedy') };
}

/** Logits of `ids` fed in chunks of the given sizes through one KV cache, concatenated. */
function incrementalLogits(model: CausalLM, ids: Int32Array, chunks: number[]): Float32Array {
  const cache = new KVCache();
  const parts: Float32Array[] = [];
  let at = 0;
  noGrad(() => {
    for (const n of chunks) {
      parts.push(model.forward(ids.subarray(at, at + n), [1, n], { cache }).toFloat32Array());
      at += n;
    }
  });
  assert.equal(at, ids.length);
  assert.equal(cache.length, ids.length);
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) (out.set(p, o), (o += p.length));
  return out;
}

describe('Llama family against PyTorch', () => {
  for (const name of NAMES) {
    test(`${name}: logits within 1e-4 of the float64 reference`, (t) => {
      const model = llama(path.join(DECODERS, name));
      const ref = reference(name);
      const logits = noGrad(() => model.forward(ref.inputIds, [2, ref.inputIds.length / 2]));
      assert.deepEqual(logits.shape, [2, ref.inputIds.length / 2, model.config.vocabSize]);
      const diff = maxAbsDiff(logits.toFloat32Array(), ref.logits);
      t.diagnostic(`max |Δ| ${diff.toExponential(2)}`);
      assert.ok(diff < 1e-4, `max |Δ| ${diff}`);
    });
  }

  test('the fixtures cover what they claim: GQA, llama3 rope, biases, head_dim, window, tied, dtypes, shards', () => {
    const gqa = llama(path.join(DECODERS, 'llama-gqa'));
    assert.equal(gqa.config.numAttentionHeads / gqa.config.numKeyValueHeads, 2);
    assert.deepEqual(gqa.model.layers.items[0].self_attn.k_proj.ownParameters().map(([n, t]) => [n, t.shape]), [['weight', [16, 32]]]);
    const rope = llama(path.join(DECODERS, 'llama3-rope'));
    assert.equal(rope.config.ropeScaling?.ropeType, 'llama3');
    assert.deepEqual(rope.eosTokenIds, [104, 102]);
    const qwen = loadPretrained(path.join(DECODERS, 'qwen2'));
    assert.equal(qwen.modelType, 'qwen2');
    const names = [...qwen.checkpoint.params.keys()];
    for (const p of ['q_proj.bias', 'k_proj.bias', 'v_proj.bias']) assert.ok(names.includes(`model.layers.0.self_attn.${p}`), p);
    assert.ok(!names.includes('model.layers.0.self_attn.o_proj.bias'));
    assert.ok([...qwen.checkpoint.params.values()].every((e) => e.dtype === 'BF16'));
    const mistral = loadPretrained(path.join(DECODERS, 'mistral'));
    assert.equal(mistral.checkpoint.files.length, 2);
    assert.equal(mistral.model instanceof LlamaForCausalLM && mistral.model.config.headDim, 16);
    const tied = loadPretrained(path.join(DECODERS, 'smollm-tied'));
    assert.ok(tied.model instanceof LlamaForCausalLM);
    assert.equal(tied.model.lm_head.ownParameters()[0][1], tied.model.model.embed_tokens.weight, 'lm_head shares the embedding');
    assert.ok(!tied.checkpoint.params.has('lm_head.weight') && tied.checkpoint.extras.length === 0);
    assert.ok([...tied.checkpoint.params.values()].every((e) => e.dtype === 'F16'));
  });

  test('llama3 rope scaling keeps high frequencies, slows low ones by factor, blends between', () => {
    const config = llamaConfigFromJson(JSON.parse(fs.readFileSync(path.join(DECODERS, 'llama3-rope/config.json'), 'utf8')), 'config.json');
    const plain = ropeInverseFrequencies({ ...config, ropeScaling: null });
    const scaled = ropeInverseFrequencies(config);
    // wavelengths 2π/f: 6.3, 19.9, 62.8 (< 256/4: kept), 199 (between: blended), ≥ 628 (> 256: ÷8)
    for (const i of [0, 1, 2]) assert.equal(scaled[i], plain[i]);
    assert.ok(scaled[3] < plain[3] && scaled[3] > plain[3] / 8);
    for (const i of [4, 5, 6, 7]) assert.ok(Math.abs(scaled[i] - plain[i] / 8) < 1e-15);
    // the legacy spelling {"type": "linear"} reads as rope_type
    const legacy = llamaConfigFromJson({ ...JSON.parse(fs.readFileSync(path.join(DECODERS, 'llama3-rope/config.json'), 'utf8')), rope_scaling: { type: 'linear', factor: 4 } }, 'c');
    assert.deepEqual(legacy.ropeScaling, { ropeType: 'linear', factor: 4 });
    const linear = ropeInverseFrequencies(legacy);
    linear.forEach((f, i) => assert.ok(Math.abs(f - plain[i] / 4) < 1e-15));
  });

  test('saving writes back exactly the tensors that were read, tied head included or omitted', () =>
    withTmp((dir) => {
      // a tied checkpoint that does store lm_head.weight (as some exporters do)
      const withHead = path.join(dir, 'with-head');
      fs.mkdirSync(withHead);
      const ckpt = loadCheckpointTensors(path.join(DECODERS, 'smollm-tied'));
      const tensors: Record<string, TensorToWrite> = {};
      for (const n of ckpt.names) tensors[n] = { data: ckpt.get(n).data(), shape: ckpt.get(n).shape, dtype: 'F16' };
      tensors['lm_head.weight'] = { ...tensors['model.embed_tokens.weight'] };
      writeSafetensors(path.join(withHead, 'model.safetensors'), tensors);
      fs.copyFileSync(path.join(DECODERS, 'smollm-tied/config.json'), path.join(withHead, 'config.json'));
      for (const src of [path.join(DECODERS, 'smollm-tied'), withHead, path.join(DECODERS, 'qwen2'), path.join(DECODERS, 'mistral')]) {
        const loaded = loadPretrained(src);
        const out = path.join(dir, `out-${path.basename(src)}`);
        savePretrained(out, loaded.model, loaded.configJson, loaded.checkpoint);
        const before = loadCheckpointTensors(src);
        const after = SafetensorsFile.open(path.join(out, 'model.safetensors'));
        assert.deepEqual(after.keys().sort(), [...before.names].sort(), src);
        for (const n of before.names) {
          assert.equal(after.info(n).dtype, before.get(n).dtype, n);
          assert.deepEqual([...after.getFloat32(n)], [...before.get(n).data()], n);
        }
      }
    }));

  test('config errors name the field', () => {
    const base = JSON.parse(fs.readFileSync(path.join(DECODERS, 'llama-gqa/config.json'), 'utf8')) as Record<string, unknown>;
    const bad = (edit: Record<string, unknown>, pattern: RegExp): void => throwsVera(() => modelFromConfig({ ...base, ...edit }, 'm/config.json'), pattern);
    bad({ rope_scaling: { rope_type: 'yarn', factor: 4 } }, /^m\/config\.json: field "rope_scaling" has rope_type "yarn", which is not supported \(supported: default, linear, llama3\)$/);
    bad({ rope_scaling: { rope_type: 'llama3', factor: 8 } }, /field "rope_scaling" needs "low_freq_factor" as a positive number/);
    bad({ num_key_value_heads: 3 }, /field "num_key_value_heads" \(3\) must divide "num_attention_heads" \(4\)/);
    bad({ hidden_size: 30 }, /field "hidden_size" \(30\) must be divisible by "num_attention_heads"/);
    bad({ eos_token_id: 'x' }, /field "eos_token_id" must be a token id, a list of token ids, or null/);
    bad({ attention_dropout: 0.1 }, /field "attention_dropout" other than 0 is not supported/);
    bad({ hidden_act: 'swiglu' }, /field "hidden_act" must be one of/);
  });

  test('vera perplexity takes Llama-family models: the mean NLL of the reference logits', () => {
    const ref = reference('qwen2');
    const seq = ref.inputIds.length / 2;
    const vocab = ref.logits.length / ref.inputIds.length;
    let nll = 0;
    for (let t = 0; t + 1 < seq; t++) {
      const row = ref.logits.subarray(t * vocab, (t + 1) * vocab);
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
      nll += lse - row[ref.inputIds[t + 1]];
    }
    const r = perplexity(llama(path.join(DECODERS, 'qwen2')), ref.inputIds.subarray(0, seq));
    assert.equal(r.tokens, seq - 1);
    assert.ok(Math.abs(r.nll - nll / (seq - 1)) < 1e-5, `${r.nll} vs ${nll / (seq - 1)}`);
  });

  test('mistral refuses sequences beyond its sliding window', () => {
    const model = llama(path.join(DECODERS, 'mistral'));
    assert.equal(model.contextLength, 24);
    throwsVera(() => model.forward(new Int32Array(25), [1, 25]), /^mistral input: sequence length 25 exceeds the sliding_window \(24\)/);
    const cache = new KVCache();
    noGrad(() => model.forward(new Int32Array(20), [1, 20], { cache }));
    throwsVera(() => noGrad(() => model.forward(new Int32Array(7), [1, 7], { cache })), /sequence length 27 exceeds the sliding_window/);
  });

  test('a random Llama built from config trains end to end (gradients reach every parameter)', () => {
    const config = llamaConfigFromJson({ model_type: 'llama', vocab_size: 20, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 }, 'c');
    const model = new LlamaForCausalLM(config, { rng: new Rng(3) });
    const logits = model.forward(Int32Array.of(1, 2, 3, 4), [1, 4]);
    logits.backward(logits.clone().detach());
    for (const [name, t] of model.namedParameters()) assert.ok(t.grad !== null, `${name} has a gradient`);
  });
});

describe('KV cache', () => {
  const gpt2 = loadPretrained(path.join(FIXTURES, 'gpt2-tiny')).model as GPT2LMHeadModel;
  const models: [string, CausalLM][] = [['gpt2-tiny', gpt2], ...NAMES.map((n): [string, CausalLM] => [n, llama(path.join(DECODERS, n))])];
  const ids = Int32Array.of(5, 17, 3, 88, 42, 9, 60, 1, 33, 71, 2, 14);
  for (const [name, model] of models) {
    test(`${name}: incremental decoding equals the full forward`, () => {
      const full = noGrad(() => model.forward(ids, [1, ids.length])).toFloat32Array();
      for (const chunks of [[12], [5, 1, 1, 1, 1, 1, 1, 1], [1, 4, 7], Array<number>(12).fill(1)]) {
        const diff = maxAbsDiff(incrementalLogits(model, ids, chunks), full);
        assert.ok(diff < 2e-5, `chunks ${chunks}: max |Δ| ${diff}`);
      }
    });
  }

  test('logitsToKeep computes the head on the last positions only', () => {
    for (const [name, model] of models.slice(0, 2)) {
      const full = noGrad(() => model.forward(ids, [1, ids.length])).toFloat32Array();
      const last = noGrad(() => model.forward(ids, [1, ids.length], { logitsToKeep: 2 }));
      const vocab = full.length / ids.length;
      assert.deepEqual(last.shape, [1, 2, vocab], name);
      assert.deepEqual([...last.toFloat32Array()], [...full.subarray((ids.length - 2) * vocab)], name);
    }
  });

  test('the cache holds each layer\'s keys and values, appended in place per step (buffers grown by doubling)', () => {
    const model = llama(path.join(DECODERS, 'llama-gqa'));
    const cache = new KVCache();
    noGrad(() => model.forward(ids.subarray(0, 5), [1, 5], { cache }));
    const buffer = cache.layer(0).key;
    noGrad(() => model.forward(ids.subarray(5, 6), [1, 1], { cache }));
    assert.equal(cache.length, 6);
    assert.equal(cache.layer(0).key, buffer, 'a step within the capacity writes in place');
    for (let l = 0; l < model.config.numHiddenLayers; l++) {
      const [b, kvHeads, capacity, headDim] = cache.layer(l).key!.shape;
      assert.deepEqual([b, kvHeads, headDim], [1, 2, 8], 'kv heads, not query heads');
      assert.ok(capacity >= 6 && cache.layer(l).length === 6);
      assert.deepEqual(cache.layer(l).value?.shape, cache.layer(l).key?.shape);
    }
    // past the capacity the buffers grow and keep what they held: decoding still equals the full forward
    const long = Int32Array.from({ length: 40 }, (_, i) => (i * 13) % 90);
    assert.ok(maxAbsDiff(incrementalLogits(model, long, Array<number>(40).fill(1)), noGrad(() => model.forward(long, [1, 40])).toFloat32Array()) < 2e-5);
  });

  test('with a cache the attention mask covers past and new keys', () => {
    const cache = new KVCache();
    noGrad(() => gpt2.forward(ids.subarray(0, 4), [1, 4], { cache }));
    throwsVera(() => noGrad(() => gpt2.forward(ids.subarray(4, 5), [1, 1], { cache, attentionMask: new Float32Array(1).fill(1) })), /attention mask of 1 values for 1 × 5 keys/);
    const masked = noGrad(() => gpt2.forward(ids.subarray(4, 5), [1, 1], { cache, attentionMask: Float32Array.of(1, 1, 1, 1, 1) })).toFloat32Array();
    const full = noGrad(() => gpt2.forward(ids.subarray(0, 5), [1, 5])).toFloat32Array();
    assert.ok(maxAbsDiff(masked, full.subarray(4 * 101)) < 2e-5);
  });

  test('adapters (VeRA on q_proj,v_proj; LoRA) run inside cached decoding', () => {
    for (const config of [veraConfig({ targetModules: ['q_proj', 'v_proj'], r: 4 }), loraConfig({ targetModules: ['q_proj', 'v_proj', 'gate_proj'], r: 2 })]) {
      const model = llama(path.join(DECODERS, 'llama-gqa'));
      const before = noGrad(() => model.forward(ids, [1, ids.length])).toFloat32Array();
      const peft = getPeftModel(model, config);
      // move the adapter off its identity initialization so it changes the output
      for (const [, t] of peft.trainableParameters()) t.copyFrom(new Rng(7).fillNormal(new Float32Array(t.size), 0, 0.5));
      const full = noGrad(() => model.forward(ids, [1, ids.length])).toFloat32Array();
      assert.ok(maxAbsDiff(full, before) > 1e-3, 'the adapter changes the logits');
      const targets = [...model.namedModules()].filter(([p]) => /\.(q_proj|v_proj)$/.test(p)).length;
      assert.equal(targets, 4);
      assert.ok(maxAbsDiff(incrementalLogits(model, ids, [6, 1, 1, 1, 1, 1, 1]), full) < 2e-5);
    }
  });
});
