// Fine-tuning for the server: OpenAI fine-tuning JSONL → ids and assistant-only labels (plain
// rendering and chat template), one-line errors naming file id and line, and training in a worker
// thread on gpt2-tiny: the loss falls, a run resumed from a checkpoint gives the uninterrupted
// run's bytes (while the main thread runs kernels on the shared thread pool), cancel, errors that
// come back as VeraErrors, and the adapter loads with PeftModel.fromPretrained and in the engine.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { F, Rng, Tensor, noGrad } from '../src/tensor/index.js';
import { causalLmLoss, generate, loadPretrained, type CausalLM } from '../src/models/index.js';
import { PeftModel } from '../src/peft/index.js';
import { InferenceEngine } from '../src/engine/index.js';
import { loadTokenizer, type Tokenizer } from '../src/data/tokenizer.js';
import { loadChatTemplate, plainChatTemplate } from '../src/data/chat-template.js';
import { IGNORE_INDEX } from '../src/data/jsonl.js';
import { chatDataOptions, parseTrainingData, validateTrainingData, type ChatDataOptions } from '../src/data/chat-data.js';
import { FineTuneCancelledError, startFineTune, type FineTuneCheckpoint, type FineTuneEvent, type FineTuneResult, type FineTuneSpec } from '../src/serve/finetune.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { VeraError } from '../src/io/errors.js';
import { rejectsVera, throwsVera, tinyGpt2TokenizerJson, withTmp } from './helpers.js';

const gpt2Dir = new URL('../../test/fixtures/gpt2-tiny', import.meta.url).pathname;
type Lm = CausalLM & ReturnType<typeof loadPretrained>['model'];
const EOS = 100;

/** gpt2-tiny with a tokenizer.json (and, when given, a chat template) in a fresh folder. */
function modelFolder(dir: string, chatTemplate?: string): string {
  const m = join(dir, chatTemplate === undefined ? 'model' : 'chat-model');
  mkdirSync(m, { recursive: true });
  for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(gpt2Dir, f), join(m, f));
  writeFileSync(join(m, 'tokenizer.json'), tinyGpt2TokenizerJson());
  if (chatTemplate !== undefined) writeFileSync(join(m, 'tokenizer_config.json'), JSON.stringify({ chat_template: chatTemplate, eos_token: '<|endoftext|>' }));
  return m;
}

async function options(modelDir: string): Promise<ChatDataOptions> {
  return chatDataOptions(modelDir, loadPretrained(modelDir).model as Lm);
}

const jsonl = (rows: unknown[]): string => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';

/** The ids whose label is trained, and the labels are the ids there. */
function trainedIds(ids: Int32Array, labels: Int32Array): number[] {
  const out: number[] = [];
  labels.forEach((l, i) => {
    if (l !== IGNORE_INDEX) {
      assert.equal(l, ids[i]);
      out.push(l);
    }
  });
  return out;
}

test('chat data, plain rendering (no chat template): ids are the rendered turns, labels only on assistant content + eos', async () => {
  await withTmp(async (dir) => {
    const m = modelFolder(dir);
    const opts = { ...(await options(m)), maxLength: 512 }; // longer than gpt2-tiny's context: nothing cut here
    assert.equal(opts.template, null);
    const tok = (await loadTokenizer(m)) as Tokenizer;
    const messages = [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'hi there' },
      { role: 'assistant', content: 'hello' },
      { role: 'user', content: 'again' },
      { role: 'assistant', content: 'skip me', weight: 0 },
      { role: 'user', content: 'last' },
      { role: 'assistant', content: [{ type: 'text', text: 'the e' }, { type: 'text', text: 'nd' }] },
      { role: 'user', content: 'trailing user turn, not needed' },
    ];
    const data = parseTrainingData(jsonl([{ messages }]), 'file-abc', opts);
    assert.equal(data.format, 'chat');
    const [ex] = data.examples;
    const enc = (s: string): number[] => tok.encode(s);
    const expected = [
      ...enc('system: be brief\n'), ...enc('user: hi there\n'), ...enc('assistant:'), ...enc(' hello'), EOS, ...enc('\n'),
      ...enc('user: again\n'), ...enc('assistant: skip me\n'), ...enc('user: last\n'), ...enc('assistant:'), ...enc(' the end'), EOS, ...enc('\n'),
    ];
    assert.deepEqual([...ex.ids], expected);
    assert.deepEqual(trainedIds(ex.ids, ex.labels), [...enc(' hello'), EOS, ...enc(' the end'), EOS]);
    assert.equal(ex.targets, enc(' hello').length + enc(' the end').length + 2);
    assert.equal(ex.line, 1);
    // the server's prompt in the plain format (plainChatTemplate) ends where a trained reply begins
    const prompt = plainChatTemplate().render(messages.slice(0, 2) as { role: string; content: string }[]);
    const n = enc('system: be brief\n').length + enc('user: hi there\n').length + enc('assistant:').length;
    assert.equal(tok.decode([...ex.ids.slice(0, n)]), tok.decode(tok.encode(prompt))); // (this tiny vocabulary has no newline)
    assert.ok(ex.labels.slice(0, n).every((l) => l === IGNORE_INDEX) && ex.labels[n] !== IGNORE_INDEX);
  });
});

test('chat data through the chat template: each assistant span is the reply through its end-of-turn, found by rendering prefixes', async () => {
  await withTmp(async (dir) => {
    const template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
    const m = modelFolder(dir, template);
    const opts = await options(m);
    assert.notEqual(opts.template, null);
    const tok = (await loadTokenizer(m)) as Tokenizer;
    const messages = [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'yo' }, { role: 'user', content: 'ok?' }, { role: 'assistant', content: 'fine' }];
    const [ex] = parseTrainingData(jsonl([{ messages }]), 'file-t', opts).examples;
    const enc = (s: string): number[] => tok.encode(s, { addSpecialTokens: false });
    const expected = [...enc('<user>hi<|endoftext|>\n<assistant>'), ...enc('yo<|endoftext|>\n'), ...enc('<user>ok?<|endoftext|>\n<assistant>'), ...enc('fine<|endoftext|>\n')];
    assert.deepEqual([...ex.ids], expected);
    assert.deepEqual(trainedIds(ex.ids, ex.labels), [...enc('yo<|endoftext|>\n'), ...enc('fine<|endoftext|>\n')]);
    assert.ok(enc('yo<|endoftext|>\n').includes(EOS), 'the eos special token is one id');
    // the prompt the server renders for the first reply is exactly the untrained prefix
    const tpl = loadChatTemplate(m);
    assert.deepEqual(enc(tpl.render(messages.slice(0, 1))), [...ex.ids.slice(0, ex.labels.findIndex((l) => l !== IGNORE_INDEX))]);

    // a template that renders the conversation differently when it goes on cannot locate replies
    const bad = modelFolder(join(dir, 'bad'), "{% for m in messages %}{% if loop.last %}[last]{% endif %}{{ m.content }}\n{% endfor %}");
    throwsVera(() => parseTrainingData(jsonl([{ messages }]), 'file-t', { ...opts, template: loadChatTemplate(bad) }), /training_file file-t line 1: the chat template .* does not render the conversation before messages\[1\] as a prefix/);
  });
});

test('prompt/completion data: loss on the completion and eos; truncation to the context; one-line errors naming file id and line', async () => {
  await withTmp(async (dir) => {
    const m = modelFolder(dir);
    const opts = await options(m);
    const tok = (await loadTokenizer(m)) as Tokenizer;
    const data = parseTrainingData(jsonl([{ prompt: 'the cat', completion: ' sat' }, { prompt: 'x'.repeat(10), completion: 'y'.repeat(100) }]), 'file-pc', opts);
    assert.equal(data.format, 'completion');
    const [a, b] = data.examples;
    assert.deepEqual([...a.ids], [...tok.encode('the cat'), ...tok.encode(' sat'), EOS]);
    assert.deepEqual(trainedIds(a.ids, a.labels), [...tok.encode(' sat'), EOS]);
    assert.equal(b.ids.length, 64, 'cut to the model context');
    assert.ok(b.truncated && data.truncated === 1);
    assert.equal(validateTrainingData(jsonl([{ prompt: 'a', completion: 'b' }]), 'f', opts).examples, 1);

    const bad = (text: string, pattern: RegExp): void => throwsVera(() => parseTrainingData(text, 'file-abc', opts), pattern);
    const user = { role: 'user', content: 'q' };
    const reply = { role: 'assistant', content: 'a' };
    bad(jsonl([{ messages: [user, reply] }, {}, { messages: [user, { role: 'bot', content: 'x' }] }]).replace('{}', ''),
      /^training_file file-abc line 3: messages\[1\]\.role must be one of system, user, assistant$/);
    bad('{"messages": [\n', /^training_file file-abc line 1: invalid JSON$/);
    bad(jsonl([{ messages: [user] }]), /line 1: no assistant message to train on/);
    bad(jsonl([{ messages: [] }]), /line 1: "messages" must be a non-empty array/);
    bad(jsonl([{ messages: [{ role: 'user', content: 3 }, reply] }]), /line 1: messages\[0\]\.content must be a string/);
    bad(jsonl([{ messages: [user, { ...reply, weight: 2 }] }]), /line 1: messages\[1\]\.weight must be 0 or 1/);
    bad(jsonl([{ messages: [user, { ...reply, weight: 0 }] }]), /line 1: no assistant message to train on/);
    bad(jsonl([{ messages: [user, reply] }, { prompt: 'a', completion: 'b' }]), /line 2: a "prompt"\/"completion" example in a file of "messages" examples/);
    bad(jsonl([{ prompt: 'a', completion: 7 }]), /line 1: "completion" must be a string/);
    bad(jsonl([{ text: 'a' }]), /line 1: expected "messages" \(or "prompt" and "completion"\)/);
    bad('\n\n', /^training_file file-abc: no examples/);
    // the reply starts beyond the context: nothing left to train on
    bad(jsonl([{ messages: [{ role: 'user', content: 'z'.repeat(80) }, reply] }]), /line 1: no token to train on \(the text to train on starts at token \d+, beyond the model's context of 64 tokens\)/);
  });
});

// ---------------------------------------------------------------- training in a worker

const ROWS = [
  ['the cat', 'sat on the mat'], ['a dog', 'ran in the hall'], ['the hat', 'is all red'], ['a bird', 'sang all day'],
  ['the sun', 'set at ten'], ['a fish', 'swam in the lake'], ['the owl', 'hid all night'], ['a fox', 'ate the hen'],
];
const CHAT_DATA = jsonl(ROWS.map(([q, a]) => ({ messages: [{ role: 'system', content: 'answer' }, { role: 'user', content: q }, { role: 'assistant', content: a }] })));

function spec(modelDir: string, over: Partial<FineTuneSpec> = {}): FineTuneSpec {
  return {
    modelDir, trainingData: CHAT_DATA, trainingFile: 'file-train', method: 'vera', r: 4, learningRate: 0.05, epochs: 3, batchSize: 2, seed: 7,
    projectionPrngKey: 11, targetModules: ['c_attn', 'c_fc'], checkpointEvery: 4, ...over,
  };
}

interface Collected {
  events: FineTuneEvent[];
  checkpoints: FineTuneCheckpoint[];
  result: Promise<FineTuneResult>;
}

function run(s: FineTuneSpec, resume: FineTuneCheckpoint | null = null, onCheckpoint?: (c: FineTuneCheckpoint, cancel: () => void) => void): Collected {
  const r = startFineTune(s, resume);
  const out: Collected = { events: [], checkpoints: [], result: r.result };
  r.onEvent((e) => out.events.push(e));
  r.onCheckpoint((c) => {
    out.checkpoints.push(c);
    onCheckpoint?.(c, () => r.cancel());
  });
  return out;
}

/** Mean loss of the assistant tokens of the training data, on `model` (base or adapted). */
function dataLoss(model: Lm, opts: ChatDataOptions): number {
  const { examples } = parseTrainingData(CHAT_DATA, 'f', opts);
  return noGrad(() => {
    let sum = 0;
    let n = 0;
    for (const e of examples) {
      const logits = model.forward(e.ids, [1, e.ids.length]);
      sum += causalLmLoss(logits, e.ids, [1, e.ids.length], IGNORE_INDEX, e.labels).item() * e.targets;
      n += e.targets;
    }
    return sum / n;
  });
}

function adapterDir(dir: string, name: string, r: FineTuneResult): string {
  const out = join(dir, name);
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'adapter_config.json'), r.config);
  writeFileSync(join(out, 'adapter_model.safetensors'), r.weights);
  return out;
}

test('fine-tuning in a worker: the loss falls; resumed from a checkpoint it gives the uninterrupted bytes, with the main thread running kernels meanwhile; the adapter loads in PEFT and the engine', async () => {
  await withTmp(async (dir) => {
    const m = modelFolder(dir);
    const opts = await options(m);
    const s = spec(m);

    // the main thread keeps the shared native thread pool busy while the worker trains
    const rng = new Rng(5);
    const a = Tensor.fromArray(rng.fillNormal(new Float32Array(96 * 128)), [96, 128]);
    const b = Tensor.fromArray(rng.fillNormal(new Float32Array(128 * 80)), [128, 80]);
    const want = F.matmul(a, b).toFloat32Array();
    const full = run(s);
    let settled = false;
    void full.result.finally(() => (settled = true)).catch(() => undefined);
    let products = 0;
    while (!settled) {
      const got = F.matmul(a, b).toFloat32Array();
      assert.ok(got.every((v, i) => Object.is(v, want[i])), 'a main-thread matmul during training equals the one before it');
      products++;
      await new Promise((r) => setImmediate(r));
    }
    const uninterrupted = await full.result;
    assert.ok(products > 5, `main thread ran ${products} products while the worker trained`);

    assert.equal(uninterrupted.steps, 12); // ceil(3 epochs × 8 examples / batch 2)
    assert.deepEqual(full.checkpoints.map((c) => c.step), [4, 8]);
    const steps = full.events.filter((e) => /^Step \d+\/12: training loss=\d+\.\d\d$/.test(e.message));
    assert.equal(steps.length, 12);
    assert.ok(full.events.some((e) => e.message === 'Checkpoint created at step 4'));
    assert.ok(uninterrupted.trainedTokens > 0 && Number.isFinite(uninterrupted.trainLoss));
    const config = JSON.parse(uninterrupted.config) as Record<string, unknown>;
    assert.equal(config.peft_type, 'VERA');
    assert.equal(config.save_projection, false);
    assert.equal(config.projection_prng_key, 11);
    assert.equal(config.r, 4);
    assert.deepEqual(config.target_modules, ['c_attn', 'c_fc']);
    assert.ok(!SafetensorsFile.fromBytes(uninterrupted.weights, 'w').keys().some((k) => k.includes('vera_A')), 'compact: no projections stored');

    // resumed from step 4, the run ends with the same bytes (no main-thread load this time)
    const resumed = run(s, full.checkpoints[0]);
    const again = await resumed.result;
    assert.ok(resumed.events.some((e) => e.message === 'Resumed from the checkpoint at step 4'));
    assert.equal(resumed.events.filter((e) => e.message.startsWith('Step ')).length, 8);
    assert.equal(again.config, uninterrupted.config);
    assert.ok(Buffer.from(again.weights).equals(Buffer.from(uninterrupted.weights)), 'resumed adapter bytes equal the uninterrupted ones');
    assert.equal(again.trainedTokens, uninterrupted.trainedTokens);
    // a checkpoint of another job is refused
    await rejectsVera(run({ ...s, seed: 8 }, full.checkpoints[0]).result, /fine-tuning checkpoint: it belongs to a job with other training data or hyperparameters/);

    // the adapter lowers the loss on its data and loads with PeftModel.fromPretrained
    const path = adapterDir(dir, 'trained', uninterrupted);
    const base = loadPretrained(m).model as Lm;
    const before = dataLoss(base, opts);
    const peft = PeftModel.fromPretrained(loadPretrained(m).model as Lm, path);
    const after = dataLoss(peft.model, opts);
    assert.ok(after < before - 0.2, `loss ${before.toFixed(3)} → ${after.toFixed(3)}`);

    // and through the engine, from bytes, with the server's VeRA setting: the tokens of the merged model
    const engine = new InferenceEngine(loadPretrained(m).model as Lm, { vera: { projectionPrngKey: 11, r: 4, targetModules: ['c_attn', 'c_fc'] } });
    engine.addAdapter('ft', { config: uninterrupted.config, weights: uninterrupted.weights });
    const prompt = parseTrainingData(CHAT_DATA, 'f', opts).examples[0];
    const promptIds = [...prompt.ids.slice(0, prompt.labels.findIndex((l) => l !== IGNORE_INDEX))];
    const got = await engine.generate({ promptIds, adapter: 'ft', maxNewTokens: 6, eosTokenIds: [] }).result;
    const merged = PeftModel.fromPretrained(loadPretrained(m).model as Lm, path).mergeAndUnload() as Lm;
    assert.deepEqual(got.tokens, generate(merged, promptIds, { maxNewTokens: 6, eosTokenIds: [] }).tokens);
    await engine.close();
  });
});

test('fine-tuning: cancel stops at the next step; LoRA trains and loads in the engine; bad data and a bad model come back as VeraErrors', async () => {
  await withTmp(async (dir) => {
    const m = modelFolder(dir);
    // cancelled when the first checkpoint arrives: the result rejects with the step reached
    const c = run(spec(m, { checkpointEvery: 2 }), null, (_c, cancel) => cancel());
    await assert.rejects(c.result, (e: unknown) => e instanceof FineTuneCancelledError && e.step >= 2 && e.step < 12);
    // cancelled before it starts
    const early = startFineTune(spec(m), null);
    early.cancel();
    await assert.rejects(early.result, (e: unknown) => e instanceof FineTuneCancelledError && e.step === 0);

    const lora = await run(spec(m, { method: 'lora', r: 2, targetModules: ['c_attn'], learningRate: 0.01, epochs: 1 })).result;
    const config = JSON.parse(lora.config) as Record<string, unknown>;
    assert.equal(config.peft_type, 'LORA');
    assert.equal(config.lora_alpha, 4);
    const engine = new InferenceEngine(loadPretrained(m).model as Lm, {});
    engine.addAdapter('lora', { config: lora.config, weights: lora.weights });
    const merged = PeftModel.fromPretrained(loadPretrained(m).model as Lm, adapterDir(dir, 'lora', lora)).mergeAndUnload() as Lm;
    const got = await engine.generate({ promptIds: [5, 6, 7], adapter: 'lora', maxNewTokens: 5, eosTokenIds: [] }).result;
    assert.deepEqual(got.tokens, generate(merged, [5, 6, 7], { maxNewTokens: 5, eosTokenIds: [] }).tokens);
    await engine.close();

    const badData = jsonl([{ messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }] }, { messages: [{ role: 'robot', content: 'x' }] }]);
    await rejectsVera(run(spec(m, { trainingData: badData, trainingFile: 'file-bad' })).result, /^training_file file-bad line 2: messages\[0\]\.role must be one of system, user, assistant$/);
    await rejectsVera(run(spec(join(dir, 'nowhere'))).result, /nowhere/);
    await rejectsVera(run(spec(m, { targetModules: ['no_such_layer'] })).result, /no_such_layer|matched no/);
    await rejectsVera(run(spec(m, { r: 0 })).result, /fine-tuning: r must be an integer ≥ 1, got 0/);
    // a checkpoint that is not one
    await assert.rejects(run(spec(m), { step: 4, bytes: new Uint8Array(16) }).result, (e: unknown) => e instanceof VeraError && e.message.includes('fine-tuning checkpoint'));
  });
});
