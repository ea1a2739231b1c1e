// `vera serve` against hostile or careless clients: every request that used to crash the process,
// answer a 500 or another error shape, be retried forever, block the event loop, run without a
// length limit, or hold a shutdown open. Each test is one bug found by probing the server.
import '../src/backends/index.js';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng } from '../src/tensor/index.js';
import { LlamaForCausalLM, llamaConfigFromJson, modelConfigJson, savePretrained, type PretrainedModel } from '../src/models/index.js';
import { veraConfig } from '../src/peft/index.js';
import { tinyGpt2TokenizerJson } from './helpers.js';
import { api, createKey, makeAdapter, modelFolder, putAdapter, serve, type Served } from './serve-helpers.js';

const ADMIN = 'probe-admin-key-0123456789';
let dir: string;
let modelDir: string;
let store: string;
let server: Served;
let alice: string;
let bob: string;
let adapter: { config: Uint8Array; weights: Uint8Array };

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vera-probe-'));
  modelDir = modelFolder(dir);
  store = join(dir, 'store.db');
  alice = await createKey(store, 'alice');
  bob = await createKey(store, 'bob');
  const made = makeAdapter(modelDir, dir, 'a', veraConfig({ targetModules: ['c_attn'], r: 4, initWeights: false, saveProjection: false }), 1);
  adapter = { config: readFileSync(join(made, 'adapter_config.json')), weights: readFileSync(join(made, 'adapter_model.safetensors')) };
  server = await serve(['--model', modelDir, '--store', store, '--vera-r', '4', '--vera-target-modules', 'c_attn', '--max-tokens', '24', '--checkpoint-every', '1', '--quiet'], { VERA_ADMIN_KEY: ADMIN });
  assert.equal((await putAdapter(server.url, alice, 'mine', adapter)).status, 201);
});

after(async () => {
  if (server) assert.equal(await server.stop(), 0, server.stderr());
  rmSync(dir, { recursive: true, force: true });
});

/** OpenAI's error object, one line, with the status and param expected. */
function isError(r: { status: number; body: Record<string, unknown> }, status: number, param: string | null, pattern?: RegExp): void {
  assert.equal(r.status, status, JSON.stringify(r.body));
  const e = r.body['error'] as { message: string; type: string; param: string | null } | undefined;
  assert.ok(e && typeof e.message === 'string' && typeof e.type === 'string', `OpenAI's error object: ${JSON.stringify(r.body)}`);
  assert.ok(!e.message.includes('\n'), 'one line');
  assert.equal(e.param, param, e.message);
  if (pattern) assert.match(e.message, pattern);
}

async function send(method: string, path: string, headers: Record<string, string>, body?: string | FormData): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${server.url}${path}`, { method, headers: { authorization: `Bearer ${alice}`, ...headers }, body });
  const text = await res.text();
  try {
    return { status: res.status, body: JSON.parse(text) as Record<string, unknown> };
  } catch {
    return { status: res.status, body: { text } };
  }
}

const form = (parts: [string, string | Uint8Array, string?][]): FormData => {
  const f = new FormData();
  for (const [name, value, filename] of parts) {
    if (filename === undefined && typeof value === 'string') f.append(name, value);
    else f.append(name, new Blob([value]), filename ?? name);
  }
  return f;
};

test('malformed multipart bodies are a 400 naming the body, not a 500', async () => {
  const bodies = (field: string): [string, string][] => [
    ['multipart/form-data', 'hello'], // no boundary
    ['multipart/form-data; boundary=xx', '--xx\r\ngarbage'],
    ['multipart/form-data; boundary=xx', `--xx\r\nContent-Disposition: form-data; name="${field}"; filename="a"\r\n\r\n{"a":`], // ends mid-part
  ];
  for (const [type, body] of bodies('adapter_config.json')) isError(await send('PUT', '/v1/adapters/m1', { 'content-type': type }, body), 400, 'body', /multipart/);
  for (const [type, body] of bodies('file')) isError(await send('POST', '/v1/files', { 'content-type': type }, body), 400, 'body', /multipart/);
  const listed = (await api(server.url, alice, 'GET', '/v1/adapters')).body['data'] as { id: string }[];
  assert.deepEqual(listed.map((a) => a.id), ['mine'], 'nothing stored');
});

test('multipart fields given twice, files past the form\'s count and over-long file names are 400s naming the field', async () => {
  const files: [string, Uint8Array][] = [['adapter_config.json', adapter.config], ['adapter_model.safetensors', adapter.weights]];
  // the second `shared` used to win silently
  isError(await send('PUT', '/v1/adapters/m2', {}, form([...files, ['shared', 'true'], ['shared', 'false']])), 400, 'shared', /twice/);
  isError(await send('PUT', '/v1/adapters/m3', {}, form([...files, ['extra', 'x', 'x.bin']])), 400, 'body', /files/);
  const jsonl = JSON.stringify({ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }] }) + '\n';
  isError(await send('POST', '/v1/files', {}, form([['purpose', 'batch'], ['purpose', 'fine-tune'], ['file', jsonl, 'a.jsonl']])), 400, 'purpose', /twice/);
  isError(await send('POST', '/v1/files', {}, form([['purpose', 'fine-tune'], ['file', jsonl, 'x'.repeat(5000)]])), 400, 'file', /file name/);
  const listed = (await api(server.url, alice, 'GET', '/v1/adapters')).body['data'] as { id: string }[];
  assert.deepEqual(listed.map((a) => a.id), ['mine'], 'nothing stored');
  assert.deepEqual((await api(server.url, alice, 'GET', '/v1/files')).body['data'], []);
});

test('URLs the router or the HTTP parser refuses (bad percent-encoding, an over-long id or URL) still answer OpenAI\'s error object', async () => {
  isError(await send('GET', '/v1/adapters/%ZZ', {}), 400, null, /url/i);
  isError(await send('PUT', '/v1/adapters/%ZZ', {}), 400, null, /url/i);
  isError(await send('GET', `/v1/adapters/${'x'.repeat(500)}`, {}), 414, null);
  isError(await send('GET', `/v1/files/${'x'.repeat(500)}`, {}), 414, null);
  // past the HTTP parser's header limit, before fastify sees the request
  isError(await send('GET', `/v1/adapters/${'x'.repeat(100_000)}`, {}), 431, null, /headers are too large/);
});

test('a request that could never fit the per-key limit is a 400, not a 429 a client would retry forever', async () => {
  // 4 prompts × n 8 = 32 generations; the key may run 16
  const r = await api(server.url, alice, 'POST', '/v1/completions', { model: 'tiny', prompt: [[1], [2], [3], [4]], n: 8, max_tokens: 1 });
  isError(r, 400, 'n', /32 generations.*at most 16/);
  assert.equal(r.headers.get('retry-after'), null);
});

test('a prompt that encodes to no tokens is a 400 naming prompt', async () => {
  for (const prompt of ['', '\u{1F600}']) { // the tiny vocabulary has no token for the emoji
    isError(await api(server.url, alice, 'POST', '/v1/completions', { model: 'tiny', prompt, max_tokens: 2 }), 400, 'prompt', /empty|no tokens/);
  }
  isError(await api(server.url, alice, 'POST', '/v1/completions', { model: 'tiny', prompt: ['a', ''], max_tokens: 2 }), 400, 'prompt', /prompt\[1\]/);
});

test('a text prompt far past the context is refused by its length, before the tokenizer spends seconds on it', async () => {
  const long = 'hello world, the hall '.repeat(170_000); // 3.7 MB, under the body limit
  const r = await api(server.url, alice, 'POST', '/v1/completions', { model: 'tiny', prompt: long, max_tokens: 2 });
  isError(r, 400, 'prompt', /maximum context length is 64 tokens.*characters/);
  const chat = await api(server.url, alice, 'POST', '/v1/chat/completions', { model: 'tiny', messages: [{ role: 'user', content: long }], max_tokens: 2 });
  isError(chat, 400, 'messages', /maximum context length is 64 tokens.*characters/);
  // many prompts: the first that cannot fit ends the request
  const many = await api(server.url, alice, 'POST', '/v1/completions', { model: 'tiny', prompt: Array(32).fill(long.slice(0, 100_000)), max_tokens: 2 });
  isError(many, 400, 'prompt', /prompt\[0\].*maximum context length/);
});

test('n > 1 with many prompts does not warn of a listener leak', async () => {
  const r = await api(server.url, alice, 'POST', '/v1/completions', { model: 'mine', prompt: [[1], [2]], n: 8, max_tokens: 2 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal((r.body['choices'] as unknown[]).length, 16);
  assert.doesNotMatch(server.stderr(), /MaxListenersExceededWarning/);
});

test('the admin\'s /v1/models lists only models the admin can use', async () => {
  const models = (await api(server.url, ADMIN, 'GET', '/v1/models')).body['data'] as { id: string }[];
  assert.deepEqual(models.map((m) => m.id), ['tiny'], "alice's adapter is not the admin's to use");
  isError(await api(server.url, ADMIN, 'POST', '/v1/completions', { model: 'mine', prompt: 'a', max_tokens: 1 }), 404, 'model');
});

test('cancelling a job while it writes checkpoints does not take the server down', async () => {
  // 400 rows × 50 epochs at batch 1: 20,000 steps, far more than the few seconds a fast machine needs to reach the cancel
  const rows = Array.from({ length: 400 }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `hi ${i}` }, { role: 'assistant', content: `hello there ${i}` }] }));
  const file = await send('POST', '/v1/files', {}, form([['purpose', 'fine-tune'], ['file', rows.join('\n'), 'train.jsonl']]));
  assert.equal(file.status, 200, JSON.stringify(file.body));
  for (let round = 0; round < 3; round++) {
    const job = await api(server.url, alice, 'POST', '/v1/fine_tuning/jobs', { model: 'tiny', training_file: file.body['id'], hyperparameters: { n_epochs: 50, batch_size: 1 } });
    assert.equal(job.status, 200, JSON.stringify(job.body));
    const id = job.body['id'] as string;
    // checkpoints every step: one is always on its way when the cancel lands
    for (let i = 0; i < 400; i++) {
      const events = (await api(server.url, alice, 'GET', `/v1/fine_tuning/jobs/${id}/events`)).body['data'] as { message: string }[];
      if (events.some((e) => /Checkpoint/.test(e.message))) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    const cancelled = await api(server.url, alice, 'POST', `/v1/fine_tuning/jobs/${id}/cancel`);
    assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(server.child.exitCode, null, `the server is still up: ${server.stderr()}`);
    assert.equal((await api(server.url, alice, 'GET', `/v1/fine_tuning/jobs/${id}`)).body['status'], 'cancelled');
  }
});

test('a model without a fixed context (Llama) refuses prompts past max_position_embeddings instead of prefilling them', async () => {
  const model = new LlamaForCausalLM(llamaConfigFromJson({ model_type: 'llama', vocab_size: 101, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, bos_token_id: 100, eos_token_id: 100 }, 'l'), { rng: new Rng(1) }) as PretrainedModel;
  const llama = join(dir, 'llama');
  savePretrained(llama, model, modelConfigJson(model));
  writeFileSync(join(llama, 'tokenizer.json'), tinyGpt2TokenizerJson());
  const llamaStore = join(dir, 'store-llama.db');
  const key = await createKey(llamaStore, 'carol');
  const s = await serve(['--model', llama, '--store', llamaStore, '--max-tokens', '24', '--quiet']);
  try {
    isError(await api(s.url, key, 'POST', '/v1/completions', { model: 'llama', prompt: Array(3000).fill(5), max_tokens: 2 }), 400, 'prompt', /maximum context length is 64 tokens/);
    isError(await api(s.url, key, 'POST', '/v1/completions', { model: 'llama', prompt: 'hello '.repeat(100_000), max_tokens: 2 }), 400, 'prompt', /maximum context length is 64 tokens/);
    // within it, max_tokens is cut to what is left of the context
    const r = await api(s.url, key, 'POST', '/v1/completions', { model: 'llama', prompt: Array(60).fill(5), temperature: 0 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal((r.body['usage'] as { completion_tokens: number }).completion_tokens <= 4, true);
  } finally {
    assert.equal(await s.stop(), 0, s.stderr());
  }
});

/** An upload whose body stops arriving after its first bytes (the socket stays open), of `length` bytes declared. */
async function stalledUpload(url: string, key: string, id: string, length = 100_000): Promise<net.Socket> {
  const sock = net.connect(Number(new URL(url).port), '127.0.0.1');
  sock.on('error', () => undefined);
  await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
  sock.write(`PUT /v1/adapters/${id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: multipart/form-data; boundary=xx\r\nContent-Length: ${length}\r\n\r\n--xx\r\nContent-Disposition: form-data; name="adapter_config.json"; filename="a"\r\n\r\n{"a":`);
  return sock;
}

test('uploads are held in memory whole, so a key may send only a few large ones at once: 429 with Retry-After beyond', async () => {
  // small uploads side by side are fine
  const small = await Promise.all([1, 2, 3, 4, 5].map((i) => putAdapter(server.url, alice, `small${i}`, adapter)));
  assert.deepEqual(small.map((r) => r.status), [201, 201, 201, 201, 201]);
  for (let i = 1; i <= 5; i++) assert.equal((await api(server.url, alice, 'DELETE', `/v1/adapters/small${i}`)).status, 200);
  // two of the largest size the server takes (2 files of --upload-limit-mb 64 and the form) fill the key's share
  const largest = 2 * 64 * 2 ** 20 + 2 ** 20;
  const stalled = [await stalledUpload(server.url, alice, 's1', largest), await stalledUpload(server.url, alice, 's2', largest)];
  try {
    await new Promise((r) => setTimeout(r, 200));
    const res = await fetch(`${server.url}/v1/adapters/third`, { method: 'PUT', headers: { authorization: `Bearer ${alice}` }, body: form([['adapter_config.json', adapter.config], ['adapter_model.safetensors', adapter.weights]]) });
    isError({ status: res.status, body: (await res.json()) as Record<string, unknown> }, 429, null, /at most 2 uploads of the largest size at once per API key/);
    assert.equal(res.headers.get('retry-after'), '1');
    // another key is not held up
    assert.equal((await putAdapter(server.url, bob, 'bobs', adapter)).status, 201);
  } finally {
    for (const sock of stalled) sock.destroy();
  }
  let status = 0;
  for (let i = 0; i < 50 && status !== 201; i++) {
    await new Promise((r) => setTimeout(r, 20));
    status = (await putAdapter(server.url, alice, 'third', adapter)).status;
  }
  assert.equal(status, 201, 'the slots come back when the stalled uploads go away');
  assert.equal((await api(server.url, alice, 'DELETE', '/v1/adapters/third')).status, 200);
});

test('SIGTERM with an upload that never finishes arriving still exits, after the request timeout', async () => {
  const termStore = join(dir, 'store-term.db');
  const key = await createKey(termStore, 'dave');
  const s = await serve(['--model', modelDir, '--store', termStore, '--vera-r', '4', '--vera-target-modules', 'c_attn', '--request-timeout', '1', '--quiet']);
  const sock = await stalledUpload(s.url, key, 'slow');
  await new Promise((r) => setTimeout(r, 300));
  s.child.kill('SIGTERM');
  const code = await Promise.race([s.exited, new Promise<string>((r) => setTimeout(() => r('still running 10 s after SIGTERM'), 10_000))]);
  sock.destroy();
  if (code !== 0) s.child.kill('SIGKILL');
  assert.equal(code, 0, s.stderr());
});

