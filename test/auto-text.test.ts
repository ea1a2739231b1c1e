// The task-level loaders (AutoModelFor…, AutoTokenizer) and text in / text out (TextGenerator,
// pipeline) on the tiny fixtures, used through the package entry exactly as a user would: no casts,
// so the types are checked by compiling this file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { readFileSync } from 'node:fs';
import {
  AdamW, AutoModelForCausalLM, AutoModelForImageClassification, AutoModelForSequenceClassification, AutoTokenizer,
  GPT2LMHeadModel, LlamaForCausalLM, Rng, Tensor, TextGenerator, causalLmTask, evaluateCausalLm, generate,
  getPeftModel, noGrad, perplexity, pipeline, train, veraConfig,
  type CausalLMModel, type GenerationOptions, type TextGenerationOptions,
} from '../src/index.js';
import { assertVeraError, rejectsVera, withTmp } from './helpers.js';

const FIXTURES = new URL('../../test/fixtures', import.meta.url).pathname;
const GPT2 = path.join(FIXTURES, 'gpt2-tiny');
const LLAMA = path.join(FIXTURES, 'decoders', 'llama-gqa'); // has tokenizer.json and a chat template
const BERT = path.join(FIXTURES, 'encoders', 'bert-tiny-cls');
const ROBERTA = path.join(FIXTURES, 'encoders', 'roberta-tiny-cls');
const VIT = path.join(FIXTURES, 'encoders', 'vit-tiny-cls');
const GPT2_TOKENIZER = path.join(FIXTURES, 'tokenizers', 'gpt2'); // no chat template; a vocabulary far beyond the tiny models'

const quiet = { log: (): void => {} };

test('AutoModelForCausalLM loads GPT-2 and the Llama family as CausalLMModel; fromConfig builds one', () => {
  const gpt2: CausalLMModel = AutoModelForCausalLM.fromPretrained(GPT2);
  assert.ok(gpt2 instanceof GPT2LMHeadModel);
  assert.equal(gpt2.modelType, 'gpt2');
  assert.equal(gpt2.training, false, 'loaded in eval mode');
  const llama = AutoModelForCausalLM.fromPretrained(LLAMA);
  assert.ok(llama instanceof LlamaForCausalLM);
  assert.equal(llama.modelType, 'llama');
  // forward takes token ids directly (the union of every family made it Int32Array & Tensor)
  const logits = noGrad(() => llama.forward(Int32Array.of(1, 2, 3), [1, 3]));
  assert.deepEqual(logits.shape, [1, 3, llama.config.vocabSize]);

  const json: Record<string, unknown> = JSON.parse(readFileSync(path.join(GPT2, 'config.json'), 'utf8'));
  const a = AutoModelForCausalLM.fromConfig(json, { rng: new Rng(7) });
  const b = AutoModelForCausalLM.fromConfig(json, { rng: new Rng(7) });
  assert.equal(a.modelType, 'gpt2');
  assert.deepEqual(a.namedParameters()[0][1].toFloat32Array(), b.namedParameters()[0][1].toFloat32Array(), 'seeded initialization');
});

test('the Auto loaders refuse another task\'s folder in one line naming config.json and the model_type', () => {
  assertVeraError(() => AutoModelForCausalLM.fromPretrained(BERT), [path.join(BERT, 'config.json'), 'model_type "bert" is not a causal language model', 'use AutoModelForSequenceClassification']);
  assertVeraError(() => AutoModelForSequenceClassification.fromPretrained(GPT2), [path.join(GPT2, 'config.json'), 'model_type "gpt2" is not a sequence classifier', 'use AutoModelForCausalLM']);
  assertVeraError(() => AutoModelForImageClassification.fromPretrained(ROBERTA), [path.join(ROBERTA, 'config.json'), 'model_type "roberta" is not an image classifier']);
  assertVeraError(() => AutoModelForCausalLM.fromConfig({ model_type: 't5' }), ['config: unsupported model_type "t5"', 'gpt2, llama, mistral, qwen2']);
  assertVeraError(() => AutoModelForCausalLM.fromConfig({ n_layer: 2 }), ['config: field "model_type" is required']);
  assertVeraError(() => AutoModelForSequenceClassification.fromPretrained(BERT, { labels: ['a', 'a'] }), ['labels: "a" is given twice']);
});

test('AutoModelForSequenceClassification / ImageClassification: the head\'s labels, getPeftModel with no casts', () => {
  const bert = AutoModelForSequenceClassification.fromPretrained(BERT);
  assert.deepEqual(bert.config.id2label, ['neg', 'neu', 'pos']);
  const lines: string[] = [];
  const five = AutoModelForSequenceClassification.fromPretrained(BERT, { labels: ['a', 'b', 'c', 'd', 'e'], log: (l) => lines.push(l) });
  assert.equal(five.config.numLabels, 5);
  assert.match(lines.join('\n'), /newly initialized .*classifier\.weight \(stored there as \[3, 16\]\)/);
  const roberta = AutoModelForSequenceClassification.fromPretrained(ROBERTA, quiet);
  assert.equal(roberta.modelType, 'roberta');
  const peft = getPeftModel(five, veraConfig({ r: 4, targetModules: ['query', 'value'], modulesToSave: ['classifier'] }));
  const logits = noGrad(() => peft.model.forward(Int32Array.of(2, 5, 7, 3), [1, 4], { attentionMask: Float32Array.of(1, 1, 1, 0) }));
  assert.deepEqual(logits.shape, [1, 5]);

  const vit = AutoModelForImageClassification.fromPretrained(VIT, quiet);
  assert.equal(vit.modelType, 'vit');
  const rng = new Rng(1);
  const pixels = Tensor.fromArray(Float32Array.from({ length: 2 * 64 }, () => rng.random()), [2, 1, 8, 8]);
  assert.deepEqual(noGrad(() => getPeftModel(vit, veraConfig({ r: 4, targetModules: ['query', 'value'] })).model.forward(pixels)).shape, [2, 10]);
});

test('AutoTokenizer: the folder\'s tokenizer with its chat template; a missing tokenizer.json rejects in one line', async () => {
  const tok = await AutoTokenizer.fromPretrained(LLAMA);
  assert.ok(tok.chatTemplate !== null);
  assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'hi' }]), '<s><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n');
  assert.equal(tok.decode(tok.encode('Dear Bob,'), { skipSpecialTokens: true }), 'Dear Bob,');
  const plain = await AutoTokenizer.fromPretrained(GPT2_TOKENIZER);
  assert.equal(plain.chatTemplate, null);
  assert.throws(() => plain.applyChatTemplate([{ role: 'user', content: 'hi' }]), /has no chat template/);
  await rejectsVera(AutoTokenizer.fromPretrained(GPT2), /gpt2-tiny\/tokenizer\.json: not found/);
  // from parsed contents, the config's chat_template included
  const json: unknown = JSON.parse(readFileSync(path.join(LLAMA, 'tokenizer.json'), 'utf8'));
  const config: Record<string, unknown> = JSON.parse(readFileSync(path.join(LLAMA, 'tokenizer_config.json'), 'utf8'));
  const again = await AutoTokenizer.fromJson(json, config);
  assert.deepEqual(again.encode('Dear Bob,'), tok.encode('Dear Bob,'));
  assert.equal(again.applyChatTemplate([{ role: 'user', content: 'hi' }]), tok.applyChatTemplate([{ role: 'user', content: 'hi' }]));
});

test('TextGenerator: the same tokens and text as generate() with the same options', async () => {
  const model = AutoModelForCausalLM.fromPretrained(LLAMA);
  const tok = await AutoTokenizer.fromPretrained(LLAMA);
  const generator = pipeline('text-generation', model, tok);
  const prompt = 'Dear Bob,';
  const ids = tok.encode(prompt);
  const decode = (t: readonly number[]): string => tok.decode(t);
  const greedy = generate(model, ids, { maxNewTokens: 12, decode });
  const cases: TextGenerationOptions[] = [
    { maxNewTokens: 12 },
    { maxNewTokens: 12, doSample: true, temperature: 0.8, topK: 20, topP: 0.9, seed: 5 },
    { maxNewTokens: 12, stopStrings: [(greedy.text ?? '').slice(4, 6)] },
    { maxNewTokens: 12, eosTokenIds: [greedy.tokens[3]] },
    { maxNewTokens: 6, numBeams: 3 },
  ];
  const finishes = new Set<string>();
  for (const opts of cases) {
    const expected = generate(model, ids, { ...opts, decode } satisfies GenerationOptions);
    const out = await generator.generate(prompt, opts);
    assert.deepEqual(out.tokens, expected.tokens, JSON.stringify(opts));
    assert.equal(out.text, expected.text);
    assert.equal(out.finishReason, expected.finishReason);
    assert.deepEqual(out.promptTokens, ids);
    assert.equal(out.prompt, prompt);
    finishes.add(out.finishReason);
  }
  assert.deepEqual([...finishes].sort(), ['eos', 'length', 'stop_string'], 'each way of ending is covered');
  // defaults given at construction apply, a call's own options win
  const sampled = new TextGenerator(model, tok, { defaults: { maxNewTokens: 12, doSample: true, seed: 5, temperature: 0.8, topK: 20, topP: 0.9 } });
  assert.deepEqual((await sampled.generate(prompt)).tokens, (await generator.generate(prompt, cases[1])).tokens);
  assert.deepEqual((await sampled.generate(prompt, { doSample: false })).tokens, greedy.tokens);
});

test('TextGenerator: a batch of prompts and conversations, each as alone; chat through the folder\'s template', async () => {
  const model = AutoModelForCausalLM.fromPretrained(LLAMA);
  const tok = await AutoTokenizer.fromPretrained(LLAMA);
  const generator = pipeline('text-generation', model, tok);
  const opts = { maxNewTokens: 8, doSample: true, seed: 3 };
  const chat = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }];
  const batch = await generator.generate(['Dear Bob,', 'Hello', chat], opts);
  assert.equal(batch.length, 3);
  assert.deepEqual(batch[0], await generator.generate('Dear Bob,', opts));
  assert.deepEqual(batch[1], await generator.generate('Hello', opts));
  assert.deepEqual(batch[2], await generator.generate(chat, opts));
  assert.equal(batch[2].prompt, tok.applyChatTemplate(chat));
  // the rendered chat is encoded without the tokenizer's special tokens: the template wrote <s>
  assert.deepEqual(batch[2].promptTokens, tok.encode(batch[2].prompt, { addSpecialTokens: false }));
  // a text with chat: true is one user message
  assert.deepEqual(await generator.generate('hi', { ...opts, chat: true }), await generator.generate([{ role: 'user', content: 'hi' }], opts));
  assert.deepEqual(await generator.generate([], opts).catch((e: Error) => e.message), 'TextGenerator: the input is an empty list (give a prompt, a conversation, or a list of them)');
});

test('TextGenerator.stream: text deltas that concatenate to the final text', async () => {
  const model = AutoModelForCausalLM.fromPretrained(LLAMA);
  const tok = await AutoTokenizer.fromPretrained(LLAMA);
  const generator = pipeline('text-generation', model, tok);
  for (const opts of [{ maxNewTokens: 16 }, { maxNewTokens: 16, doSample: true, seed: 9, skipSpecialTokens: true }]) {
    const deltas: string[] = [];
    for await (const delta of generator.stream('Once upon', opts)) deltas.push(delta);
    const whole = await generator.generate('Once upon', opts);
    assert.ok(deltas.length > 1 && deltas.every((d) => d !== ''));
    assert.equal(deltas.join(''), whole.text);
    // the iterator's return value is the whole output
    const it = generator.stream('Once upon', opts);
    let r = await it.next();
    while (!r.done) r = await it.next();
    assert.deepEqual(r.value, whole);
  }
});

test('TextGenerator with a PeftModel: the adapter applies; disabled it is the base', async () => {
  const tok = await AutoTokenizer.fromPretrained(LLAMA);
  const prompt = 'Dear Bob,';
  const opts = { maxNewTokens: 12 };
  const base = await pipeline('text-generation', AutoModelForCausalLM.fromPretrained(LLAMA), tok).generate(prompt, opts);

  const peft = getPeftModel(AutoModelForCausalLM.fromPretrained(LLAMA), veraConfig({ r: 8 })); // Llama's default targets: q_proj, v_proj
  const generator = pipeline('text-generation', peft, tok);
  assert.deepEqual(await generator.generate(prompt, opts), base, 'λb starts at zero: the fresh adapter changes nothing');
  const rng = new Rng(0);
  for (const [, t] of peft.trainableParameters()) t.copyFrom(Float32Array.from({ length: t.size }, () => 4 * (rng.random() - 0.5)));
  const adapted = await generator.generate(prompt, opts);
  assert.notDeepEqual(adapted.tokens, base.tokens);
  assert.deepEqual(generate(peft, adapted.promptTokens, opts).tokens, adapted.tokens, 'generate() takes the PeftModel too');
  peft.disableAdapters();
  assert.deepEqual(await generator.generate(prompt, opts), base);
  peft.enableAdapters();
  assert.deepEqual(await generator.generate(prompt, opts), adapted);

  // the evaluation helpers take the PeftModel as it is
  const ids = Int32Array.from(tok.encode('Dear Bob, hello world'));
  const withAdapter = perplexity(peft, ids);
  const alone = peft.withAdaptersDisabled(() => perplexity(peft, ids));
  assert.notEqual(withAdapter.nll, alone.nll);
  assert.ok(Math.abs(evaluateCausalLm(peft, [ids]).loss - withAdapter.nll) < 1e-5);

  // saved and loaded back by TextGenerator.fromPretrained
  await withTmp(async (dir) => {
    peft.saveAdapter(dir);
    const fromFolder = await TextGenerator.fromPretrained(LLAMA, { adapter: dir });
    assert.deepEqual(await fromFolder.generate(prompt, opts), adapted);
  });
});

test('causalLmTask and train() take a PeftModel of an Auto-loaded model', () => {
  const model = AutoModelForCausalLM.fromPretrained(GPT2);
  const peft = getPeftModel(model, veraConfig({ r: 8 }));
  const sequences = [Int32Array.of(5, 6, 7, 8, 9), Int32Array.of(9, 8, 7), Int32Array.of(1, 2, 3, 4)];
  const before = evaluateCausalLm(peft, sequences).loss;
  model.train();
  const params = peft.trainableParameters();
  const result = train(params, new AdamW([{ params: params.map(([, t]) => t), lr: 5e-2 }]), causalLmTask(peft, sequences, 3), { steps: 6, progress: false });
  assert.equal(result.steps, 6);
  assert.ok(evaluateCausalLm(peft, sequences).loss < before);
});

test('TextGenerator refuses chat without a template and a tokenizer whose ids the model lacks, in one line', async () => {
  const model = AutoModelForCausalLM.fromPretrained(GPT2);
  const tok = await AutoTokenizer.fromPretrained(GPT2_TOKENIZER); // 50257 ids, the tiny GPT-2 has 101
  const generator = pipeline('text-generation', model, tok);
  await rejectsVera(generator.generate([{ role: 'user', content: 'hi' }]), /chat input needs a chat template/);
  await rejectsVera(generator.generate('Hello world'), /gave token id \d+, outside the model's vocabulary \[0, 101\)/);
});
