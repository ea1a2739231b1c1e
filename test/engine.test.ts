// The multi-adapter engine: every request of a mixed batch (VeRA, LoRA and base rows, different
// prompt lengths, joining at different steps) gives what it gives run alone with its adapter
// merged; concurrent requests never see each other's adapter; bad adapters are refused in one line
// while the engine goes on serving.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Rng, noGrad, manualSeed } from '../src/tensor/index.js';
import { loadPretrained, generate, type CausalLM } from '../src/models/index.js';
import { PeftModel, loraConfig, veraConfig, type BasePeftConfig } from '../src/peft/index.js';
import { InferenceEngine, generateBatch, type EngineRequest, type EngineStep } from '../src/engine/index.js';
import { SafetensorsFile, serializeSafetensors } from '../src/io/safetensors.js';
import { makeAdapter as makeAdapterWith } from './serve-helpers.js';
import { maxAbsDiff, rejectsVera, runVera, throwsVera, tinyGpt2TokenizerJson, withTmp } from './helpers.js';

const gpt2Dir = new URL('../../test/fixtures/gpt2-tiny', import.meta.url).pathname;
const llamaDir = new URL('../../test/fixtures/decoders/llama-gqa', import.meta.url).pathname;

type Lm = CausalLM & ReturnType<typeof loadPretrained>['model'];
const load = (dir: string): Lm => loadPretrained(dir).model as Lm;

/** Save an adapter with non-trivial ("trained") values into dir/name. */
const makeAdapter = (modelDir: string, dir: string, name: string, config: BasePeftConfig, seed: number): string => makeAdapterWith(modelDir, dir, name, config, seed, 0.4);

/** The reference: the adapter merged into a fresh model, decoded alone (greedy), and the logits of every step from a full forward. */
function solo(modelDir: string, adapterDir: string | null, prompt: number[], maxNewTokens: number): { tokens: number[]; logits: Float32Array[] } {
  let model = load(modelDir);
  if (adapterDir !== null) model = PeftModel.fromPretrained(model, adapterDir).mergeAndUnload() as Lm;
  const { tokens } = generate(model, prompt, { maxNewTokens, eosTokenIds: [] });
  const seq = Int32Array.from([...prompt, ...tokens.slice(0, -1)]);
  const all = noGrad(() => model.forward(seq, [1, seq.length]).toFloat32Array());
  const vocab = model.config.vocabSize;
  const logits = tokens.map((_, i) => all.slice((prompt.length - 1 + i) * vocab, (prompt.length + i) * vocab));
  return { tokens, logits };
}

async function collect(handle: AsyncIterable<EngineStep>): Promise<EngineStep[]> {
  const steps: EngineStep[] = [];
  for await (const s of handle) steps.push(s);
  return steps;
}

// davesTarget: one of the VeRA targets that alone sizes the same pair (it holds the largest in and out)
for (const [family, modelDir, veraTargets, davesTarget, loraTargets] of [
  ['gpt2', gpt2Dir, ['c_attn', 'c_fc', 'attn.c_proj'], 'c_fc', ['c_attn']],
  ['llama', llamaDir, ['q_proj', 'v_proj', 'down_proj'], 'down_proj', ['q_proj', 'o_proj']],
] as const) {
  test(`${family}: a mixed batch (VeRA, LoRA, base; prompts of several lengths; joining at different steps) matches each request run alone with its adapter merged`, async () => {
    await withTmp(async (dir) => {
      const adapters: Record<string, string> = {
        alice: makeAdapter(modelDir, dir, 'alice', veraConfig({ targetModules: [...veraTargets], r: 8, initWeights: false }), 1),
        bob: makeAdapter(modelDir, dir, 'bob', veraConfig({ targetModules: [...veraTargets], r: 8, initWeights: false, saveProjection: false }), 2),
        dave: makeAdapter(modelDir, dir, 'dave', veraConfig({ targetModules: [davesTarget], r: 8, initWeights: false }), 4),
        carol: makeAdapter(modelDir, dir, 'carol', loraConfig({ targetModules: [...loraTargets], r: 4, loraAlpha: 8 }), 3),
        erin: makeAdapter(modelDir, dir, 'erin', loraConfig({ targetModules: [loraTargets[0]], r: 2, loraAlpha: 2, useRslora: true }), 5),
      };
      const engine = new InferenceEngine(load(modelDir), { vera: { r: 8, targetModules: [...veraTargets] }, maxBatchSize: 6, maxBatchTokens: 12, prefillChunk: 5 });
      for (const [name, path] of Object.entries(adapters)) engine.addAdapter(name, path);
      const names = [...Object.keys(adapters), null];
      const rng = new Rng(9);
      const requests: EngineRequest[] = Array.from({ length: 14 }, (_, i) => ({
        promptIds: Array.from({ length: 1 + ((i * 7) % 13) }, () => rng.int(100)),
        adapter: names[i % names.length],
        maxNewTokens: 3 + (i % 5),
        eosTokenIds: [],
        returnLogits: true,
      }));
      // the first half starts at once; the rest join while it runs
      const handles = requests.slice(0, 7).map((r) => engine.generate(r));
      const first = await collect(handles[0]);
      assert.ok(first.length > 0);
      handles.push(...requests.slice(7).map((r) => engine.generate(r)));
      const results = await Promise.all(handles.map((h) => h.result));
      const streams = await Promise.all(handles.slice(1).map((h) => collect(h)));
      streams.unshift(first);
      assert.ok(engine.load.steps > 0);
      let worst = 0;
      requests.forEach((req, i) => {
        const want = solo(modelDir, req.adapter == null ? null : adapters[req.adapter], [...req.promptIds], req.maxNewTokens!);
        assert.deepEqual(results[i].tokens, want.tokens, `request ${i} (${req.adapter ?? 'base'}): greedy tokens`);
        assert.deepEqual(streams[i].map((s) => s.token), want.tokens, `request ${i}: streamed tokens`);
        streams[i].forEach((s, j) => (worst = Math.max(worst, maxAbsDiff(s.logits!, want.logits[j]))));
        assert.equal(results[i].finishReason, 'length');
        assert.equal(results[i].promptTokens, req.promptIds.length);
      });
      assert.ok(worst < 1e-4, `logits within 1e-4 of the merged model's (worst ${worst})`);
      await engine.close();
    });
  });
}

test('concurrent requests with different adapters never mix (each equals its solo run)', async () => {
  await withTmp(async (dir) => {
    const targets = ['c_attn', 'c_proj'];
    const alice = makeAdapter(gpt2Dir, dir, 'alice', veraConfig({ targetModules: targets, r: 4, initWeights: false }), 11);
    const bob = makeAdapter(gpt2Dir, dir, 'bob', veraConfig({ targetModules: targets, r: 4, initWeights: false }), 12);
    const engine = new InferenceEngine(load(gpt2Dir));
    engine.addAdapter('alice', alice);
    engine.addAdapter('bob', bob);
    const prompt = [5, 17, 3, 42];
    const [a, b, base] = await Promise.all([
      engine.generate({ promptIds: prompt, adapter: 'alice', maxNewTokens: 8, eosTokenIds: [] }).result,
      engine.generate({ promptIds: prompt, adapter: 'bob', maxNewTokens: 8, eosTokenIds: [] }).result,
      engine.generate({ promptIds: prompt, maxNewTokens: 8, eosTokenIds: [] }).result,
    ]);
    assert.deepEqual(a.tokens, solo(gpt2Dir, alice, prompt, 8).tokens);
    assert.deepEqual(b.tokens, solo(gpt2Dir, bob, prompt, 8).tokens);
    assert.deepEqual(base.tokens, solo(gpt2Dir, null, prompt, 8).tokens);
    assert.notDeepEqual(a.tokens, b.tokens, 'the two adapters do differ here');
    await engine.close();
  });
});

test('sampling, stop strings, eos and cancellation per request', async () => {
  const decode = (ids: readonly number[]): string => ids.map((i) => String.fromCharCode(97 + (i % 26))).join('');
  const engine = new InferenceEngine(load(gpt2Dir), { decode });
  const prompt = [1, 2, 3];
  const sampled = await engine.generate({ promptIds: prompt, maxNewTokens: 6, doSample: true, temperature: 0.8, topK: 20, seed: 7, eosTokenIds: [] }).result;
  const want = generate(load(gpt2Dir), prompt, { maxNewTokens: 6, doSample: true, temperature: 0.8, topK: 20, seed: 7, eosTokenIds: [], decode });
  assert.deepEqual(sampled.tokens, want.tokens, 'the same draws as generate() with that seed');
  assert.equal(sampled.text, want.text);
  // a stop string made of the first generated character ends at once
  const stop = decode([sampled.tokens[0]]);
  const stopped = await engine.generate({ promptIds: prompt, maxNewTokens: 6, doSample: true, temperature: 0.8, topK: 20, seed: 7, eosTokenIds: [], stopStrings: [stop] }).result;
  assert.equal(stopped.finishReason, 'stop_string');
  assert.deepEqual(stopped.tokens, sampled.tokens.slice(0, 1));
  const eos = await engine.generate({ promptIds: prompt, maxNewTokens: 6, doSample: true, temperature: 0.8, topK: 20, seed: 7, eosTokenIds: [sampled.tokens[1]] }).result;
  assert.equal(eos.finishReason, 'eos');
  assert.deepEqual(eos.tokens, sampled.tokens.slice(0, 2));
  const controller = new AbortController();
  const handle = engine.generate({ promptIds: prompt, maxNewTokens: 40, eosTokenIds: [], signal: controller.signal });
  let n = 0;
  for await (const _ of handle) if (++n === 2) controller.abort();
  const cancelled = await handle.result;
  assert.equal(cancelled.finishReason, 'cancelled');
  assert.ok(cancelled.tokens.length >= 2 && cancelled.tokens.length < 40);
  await engine.close();
});

test('bad adapters are refused in one line and the engine goes on serving', async () => {
  await withTmp(async (dir) => {
    const targets = ['c_attn'];
    const good = makeAdapter(gpt2Dir, dir, 'good', veraConfig({ targetModules: targets, r: 4, initWeights: false }), 21);
    const engine = new InferenceEngine(load(gpt2Dir), { vera: { r: 4, targetModules: targets } });
    engine.addAdapter('good', good);
    const running = engine.generate({ promptIds: [1, 2, 3], adapter: 'good', maxNewTokens: 10, eosTokenIds: [] });
    const wrongKey = makeAdapter(gpt2Dir, dir, 'key', veraConfig({ targetModules: targets, r: 4, projectionPrngKey: 3 }), 22);
    throwsVera(() => engine.addAdapter('key', wrongKey), /projection_prng_key 3 is not the engine's 0/);
    const wrongR = makeAdapter(gpt2Dir, dir, 'r', veraConfig({ targetModules: targets, r: 8 }), 23);
    throwsVera(() => engine.addAdapter('r', wrongR), /r 8 is not the engine's 4/);
    const wider = makeAdapter(gpt2Dir, dir, 'wider', veraConfig({ targetModules: ['c_attn', 'c_fc'], r: 4 }), 24);
    throwsVera(() => engine.addAdapter('wider', wider), /does not adapt/);
    // NaN in a vector
    const nan = makeAdapter(gpt2Dir, dir, 'nan', veraConfig({ targetModules: targets, r: 4 }), 25);
    const st = SafetensorsFile.open(join(nan, 'adapter_model.safetensors'));
    const tensors = Object.fromEntries(st.keys().map((k) => [k, { data: st.getFloat32(k), shape: [...st.info(k).shape] }]));
    tensors['base_model.model.transformer.h.0.attn.c_attn.vera_lambda_b'].data[0] = Number.NaN;
    const bytes = serializeSafetensors(tensors);
    const config = readFileSync(join(nan, 'adapter_config.json'), 'utf8');
    throwsVera(() => engine.addAdapter('nan', { config, weights: bytes }), /vera_lambda_b contains NaN or Inf/);
    // projections that are not the key's
    tensors['base_model.model.transformer.h.0.attn.c_attn.vera_lambda_b'].data[0] = 0;
    tensors['base_model.vera_A'].data[5] += 1e-3;
    throwsVera(() => engine.addAdapter('tampered', { config, weights: serializeSafetensors(tensors) }), /base_model\.vera_A is not the pair projection_prng_key 0 makes/);
    // a truncated file
    const full = readFileSync(join(good, 'adapter_model.safetensors'));
    writeFileSync(join(nan, 'adapter_model.safetensors'), full.subarray(0, full.length - 10));
    throwsVera(() => engine.addAdapter('cut', nan), /adapter_model\.safetensors/);
    // a bad shape
    const other = makeAdapter(gpt2Dir, dir, 'shape', veraConfig({ targetModules: ['c_fc'], r: 4 }), 26);
    const cfg = JSON.parse(readFileSync(join(other, 'adapter_config.json'), 'utf8'));
    throwsVera(() => engine.addAdapter('shape', { config: { ...cfg, target_modules: ['c_attn'] }, weights: readFileSync(join(other, 'adapter_model.safetensors')) }), /missing tensor|has shape/);
    assert.ok(!engine.store.has('key') && !engine.store.has('nan') && !engine.store.has('cut'));
    await rejectsVera(Promise.resolve().then(() => engine.generate({ promptIds: [1], adapter: 'nope' }).result), /no adapter named 'nope'/);
    throwsVera(() => engine.generate({ promptIds: [] }), /prompt is empty/);
    throwsVera(() => engine.generate({ promptIds: [1, 100000] }), /out of range/);
    throwsVera(() => engine.generate({ promptIds: [1], maxNewTokens: 100 }), /context of 64/);
    const result = await running.result;
    assert.deepEqual(result.tokens, solo(gpt2Dir, good, [1, 2, 3], 10).tokens, 'the running request went on undisturbed');
    await engine.close();
  });
});

test('resident adapters: slots of vectors only, LRU eviction under a byte budget, reload from disk, replace while running', async () => {
  await withTmp(async (dir) => {
    manualSeed(3);
    const targets = ['c_attn', 'c_fc'];
    const paths = Array.from({ length: 6 }, (_, i) => makeAdapter(gpt2Dir, dir, `u${i}`, veraConfig({ targetModules: targets, r: 4, initWeights: false }), 30 + i));
    const perAdapter = 4 * 2 * ((4 + 96) + (4 + 128)); // two layers × (c_attn: r + 96, c_fc: r + 128)
    const engine = new InferenceEngine(load(gpt2Dir), { vera: { r: 4, targetModules: targets }, maxAdapterBytes: 3 * perAdapter });
    paths.forEach((p, i) => engine.addAdapter(`u${i}`, p));
    const stats = engine.adapterStats();
    assert.equal(stats.veraBytesPerAdapter, perAdapter, 'resident bytes per adapter are its vectors');
    assert.equal(stats.registered, 6);
    assert.ok(stats.resident <= 3 && stats.residentBytes <= 3 * perAdapter);
    // every adapter still serves (evicted ones reload from disk), and gives its solo result
    const prompt = [4, 8, 15];
    const results = await Promise.all(paths.map((_, i) => engine.generate({ promptIds: prompt, adapter: `u${i}`, maxNewTokens: 4, eosTokenIds: [] }).result));
    results.forEach((r, i) => assert.deepEqual(r.tokens, solo(gpt2Dir, paths[i], prompt, 4).tokens, `u${i}`));
    assert.ok(engine.adapterStats().residentBytes <= 3 * perAdapter);
    // replacing an adapter while a request uses it: that request finishes with the old one
    const long = engine.generate({ promptIds: prompt, adapter: 'u0', maxNewTokens: 12, eosTokenIds: [] });
    await new Promise((r) => setImmediate(r));
    engine.addAdapter('u0', paths[1]);
    const after = await engine.generate({ promptIds: prompt, adapter: 'u0', maxNewTokens: 4, eosTokenIds: [] }).result;
    assert.deepEqual((await long.result).tokens, solo(gpt2Dir, paths[0], prompt, 12).tokens);
    assert.deepEqual(after.tokens, solo(gpt2Dir, paths[1], prompt, 4).tokens);
    engine.removeAdapter('u2');
    throwsVera(() => engine.generate({ promptIds: prompt, adapter: 'u2' }), /no adapter named 'u2'/);
    await engine.close();
  });
});

test('10,000 registered VeRA adapters: resident bytes per adapter are its vectors', () => {
  withTmp((dir) => {
    const targets = ['c_attn'];
    const path = makeAdapter(gpt2Dir, dir, 'a', veraConfig({ targetModules: targets, r: 4, initWeights: false, saveProjection: false }), 40);
    const config = readFileSync(join(path, 'adapter_config.json'), 'utf8');
    const weights = readFileSync(join(path, 'adapter_model.safetensors'));
    const engine = new InferenceEngine(load(gpt2Dir), { vera: { r: 4, targetModules: targets } });
    const before = process.memoryUsage().arrayBuffers;
    for (let i = 0; i < 10_000; i++) engine.addAdapter(`user${i}`, { config, weights });
    const stats = engine.adapterStats();
    assert.equal(stats.registered, 10_000);
    assert.equal(stats.residentBytes, 10_000 * stats.veraBytesPerAdapter);
    assert.equal(stats.veraBytesPerAdapter, 4 * 2 * (4 + 96));
    assert.ok(stats.slabCapacity >= 10_000 && stats.slabCapacity < 20_000);
    const grown = process.memoryUsage().arrayBuffers - before;
    // the slabs (capacity × vectors) and one cold copy of the vectors per adapter registered from bytes
    assert.ok(grown < 2 * stats.slabCapacity * stats.veraBytesPerAdapter + 8 * 1024 * 1024, `grew ${grown} bytes`);
  });
});


test('vera generate --adapter NAME=DIR --prompts FILE.jsonl --json: one line per request, in input order, as each alone', async () => {
  await withTmp(async (dir) => {
    const modelDir = join(dir, 'model');
    mkdirSync(modelDir);
    for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(gpt2Dir, f), join(modelDir, f));
    writeFileSync(join(modelDir, 'tokenizer.json'), tinyGpt2TokenizerJson());
    const alice = makeAdapter(gpt2Dir, dir, 'alice', veraConfig({ targetModules: ['c_attn', 'c_fc'], r: 4, initWeights: false }), 51);
    const carol = makeAdapter(gpt2Dir, dir, 'carol', loraConfig({ targetModules: ['c_attn'], r: 2, loraAlpha: 4 }), 52);
    const lines = [
      { prompt_ids: [5, 6, 7], adapter: 'alice' },
      { prompt_ids: [9, 1], adapter: null },
      { prompt_ids: [3, 3, 3, 3, 3], adapter: 'carol', max_new_tokens: 3 },
      { prompt_ids: [8], adapter: 'alice', temperature: 0.7, top_k: 10, seed: 4 },
      { prompt: 'the hall', adapter: 'carol' },
    ];
    const prompts = join(dir, 'prompts.jsonl');
    writeFileSync(prompts, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
    const r = await runVera(['generate', '--model', modelDir, '--adapter', `alice=${alice}`, '--adapter', `carol=${carol}`, '--prompts', prompts, '--max-new-tokens', '5', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { line: number; adapter: string | null; tokens: number[]; text: string; finish_reason: string; prompt_tokens: number[] });
    assert.deepEqual(out.map((o) => o.line), [1, 2, 3, 4, 5]);
    const dirs: Record<string, string> = { alice, carol };
    out.slice(0, 3).forEach((o, i) => {
      const l = lines[i];
      const want = solo(gpt2Dir, l.adapter === null ? null : dirs[l.adapter], l.prompt_ids!, l.max_new_tokens ?? 5).tokens;
      const eosAt = want.indexOf(100);
      assert.deepEqual(o.tokens, eosAt >= 0 ? want.slice(0, eosAt + 1) : want, `line ${i + 1}`);
      assert.equal(o.adapter, l.adapter);
    });
    const merged = PeftModel.fromPretrained(load(gpt2Dir), alice).mergeAndUnload() as Lm;
    const sampled = generate(merged, [8], { maxNewTokens: 5, doSample: true, temperature: 0.7, topK: 10, seed: 4 });
    assert.deepEqual(out[3].tokens, sampled.tokens, 'the line\'s own sampling fields');
    assert.ok(out[4].prompt_tokens.length > 0 && typeof out[4].text === 'string');
    // one-line refusals
    writeFileSync(prompts, `${JSON.stringify({ prompt_ids: [1], adapter: 'zed' })}\n`);
    const bad = await runVera(['generate', '--model', modelDir, '--adapter', `alice=${alice}`, '--prompts', prompts]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr.trim(), /prompts\.jsonl:1: field "adapter": no adapter named 'zed'/);
    assert.equal(bad.stderr.trim().split('\n').length, 1);
    const both = await runVera(['generate', '--model', modelDir, '--adapter', `alice=${alice}`, '--prompt', 'hi']);
    assert.notEqual(both.code, 0);
    assert.match(both.stderr, /named adapters are for --prompts/);
    writeFileSync(prompts, '{"prompt_ids": [1], "top_p": 2}\n');
    const range = await runVera(['generate', '--model', modelDir, '--prompts', prompts]);
    assert.match(range.stderr, /prompts\.jsonl:1: field "top_p" must be a number in \(0, 1\]/);
  });
});

test('generateBatch: prompts with per-prompt adapters in one call; the model is given back unchanged', async () => {
  await withTmp(async (dir) => {
    const alice = makeAdapter(gpt2Dir, dir, 'alice', veraConfig({ targetModules: ['c_attn'], r: 4, initWeights: false }), 61);
    const model = load(gpt2Dir);
    const names = [...model.namedModules()].map(([p, m]) => `${p}:${m.constructor.name}`);
    const results = await generateBatch(model, [
      { promptIds: [1, 2], adapter: 'alice', maxNewTokens: 4, eosTokenIds: [] },
      { promptIds: [3], maxNewTokens: 4, eosTokenIds: [] },
    ], { adapters: { alice } });
    assert.deepEqual(results[0].tokens, solo(gpt2Dir, alice, [1, 2], 4).tokens);
    assert.deepEqual(results[1].tokens, solo(gpt2Dir, null, [3], 4).tokens);
    assert.deepEqual([...model.namedModules()].map(([p, m]) => `${p}:${m.constructor.name}`), names);
  });
});

test('adapters registered from bytes: evicted ones keep their vectors aside and come back exact', async () => {
  await withTmp(async (dir) => {
    const targets = ['c_attn'];
    const paths = Array.from({ length: 4 }, (_, i) => makeAdapter(gpt2Dir, dir, `b${i}`, veraConfig({ targetModules: targets, r: 4, initWeights: false }), 70 + i));
    const perAdapter = 4 * 2 * (4 + 96);
    const engine = new InferenceEngine(load(gpt2Dir), { vera: { r: 4, targetModules: targets }, maxAdapterBytes: 2 * perAdapter });
    paths.forEach((p, i) => engine.addAdapter(`b${i}`, { config: readFileSync(join(p, 'adapter_config.json'), 'utf8'), weights: readFileSync(join(p, 'adapter_model.safetensors')) }));
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 4; i++) {
        const r = await engine.generate({ promptIds: [7, 8, 9], adapter: `b${i}`, maxNewTokens: 4, eosTokenIds: [] }).result;
        assert.deepEqual(r.tokens, solo(gpt2Dir, paths[i], [7, 8, 9], 4).tokens, `b${i}, round ${round}`);
        assert.ok(engine.adapterStats().resident <= 2);
      }
    }
    await engine.close();
  });
});
