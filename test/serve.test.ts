// `vera serve` as a user runs it: a real process on loopback, driven by the official `openai` npm
// client (and by fetch where the client has no call: adapter uploads, malformed bodies). Greedy
// answers are checked against the adapter merged into the model and decoded alone in this process.
import '../src/backends/index.js';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { generate } from '../src/models/index.js';
import { PeftModel, loraConfig, veraConfig } from '../src/peft/index.js';
import { loadTokenizer, type Tokenizer } from '../src/data/tokenizer.js';
import { SafetensorsFile, serializeSafetensors } from '../src/io/safetensors.js';
import { api, createKey, load, makeAdapter, modelFolder, putAdapter, serve, type Lm, type Served } from './serve-helpers.js';

const R = 4;
let dir: string;
let modelDir: string;
let store: string;
let server: Served;
let aliceKey: string;
let bobKey: string;
let tokenizer: Tokenizer;
const adapters: Record<string, string> = {};
const files = (name: string): { config: Uint8Array; weights: Uint8Array } => ({
  config: readFileSync(join(adapters[name], 'adapter_config.json')),
  weights: readFileSync(join(adapters[name], 'adapter_model.safetensors')),
});

/** Greedy decoding of `prompt` alone with the adapter merged: the text the server must answer. */
function solo(adapter: string | null, prompt: number[], maxNewTokens: number): { text: string; tokens: number[]; finish: 'stop' | 'length' } {
  let model: Lm = load(modelDir);
  if (adapter !== null) model = PeftModel.fromPretrained(model, adapters[adapter]).mergeAndUnload() as Lm;
  const { tokens } = generate(model, prompt, { maxNewTokens, eosTokenIds: [100] });
  const eos = tokens[tokens.length - 1] === 100;
  const textTokens = eos ? tokens.slice(0, -1) : tokens;
  return { text: textTokens.length ? tokenizer.decode(textTokens, { skipSpecialTokens: true }) : '', tokens, finish: eos ? 'stop' : 'length' };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vera-serve-'));
  modelDir = modelFolder(dir);
  tokenizer = (await loadTokenizer(modelDir))!;
  store = join(dir, 'store.db');
  const vera = { targetModules: ['c_attn'], r: R, initWeights: false, saveProjection: false };
  adapters['alice-a'] = makeAdapter(modelDir, dir, 'alice-a', veraConfig(vera), 11);
  adapters['alice-b'] = makeAdapter(modelDir, dir, 'alice-b', veraConfig({ ...vera, saveProjection: true }), 12);
  adapters['bob-a'] = makeAdapter(modelDir, dir, 'bob-a', veraConfig(vera), 13);
  adapters['bob-lora'] = makeAdapter(modelDir, dir, 'bob-lora', loraConfig({ targetModules: ['c_attn', 'c_fc'], r: 2, loraAlpha: 4 }), 14);
  aliceKey = await createKey(store, 'alice');
  bobKey = await createKey(store, 'bob');
  server = await serve(['--model', modelDir, '--store', store, '--vera-r', String(R), '--vera-target-modules', 'c_attn', '--max-tokens', '24', '--quiet']);
  for (const [id, key] of [['alice-a', aliceKey], ['alice-b', aliceKey], ['bob-a', bobKey], ['bob-lora', bobKey]] as const) {
    const r = await putAdapter(server.url, key, id, files(id));
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
});

after(async () => {
  if (server) assert.equal(await server.stop(), 0, server.stderr());
  rmSync(dir, { recursive: true, force: true });
});

test('GET /v1/models lists the base model and only the caller\'s adapters', async () => {
  const ids = async (key: string): Promise<string[]> => {
    const out: string[] = [];
    for await (const m of server.client(key).models.list()) out.push(m.id);
    return out.sort();
  };
  assert.deepEqual(await ids(aliceKey), ['alice-a', 'alice-b', 'tiny']);
  assert.deepEqual(await ids(bobKey), ['bob-a', 'bob-lora', 'tiny']);
  const m = await server.client(aliceKey).models.retrieve('alice-a');
  assert.equal(m.id, 'alice-a');
  await assert.rejects(server.client(bobKey).models.retrieve('alice-a'), (e: unknown) => e instanceof OpenAI.NotFoundError);
});

test('completions: model = adapter id gives what that adapter alone gives (greedy), the base model name gives the base', async () => {
  const client = server.client(bobKey);
  const prompt = 'the hall';
  const ids = tokenizer.encode(prompt);
  for (const model of ['bob-a', 'bob-lora', 'tiny']) {
    const want = solo(model === 'tiny' ? null : model, ids, 12);
    const r = await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.model, model);
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].text, want.text, model);
    assert.equal(r.choices[0].finish_reason, want.finish);
    assert.deepEqual(r.usage, { prompt_tokens: ids.length, completion_tokens: want.tokens.length, total_tokens: ids.length + want.tokens.length });
  }
  // token-id prompts, several at once, each its own choice
  const r = await client.completions.create({ model: 'bob-a', prompt: [[5, 6, 7], [9, 1]], max_tokens: 6, temperature: 0 });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
  assert.equal(r.choices[0].text, solo('bob-a', [5, 6, 7], 6).text);
  assert.equal(r.choices[1].text, solo('bob-a', [9, 1], 6).text);
});

test('chat completions: the plain chat format of a model without a template, streamed and not, with usage', async () => {
  const client = server.client(aliceKey);
  const messages = [{ role: 'system' as const, content: 'be brief' }, { role: 'user' as const, content: 'hi there' }];
  const ids = tokenizer.encode('system: be brief\nuser: hi there\nassistant:', { addSpecialTokens: false });
  const want = solo('alice-b', ids, 10);
  const whole = await client.chat.completions.create({ model: 'alice-b', messages, max_tokens: 10, temperature: 0 });
  assert.equal(whole.object, 'chat.completion');
  assert.equal(whole.choices[0].message.role, 'assistant');
  assert.equal(whole.choices[0].message.content, want.text);
  assert.equal(whole.choices[0].finish_reason, want.finish);
  assert.equal(whole.usage?.prompt_tokens, ids.length);
  const stream = await client.chat.completions.create({ model: 'alice-b', messages, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish: string | null = null;
  let usageSeen: OpenAI.CompletionUsage | null = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usageSeen = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(chunks > 2, 'streamed in several chunks');
  assert.equal(text, want.text);
  assert.equal(finish, want.finish);
  assert.deepEqual(usageSeen, { prompt_tokens: ids.length, completion_tokens: want.tokens.length, total_tokens: ids.length + want.tokens.length });
});

test('concurrent requests for different adapters and tenants each get their own adapter\'s answer', async () => {
  const jobs: { key: string; model: string; prompt: number[] }[] = [];
  const models = [['alice-a', aliceKey], ['alice-b', aliceKey], ['bob-a', bobKey], ['bob-lora', bobKey], ['tiny', aliceKey]] as const;
  for (let i = 0; i < 15; i++) {
    const [model, key] = models[i % models.length];
    jobs.push({ key, model, prompt: [1 + (i % 7), 2 + (i % 5), 3 + i] });
  }
  const got = await Promise.all(jobs.map(async (j, i) => {
    const client = server.client(j.key);
    if (i % 2 === 0) return (await client.completions.create({ model: j.model, prompt: j.prompt, max_tokens: 8, temperature: 0 })).choices[0].text;
    let text = '';
    for await (const c of await client.completions.create({ model: j.model, prompt: j.prompt, max_tokens: 8, temperature: 0, stream: true })) text += c.choices[0]?.text ?? '';
    return text;
  }));
  jobs.forEach((j, i) => assert.equal(got[i], solo(j.model === 'tiny' ? null : j.model, j.prompt, 8).text, `request ${i} (${j.model})`));
});

test('sampling: a seed repeats, stop strings end the text before them', async () => {
  const client = server.client(aliceKey);
  const a = await client.completions.create({ model: 'alice-a', prompt: 'the', max_tokens: 12, temperature: 0.9, top_p: 0.9, seed: 7 });
  const b = await client.completions.create({ model: 'alice-a', prompt: 'the', max_tokens: 12, temperature: 0.9, top_p: 0.9, seed: 7 });
  assert.equal(a.choices[0].text, b.choices[0].text);
  const full = solo('alice-a', tokenizer.encode('the hall'), 20).text;
  const stop = full.slice(3, 5);
  if (stop.length === 2) {
    const r = await client.completions.create({ model: 'alice-a', prompt: 'the hall', max_tokens: 20, temperature: 0, stop: [stop] });
    assert.equal(r.choices[0].text, full.slice(0, full.indexOf(stop)));
    assert.equal(r.choices[0].finish_reason, 'stop');
  }
});

test('a tenant cannot see, use or delete another tenant\'s adapter: 404 exactly as for an id that does not exist', async () => {
  const bob = server.client(bobKey);
  const errorOf = async (p: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> => {
    try {
      await p;
    } catch (e) {
      assert.ok(e instanceof OpenAI.APIError);
      return e;
    }
    assert.fail('expected an error');
  };
  const other = await errorOf(bob.completions.create({ model: 'alice-a', prompt: 'x', max_tokens: 2 }));
  const none = await errorOf(bob.completions.create({ model: 'nobody-has-this', prompt: 'x', max_tokens: 2 }));
  assert.equal(other.status, 404);
  assert.equal(none.status, 404);
  assert.equal(other.message.replace('alice-a', 'ID'), none.message.replace('nobody-has-this', 'ID'));
  assert.equal(other.code, 'model_not_found');
  for (const method of ['GET', 'DELETE']) {
    const x = await api(server.url, bobKey, method, '/v1/adapters/alice-a');
    const y = await api(server.url, bobKey, method, '/v1/adapters/nobody-has-this');
    assert.equal(x.status, 404);
    assert.equal(JSON.stringify(x.body).replace('alice-a', 'ID'), JSON.stringify(y.body).replace('nobody-has-this', 'ID'));
  }
  // bob's own adapter of the same name is his, not alice's
  const mine = await putAdapter(server.url, bobKey, 'alice-a', files('bob-a'));
  assert.equal(mine.status, 201);
  const r = await bob.completions.create({ model: 'alice-a', prompt: [4, 5], max_tokens: 6, temperature: 0 });
  assert.equal(r.choices[0].text, solo('bob-a', [4, 5], 6).text);
  assert.equal((await api(server.url, bobKey, 'DELETE', '/v1/adapters/alice-a')).status, 200);
  const still = await server.client(aliceKey).completions.create({ model: 'alice-a', prompt: [4, 5], max_tokens: 6, temperature: 0 });
  assert.equal(still.choices[0].text, solo('alice-a', [4, 5], 6).text, "alice's adapter survives bob deleting his");
});

test('bad requests get a 4xx with one line in OpenAI\'s error object', async () => {
  const client = server.client(aliceKey);
  const wrongKey = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'vera-not-a-key', maxRetries: 0 });
  await assert.rejects(wrongKey.models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  await assert.rejects(client.completions.create({ model: 'alice-a', prompt: 'x', max_tokens: 1000 }), (e: unknown) => e instanceof OpenAI.BadRequestError && /max_tokens must be at most 24/.test(e.message));
  await assert.rejects(client.chat.completions.create({ model: 'alice-a', messages: [{ role: 'tool', content: 'x', tool_call_id: 'a' }] }), (e: unknown) => e instanceof OpenAI.BadRequestError && /messages\[0\]\.role/.test(e.message));
  await assert.rejects(client.completions.create({ model: 'alice-a', prompt: 'x', logprobs: 2 }), (e: unknown) => e instanceof OpenAI.BadRequestError && /logprobs is not supported/.test(e.message));
  const cases: [string, number, RegExp][] = [
    ['{"model": "alice-a", "prompt": ', 400, /parse the JSON body/],
    [JSON.stringify({ model: 'alice-a', prompt: 'x', temperature: 'hot' }), 400, /temperature must be a number/],
    [JSON.stringify({ model: 'alice-a', prompt: [1, 2, 999] }), 400, /token id 999 is not in \[0, 101\)/],
    [JSON.stringify({ model: 'alice-a', prompt: 'x', foo: 1 }), 400, /Unrecognized request argument supplied: foo/],
    [JSON.stringify({ model: 'alice-a', prompt: 'x'.repeat(5 * 1024 * 1024) }), 413, /too large/],
    [JSON.stringify({ model: 'alice-a', prompt: Array(70).fill(5), max_tokens: 4 }), 400, /maximum context length is 64 tokens/],
  ];
  for (const [body, status, pattern] of cases) {
    const r = await api(server.url, aliceKey, 'POST', '/v1/completions', body);
    assert.equal(r.status, status, `${body.slice(0, 60)} → ${JSON.stringify(r.body).slice(0, 200)}`);
    const e = r.body['error'] as { message: string; type: string };
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes('\n'), 'one line');
  }
  const unknown = await api(server.url, aliceKey, 'GET', '/v1/nothing');
  assert.equal(unknown.status, 404);
});

test('adapter uploads that do not fit are refused with one line and store nothing', async () => {
  const before = (await api(server.url, aliceKey, 'GET', '/v1/adapters')).body['data'] as unknown[];
  const good = files('alice-a');
  const config = JSON.parse(Buffer.from(good.config).toString('utf8')) as Record<string, unknown>;
  const header = SafetensorsFile.fromBytes(good.weights, 'w');
  const keys = header.keys();
  const rewrite = (change: (data: Float32Array, shape: number[]) => { data: Float32Array; shape: number[] }): Uint8Array =>
    serializeSafetensors(Object.fromEntries(keys.map((k, i) => {
      const t = { data: header.getFloat32(k), shape: [...header.info(k).shape] };
      return [k, i === 0 ? change(t.data, t.shape) : t];
    })));
  const withNaN = rewrite((data, shape) => ((data[1] = NaN), { data, shape }));
  const wrongShape = rewrite((data) => ({ data: new Float32Array(data.length + 1), shape: [data.length + 1] }));
  const cases: [string, { config: string | Uint8Array; weights: Uint8Array }, RegExp][] = [
    ['wrong key', { config: JSON.stringify({ ...config, projection_prng_key: 5 }), weights: good.weights }, /projection_prng_key/],
    ['wrong r', { config: JSON.stringify({ ...config, r: 8 }), weights: good.weights }, /\br\b/],
    ['NaN', { config: good.config, weights: withNaN }, /NaN|finite/i],
    ['wrong shape', { config: good.config, weights: wrongShape }, /shape/],
    ['truncated', { config: good.config, weights: good.weights.slice(0, good.weights.length - 7) }, /truncated|too short|length|bytes/i],
    ['bad json', { config: '{"peft_type": ', weights: good.weights }, /JSON/],
  ];
  for (const [what, body, pattern] of cases) {
    const r = await putAdapter(server.url, aliceKey, `bad-${what.replace(' ', '-')}`, body);
    assert.equal(r.status, 400, `${what}: ${JSON.stringify(r.body)}`);
    const msg = (r.body['error'] as { message: string }).message;
    assert.match(msg, pattern, what);
    assert.ok(!msg.includes('\n'));
  }
  const after = (await api(server.url, aliceKey, 'GET', '/v1/adapters')).body['data'] as unknown[];
  assert.deepEqual(after, before);
});

test('a client that disconnects cancels its generation', async () => {
  const controller = new AbortController();
  const client = server.client(aliceKey);
  const stream = await client.completions.create({ model: 'alice-a', prompt: [3], max_tokens: 24, temperature: 0.8, stream: true }, { signal: controller.signal });
  const it = stream[Symbol.asyncIterator]();
  await it.next();
  controller.abort();
  await it.next().catch(() => undefined);
  // the engine drops the request at its next step
  let running = -1;
  for (let i = 0; i < 100 && running !== 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    running = ((await api(server.url, aliceKey, 'GET', '/health')).body['running'] as number) ?? -1;
  }
  assert.equal(running, 0);
});

test('a chat template from tokenizer_config.json shapes the prompt', async () => {
  const templated = modelFolder(dir, 'templated');
  writeFileSync(join(templated, 'tokenizer_config.json'), JSON.stringify({
    eos_token: '<|endoftext|>',
    chat_template: "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
  }));
  const key = await createKey(join(dir, 'store2.db'), 'carol');
  const s2 = await serve(['--model', templated, '--store', join(dir, 'store2.db'), '--vera-r', String(R), '--quiet']);
  try {
    const ids = tokenizer.encode('[user]hello[assistant]', { addSpecialTokens: false });
    const r = await s2.client(key).chat.completions.create({ model: 'templated', messages: [{ role: 'user', content: 'hello' }], max_tokens: 6, temperature: 0 });
    assert.equal(r.usage?.prompt_tokens, ids.length);
    assert.equal(r.choices[0].message.content, solo(null, ids, 6).text);
  } finally {
    assert.equal(await s2.stop(), 0);
  }
});
