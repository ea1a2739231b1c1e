// Generation: greedy decoding against PyTorch's greedy tokens, the sampling filters against
// transformers-semantics references on fixed logits, seeded sampling, stop conditions, streaming,
// adapters and merged models; chat templates; `vera generate` end to end.
import '../src/backends/index.js';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Rng } from '../src/tensor/index.js';
import { VeraError } from '../src/io/errors.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { loadPretrained } from '../src/models/auto.js';
import { generate, generateAsync, generateStream, samplingProbabilities, sampleIndex, softmax, topKFilter, topPFilter, type CausalLM, type GenerationStep } from '../src/models/generation.js';
import { getPeftModel, veraConfig } from '../src/peft/index.js';
import { loadTokenizer } from '../src/data/tokenizer.js';
import { compileChatTemplate, loadChatTemplate } from '../src/data/chat-template.js';
import { withTmp } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIXTURES = path.join(ROOT, 'test/fixtures');
const DECODERS = path.join(FIXTURES, 'decoders');
const LLAMA = path.join(DECODERS, 'llama-gqa');
const BIN = path.join(ROOT, 'bin/vera.js');

const lm = (dir: string): CausalLM => loadPretrained(dir).model as unknown as CausalLM;

function ints(file: string, key: string): number[] {
  return Array.from(SafetensorsFile.open(file).getFloat32(key), (v) => Math.round(v));
}

function rejectsVera(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof VeraError, `expected a VeraError, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
}

describe('greedy generation against PyTorch', () => {
  const cases: [string, string, string][] = [
    ['gpt2-tiny', path.join(FIXTURES, 'gpt2-tiny'), path.join(DECODERS, 'gpt2-tiny.greedy.safetensors')],
    ...['llama-gqa', 'llama3-rope', 'qwen2', 'mistral', 'smollm-tied'].map((n): [string, string, string] => [n, path.join(DECODERS, n), path.join(DECODERS, `${n}.reference.safetensors`)]),
  ];
  for (const [name, dir, ref] of cases) {
    test(`${name}: the KV-cached greedy tokens are PyTorch's`, () => {
      const expected = ints(ref, 'greedy');
      // no eos: the reference decodes a fixed number of steps
      const result = generate(lm(dir), ints(ref, 'prompt'), { maxNewTokens: expected.length, eosTokenIds: [] });
      assert.deepEqual(result.tokens, expected);
      assert.equal(result.finishReason, 'length');
    });
  }
});

describe('sampling filters against transformers-semantics references', () => {
  const file = SafetensorsFile.open(path.join(DECODERS, 'sampling.safetensors'));
  const logits = file.getFloat32('logits');
  const vocab = 24;
  for (let c = 0; file.has(`case${c}_params`); c++) {
    const [temperature, topK, topP] = file.getFloat32(`case${c}_params`);
    test(`temperature ${temperature.toFixed(2)}, top-k ${topK}, top-p ${topP.toFixed(2)}`, () => {
      const expected = file.getFloat32(`case${c}_probs`);
      for (let row = 0; row < 4; row++) {
        const probs = samplingProbabilities(logits.subarray(row * vocab, (row + 1) * vocab), { temperature, topK, topP });
        for (let i = 0; i < vocab; i++) {
          const e = expected[row * vocab + i];
          assert.equal(probs[i] === 0, e === 0, `row ${row} token ${i}: kept ${probs[i] !== 0}, reference ${e !== 0}`);
          assert.ok(Math.abs(probs[i] - e) < 1e-6, `row ${row} token ${i}: ${probs[i]} vs ${e}`);
        }
      }
    });
  }

  test('top-k keeps ties with the k-th score; top-p always keeps the most likely token', () => {
    assert.deepEqual([...topKFilter(Float32Array.of(1, 3, 2, 3, 0), 2)], [-Infinity, 3, -Infinity, 3, -Infinity]);
    assert.deepEqual([...topKFilter(Float32Array.of(1, 2, 2, 0), 2)], [-Infinity, 2, 2, -Infinity]);
    assert.deepEqual([...topPFilter(Float32Array.of(0, 10, 0), 0.01)], [-Infinity, 10, -Infinity]);
    const p = softmax(Float32Array.of(Math.log(0.5), Math.log(0.3), Math.log(0.2)));
    // 0.2 + 0.3 = 0.5 ≤ 1 − 0.5: both dropped at top-p 0.5; at 0.6 the 0.3 stays
    assert.deepEqual([...topPFilter(Float32Array.from(p, Math.log), 0.5)].map(Number.isFinite), [true, false, false]);
    assert.deepEqual([...topPFilter(Float32Array.from(p, Math.log), 0.6)].map(Number.isFinite), [true, true, false]);
  });

  test('draws follow the distribution and a seed reproduces them', () => {
    const probs = samplingProbabilities(Float32Array.of(2, 1, 0, -1, -5), { topK: 3 });
    const counts = [0, 0, 0, 0, 0];
    const rng = new Rng(11);
    const n = 20000;
    for (let i = 0; i < n; i++) counts[sampleIndex(probs, rng)]++;
    assert.equal(counts[3] + counts[4], 0, 'filtered tokens are never drawn');
    for (let i = 0; i < 3; i++) assert.ok(Math.abs(counts[i] / n - probs[i]) < 0.015, `token ${i}: ${counts[i] / n} vs ${probs[i]}`);
  });
});

describe('generate', () => {
  const model = lm(LLAMA);
  const prompt = ints(path.join(DECODERS, 'llama-gqa.reference.safetensors'), 'prompt');

  test('sampling is reproducible with a seed and differs across seeds', () => {
    const opts = { maxNewTokens: 16, doSample: true, temperature: 1.2, topK: 0, eosTokenIds: [] };
    const a = generate(model, prompt, { ...opts, seed: 5 }).tokens;
    assert.deepEqual(generate(model, prompt, { ...opts, seed: 5 }).tokens, a);
    assert.deepEqual(generate(model, prompt, { ...opts, rng: new Rng(5) }).tokens, a);
    assert.notDeepEqual(generate(model, prompt, { ...opts, seed: 6 }).tokens, a);
  });

  test('eos ends generation (kept in tokens, not in text); stop strings end it after the token that completes them', async () => {
    const greedy = generate(model, prompt, { maxNewTokens: 12, eosTokenIds: [] }).tokens;
    const tokenizer = (await loadTokenizer(LLAMA))!;
    const decode = (ids: readonly number[]): string => tokenizer.decode(ids);
    const eos = generate(model, prompt, { maxNewTokens: 12, eosTokenIds: [greedy[4]], decode });
    assert.deepEqual(eos.tokens, greedy.slice(0, 5));
    assert.equal(eos.finishReason, 'eos');
    assert.equal(eos.text, decode(greedy.slice(0, 4)));
    const full = decode(greedy);
    const stop = full.slice(6, 8);
    const stopped = generate(model, prompt, { maxNewTokens: 12, eosTokenIds: [], stopStrings: ['not there', stop], decode });
    assert.equal(stopped.finishReason, 'stop_string');
    assert.ok(stopped.text!.includes(stop) && !decode(stopped.tokens.slice(0, -1)).includes(stop), 'stops at the completing token');
  });

  test('streaming yields each token with its text delta; the deltas make the text', async () => {
    const tokenizer = (await loadTokenizer(LLAMA))!;
    const seen: GenerationStep[] = [];
    const stream = generateStream(model, prompt, { maxNewTokens: 10, eosTokenIds: [], decode: (ids) => tokenizer.decode(ids), onToken: (s) => seen.push(s) });
    const yielded: GenerationStep[] = [];
    let next = stream.next();
    while (!next.done) {
      yielded.push(next.value);
      next = stream.next();
    }
    assert.deepEqual(seen, yielded);
    assert.deepEqual(yielded.map((s) => s.token), next.value.tokens);
    assert.equal(yielded.map((s) => s.text).join(''), next.value.text);
    const viaAsync: GenerationStep[] = [];
    for await (const step of generateAsync(model, prompt, { maxNewTokens: 10, eosTokenIds: [], decode: (ids) => tokenizer.decode(ids) })) viaAsync.push(step);
    assert.deepEqual(viaAsync, yielded);
  });

  test('a delta is held back while the text ends inside a multi-byte character', () => {
    const greedy = generate(model, prompt, { maxNewTokens: 3, eosTokenIds: [] }).tokens;
    // a byte-level decoder shows an incomplete UTF-8 sequence as U+FFFD until its last byte arrives
    const decode = (ids: readonly number[]): string => ids.map((id, i) => (id !== greedy[1] ? 'x' : i === ids.length - 1 ? '\uFFFD' : 'é')).join('');
    const steps = [...generateStream(model, prompt, { maxNewTokens: 3, eosTokenIds: [], decode })];
    assert.deepEqual(steps.map((s) => s.text), ['x', '', 'éx']);
  });

  test('a PeftModel generates with its adapter; the merged model generates the same', () => {
    const base = lm(LLAMA);
    const plain = generate(base, prompt, { maxNewTokens: 10, eosTokenIds: [] }).tokens;
    const peft = getPeftModel(base as never, veraConfig({ targetModules: ['q_proj', 'v_proj', 'down_proj'], r: 8 }));
    for (const [, t] of peft.trainableParameters()) t.copyFrom(new Rng(9).fillNormal(new Float32Array(t.size), 0, 1));
    const adapted = generate(peft as unknown as { model: CausalLM }, prompt, { maxNewTokens: 10, eosTokenIds: [] }).tokens;
    assert.notDeepEqual(adapted, plain, 'the adapter changes what is generated');
    const merged = peft.mergeAndUnload() as unknown as CausalLM;
    assert.deepEqual(generate(merged, prompt, { maxNewTokens: 10, eosTokenIds: [] }).tokens, adapted);
  });

  test('the model is put in eval mode while generating and restored after', () => {
    const gpt2 = lm(path.join(FIXTURES, 'gpt2-tiny'));
    gpt2.train(true);
    const tokens = generate(gpt2, [15, 72, 69, 0, 80, 65, 83], { maxNewTokens: 12, eosTokenIds: [] }).tokens;
    assert.deepEqual(tokens, ints(path.join(DECODERS, 'gpt2-tiny.greedy.safetensors'), 'greedy'), 'dropout off');
    assert.equal(gpt2.training, true);
  });

  test('bad options and a prompt past the context are one-line errors', () => {
    const gpt2 = lm(path.join(FIXTURES, 'gpt2-tiny'));
    rejectsVera(() => generate(gpt2, [1, 2, 3], { maxNewTokens: 62 }), /^generate: prompt of 3 tokens \+ 62 new tokens exceeds the model's context of 64 positions$/);
    rejectsVera(() => generate(gpt2, [], {}), /the prompt is empty/);
    rejectsVera(() => generate(gpt2, [1], { topP: 0 }), /topP must be in \(0, 1\]/);
    rejectsVera(() => generate(gpt2, [1], { temperature: 0, doSample: true }), /temperature must be a number > 0/);
    rejectsVera(() => generate(gpt2, [1], { stopStrings: ['x'] }), /stopStrings need a decode function/);
  });
});

describe('chat templates', () => {
  test('the model folder\'s template renders with bos, roles and the generation prompt', () => {
    const template = loadChatTemplate(LLAMA);
    assert.equal(template.bosToken, '<s>');
    assert.equal(template.eosToken, '<|im_end|>');
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: '  Hi there \n' },
    ];
    assert.equal(template.render(messages), '<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n');
    assert.equal(template.render(messages, { addGenerationPrompt: false }), '<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n');
  });

  test('a Llama 2 style template (loops, conditions, raise_exception) renders as transformers does', () => {
    const llama2 =
      "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}" +
      "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
      "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}" +
      "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
    const t = compileChatTemplate(llama2, { bos_token: '<s>', eos_token: '</s>' }, 'tokenizer_config.json');
    const out = t.render([
      { role: 'system', content: 'S' },
      { role: 'user', content: 'Q1' },
      { role: 'assistant', content: 'A1' },
      { role: 'user', content: 'Q2' },
    ]);
    assert.equal(out, '<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nQ1 [/INST] A1 </s><s>[INST] Q2 [/INST]');
    rejectsVera(() => t.render([{ role: 'assistant', content: 'x' }]), /^tokenizer_config\.json: chat_template failed to render: .*Conversation roles must alternate/);
  });

  test('a folder without a template, and a template that does not parse, are one-line errors', () =>
    withTmp((dir) => {
      fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>' }));
      rejectsVera(() => loadChatTemplate(dir), /tokenizer_config\.json: has no "chat_template"/);
      fs.writeFileSync(path.join(dir, 'chat_template.jinja'), '{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}');
      assert.equal(loadChatTemplate(dir).render([{ role: 'user', content: 'x' }]), '<s>x');
      fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: '{% for m in messages %}' }));
      rejectsVera(() => loadChatTemplate(dir), /tokenizer_config\.json: chat_template does not parse/);
    }));

  test('special tokens only in special_tokens_map.json reach the template (as transformers reads both)', () =>
    withTmp((dir) => {
      fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: '{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}' }));
      fs.writeFileSync(path.join(dir, 'special_tokens_map.json'), JSON.stringify({ bos_token: { content: '<s>' }, eos_token: '</s>' }));
      const t = loadChatTemplate(dir);
      assert.equal(t.eosToken, '</s>');
      assert.equal(t.render([{ role: 'user', content: 'x' }]), '<s>x</s>');
    }));
});

describe('vera generate', () => {
  const vera = (args: string[]): { code: number | null; stdout: string; stderr: string } => {
    const r = spawnSync(process.execPath, [BIN, 'generate', ...args], { encoding: 'utf8' });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  test('greedy: streams the text the library generates for the tokenized prompt', async () => {
    const tokenizer = (await loadTokenizer(LLAMA))!;
    const prompt = tokenizer.encode('The a');
    assert.equal(prompt[0], 101, 'the tokenizer adds <s>');
    const expected = generate(lm(LLAMA), prompt, { maxNewTokens: 12, decode: (ids) => tokenizer.decode(ids) });
    const json = vera(['--model', LLAMA, '--prompt', 'The a', '--max-new-tokens', '12', '--json']);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), { prompt_tokens: prompt, tokens: expected.tokens, text: expected.text, finish_reason: expected.finishReason });
    const streamed = vera(['--model', LLAMA, '--prompt', 'The a', '--max-new-tokens', '12']);
    assert.equal(streamed.code, 0, streamed.stderr);
    assert.equal(streamed.stdout, `${expected.text}\n`);
  });

  test('--num-beams, --length-penalty, --no-repeat-ngram-size: the library beam search', async () => {
    const tokenizer = (await loadTokenizer(LLAMA))!;
    const prompt = tokenizer.encode('The a');
    const opts = { maxNewTokens: 10, numBeams: 3, lengthPenalty: 0.9, noRepeatNgramSize: 2, decode: (ids: readonly number[]) => tokenizer.decode(ids) };
    const expected = generate(lm(LLAMA), prompt, opts);
    const json = vera(['--model', LLAMA, '--prompt', 'The a', '--max-new-tokens', '10', '--num-beams', '3', '--length-penalty', '0.9', '--no-repeat-ngram-size', '2', '--json']);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout).tokens, expected.tokens);
    assert.notDeepEqual(generate(lm(LLAMA), prompt, { ...opts, noRepeatNgramSize: 0 }).tokens, expected.tokens, 'the n-gram rule matters for this prompt');
    const bad = vera(['--model', LLAMA, '--prompt', 'x', '--num-beams', '2', '--temperature', '0.7']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--num-beams > 1 is beam search/);
  });

  test('--chat formats the prompt with the template (one bos) and stops at the turn end; sampling flags are seeded', async () => {
    const tokenizer = (await loadTokenizer(LLAMA))!;
    const text = '<s><|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n';
    const r = vera(['--model', LLAMA, '--prompt', 'hello', '--chat', '--json', '--temperature', '0.9', '--top-p', '0.95', '--seed', '4']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { prompt_tokens: number[]; tokens: number[] };
    assert.deepEqual(out.prompt_tokens, tokenizer.encode(text).slice(1));
    assert.equal(out.prompt_tokens.filter((id) => id === 101).length, 1);
    const again = vera(['--model', LLAMA, '--prompt', 'hello', '--chat', '--json', '--temperature', '0.9', '--top-p', '0.95', '--seed', '4']);
    assert.equal(again.stdout, r.stdout);
    const expected = generate(lm(LLAMA), out.prompt_tokens, { maxNewTokens: 64, doSample: true, temperature: 0.9, topP: 0.95, seed: 4, eosTokenIds: [104] });
    assert.deepEqual(out.tokens, expected.tokens);
  });

  test('--stop ends the text at the completing token; --adapter applies an adapter, as its vera merge does', () =>
    withTmp((dir) => {
      const base = vera(['--model', LLAMA, '--prompt', 'The a', '--max-new-tokens', '12', '--json']);
      const text = (JSON.parse(base.stdout) as { text: string }).text;
      const stop = vera(['--model', LLAMA, '--prompt', 'The a', '--max-new-tokens', '12', '--json', '--stop', 'zzz', text.slice(3, 5)]);
      const stopped = JSON.parse(stop.stdout) as { text: string; finish_reason: string };
      assert.equal(stopped.finish_reason, 'stop_string');
      assert.ok(stopped.text.length < text.length && text.startsWith(stopped.text));
      const peft = getPeftModel(loadPretrained(LLAMA).model, veraConfig({ targetModules: ['q_proj', 'v_proj'], r: 4 }));
      for (const [, t] of peft.trainableParameters()) t.copyFrom(new Rng(1).fillNormal(new Float32Array(t.size), 0, 2));
      peft.saveAdapter(path.join(dir, 'adapter'));
      const adapted = vera(['--model', LLAMA, '--adapter', path.join(dir, 'adapter'), '--prompt', 'The a', '--max-new-tokens', '12', '--json']);
      assert.equal(adapted.code, 0, adapted.stderr);
      assert.notEqual((JSON.parse(adapted.stdout) as { text: string }).text, text);
      // vera merge folds it in (tokenizer files travel along); the merged folder generates the same
      const merge = spawnSync(process.execPath, [BIN, 'merge', '--model', LLAMA, '--adapter', path.join(dir, 'adapter'), '--out', path.join(dir, 'merged')], { encoding: 'utf8' });
      assert.equal(merge.status, 0, merge.stderr);
      const merged = vera(['--model', path.join(dir, 'merged'), '--prompt', 'The a', '--max-new-tokens', '12', '--json']);
      assert.equal(merged.code, 0, merged.stderr);
      assert.equal(merged.stdout, adapted.stdout);
    }));

  test('bad flags and folders end with one line and a non-zero exit', () => {
    const cases: [string[], RegExp][] = [
      [['--model', LLAMA, '--prompt', 'x', '--top-k', '3', '--temperature', '0'], /^vera: --top-k samples, but --temperature 0 asks for greedy decoding/],
      [['--model', LLAMA, '--prompt', 'x', '--top-p', '0'], /--top-p <p>' argument '0' is invalid\. must be in \(0, 1\]/],
      [['--model', LLAMA, '--prompt', 'x', '--temperature', '-1'], /--temperature <t>' argument '-1' is invalid/],
      [['--model', LLAMA, '--prompt', 'x', '--stop', ''], /^vera: --stop: a stop string must not be empty$/],
      [['--model', path.join(FIXTURES, 'gpt2-tiny'), '--prompt', 'x'], /gpt2-tiny: no tokenizer\.json/],
      [['--model', path.join(DECODERS, 'qwen2'), '--prompt', 'x', '--chat'], /qwen2: no tokenizer\.json/],
      [['--model', path.join(ROOT, 'nope'), '--prompt', 'x'], /nope\/config\.json/],
      [['--model', LLAMA], /give --prompt TEXT or --prompts FILE.jsonl/],
    ];
    for (const [args, pattern] of cases) {
      const r = vera(args);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.equal(r.stdout, '', 'no partial output');
      assert.match(r.stderr.trim(), pattern);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });
});
