// `vera serve` as an operator sees it: cancellation when a client goes away, per-key limits (429
// with Retry-After), SIGTERM draining, fine-tuning through the API, and kill -9 during adapter
// uploads and during a fine-tuning job: every acknowledged write survives and the job resumes.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';
import { Rng } from '../src/tensor/index.js';
import { GPT2LMHeadModel, gpt2ConfigFromJson, modelConfigJson, savePretrained } from '../src/models/index.js';
import { veraConfig } from '../src/peft/index.js';
import { SafetensorsFile, serializeSafetensors } from '../src/io/safetensors.js';
import { ServeStore } from '../src/serve/store.js';
import { tinyGpt2TokenizerJson, withTmp } from './helpers.js';
import { api, createKey, makeAdapter, modelFolder, putAdapter, serve } from './serve-helpers.js';

/** A GPT-2 with a long context, slow enough per token that a long generation is still running when the test acts. */
function longModel(dir: string): string {
  const model = new GPT2LMHeadModel(gpt2ConfigFromJson({ model_type: 'gpt2', vocab_size: 101, n_embd: 256, n_layer: 4, n_head: 4, n_positions: 2048, eos_token_id: 100, bos_token_id: 100 }, 'long'), { rng: new Rng(3) });
  const out = join(dir, 'long');
  savePretrained(out, model, modelConfigJson(model));
  writeFileSync(join(out, 'tokenizer.json'), tinyGpt2TokenizerJson());
  return out;
}

async function health(url: string): Promise<{ running: number; waiting: number; finished: { stop: number; length: number; cancelled: number } }> {
  return (await (await fetch(`${url}/health`)).json()) as { running: number; waiting: number; finished: { stop: number; length: number; cancelled: number } };
}

test('a client that goes away cancels its generation; a key over its limit gets 429 with Retry-After; SIGTERM drains', async () => {
  await withTmp(async (dir) => {
    const modelDir = longModel(dir);
    const store = join(dir, 'store.db');
    const key = await createKey(store, 'alice');
    const server = await serve(['--model', modelDir, '--store', store, '--max-tokens', '2000', '--max-concurrent', '1', '--quiet']);
    try {
      const client = server.client(key);
      // no eos: the model runs to max_tokens unless stopped
      const long = { model: 'long', prompt: [5], max_tokens: 2000, temperature: 0 };
      const controller = new AbortController();
      const stream = await client.completions.create({ ...long, stream: true }, { signal: controller.signal });
      const it = stream[Symbol.asyncIterator]();
      await it.next();
      // the key already runs one generation
      const res = await api(server.url, key, 'POST', '/v1/completions', { ...long, max_tokens: 5 });
      assert.equal(res.status, 429);
      assert.equal(res.headers.get('retry-after'), '1');
      assert.match((res.body['error'] as { message: string }).message, /at most 1 generations at once/);
      controller.abort();
      await it.next().catch(() => undefined);
      let h = await health(server.url);
      for (let i = 0; i < 200 && (h.running > 0 || h.finished.cancelled === 0); i++) {
        await new Promise((r) => setTimeout(r, 25));
        h = await health(server.url);
      }
      assert.equal(h.running, 0);
      assert.equal(h.finished.cancelled, 1, 'the abandoned request ended as cancelled, not by running out its 2000 tokens');
      // SIGTERM while a stream runs: it completes, then the process exits 0
      let text = '';
      let finish: string | null = null;
      const draining = (async () => {
        for await (const c of await client.completions.create({ ...long, max_tokens: 120, stream: true })) {
          text += c.choices[0]?.text ?? '';
          if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
          if (text.length > 0 && server.child.exitCode === null && !server.child.killed) server.child.kill('SIGTERM');
        }
      })();
      await draining;
      assert.equal(finish, 'length', 'the running stream finished after SIGTERM');
      assert.equal(await server.exited, 0, server.stderr());
    } finally {
      server.child.kill('SIGKILL');
    }
  });
});

test('kill -9 during adapter uploads: every acknowledged adapter reads back with its checksum, and nothing half-written exists', async () => {
  await withTmp(async (dir) => {
    const modelDir = modelFolder(dir);
    const store = join(dir, 'store.db');
    const key = await createKey(store, 'alice');
    const made = makeAdapter(modelDir, dir, 'a', veraConfig({ targetModules: ['c_attn'], r: 4, initWeights: false, saveProjection: false }), 1);
    const config = readFileSync(join(made, 'adapter_config.json'));
    const original = SafetensorsFile.fromBytes(readFileSync(join(made, 'adapter_model.safetensors')), 'a');
    const server = await serve(['--model', modelDir, '--store', store, '--vera-r', '4', '--vera-target-modules', 'c_attn', '--quiet']);
    const acknowledged = new Map<string, number>();
    const scaleOf = (id: string): number => {
      const [w, i] = id.slice(1).split('-').map(Number);
      return 1 + w * 1000 + i;
    };
    let killed = false;
    const uploader = async (w: number): Promise<void> => {
      for (let i = 0; !killed; i++) {
        const id = `u${w}-${i}`;
        // each adapter's vectors scaled by its own factor, so a mix-up would show
        const scale = scaleOf(id);
        const tensors = Object.fromEntries(original.keys().map((k) => [k, { data: original.getFloat32(k).map((v) => v * scale), shape: [...original.info(k).shape] }]));
        try {
          const r = await putAdapter(server.url, key, id, { config, weights: serializeSafetensors(tensors) });
          if (r.status === 201) acknowledged.set(id, scale);
          else assert.fail(`upload ${id}: ${r.status}`);
        } catch {
          return; // the server is gone
        }
      }
    };
    const workers = [0, 1, 2, 3].map(uploader);
    while (acknowledged.size < 40) await new Promise((r) => setTimeout(r, 5));
    server.child.kill('SIGKILL');
    killed = true;
    await Promise.all(workers);
    await server.exited;
    // restart: the server opens the store as it was left
    const again = await serve(['--model', modelDir, '--store', store, '--vera-r', '4', '--vera-target-modules', 'c_attn', '--quiet']);
    try {
    const listed = ((await api(again.url, key, 'GET', '/v1/adapters')).body['data'] as { id: string }[]).map((a) => a.id);
    for (const id of acknowledged.keys()) assert.ok(listed.includes(id), `acknowledged ${id} is listed`);
    const r = await again.client(key).completions.create({ model: [...acknowledged.keys()][0], prompt: [1, 2], max_tokens: 3, temperature: 0 });
    assert.equal(r.choices.length, 1);
    assert.equal(await again.stop(), 0);
    } finally {
      again.child.kill('SIGKILL');
    }
    const s = ServeStore.open(store);
    try {
      const tenant = s.tenantByName('alice')!;
      for (const a of s.listAdapters(tenant.id)) {
        const rec = s.getAdapter(a.owner, a.id)!; // verifies the checksum
        const file = SafetensorsFile.fromBytes(rec.weights, a.id);
        const scale = scaleOf(a.id);
        for (const k of original.keys()) {
          const want = original.getFloat32(k).map((v) => v * scale);
          assert.deepEqual(file.getFloat32(k), want, `${a.id} ${k}`);
        }
      }
      assert.ok(s.listAdapters(tenant.id).length <= acknowledged.size + 4, 'at most the uploads in flight beyond those acknowledged');
    } finally {
      s.close();
    }
  });
});

test('fine-tuning through the API: a job trains in the background, survives kill -9 by resuming from its checkpoint, and its adapter serves at once', async () => {
  await withTmp(async (dir) => {
    const modelDir = longModel(dir);
    const store = join(dir, 'store.db');
    const key = await createKey(store, 'alice');
    const args = ['--model', modelDir, '--store', store, '--vera-r', '4', '--vera-target-modules', 'c_attn', '--checkpoint-every', '2', '--quiet'];
    let server = await serve(args);
    try {
    const lines: string[] = [];
    for (let i = 0; i < 24; i++) lines.push(JSON.stringify({ messages: [{ role: 'user', content: `hi ${i % 4}` }, { role: 'assistant', content: `hello ${'ab'[i % 2]}` }] }));
    const client = server.client(key);
    const file = await client.files.create({ file: new File([lines.join('\n') + '\n'], 'train.jsonl'), purpose: 'fine-tune' });
    assert.match(file.id, /^file-/);
    const bad = await client.files.create({ file: new File(['{"messages": [{"role": "robot", "content": "x"}]}\n'], 'bad.jsonl'), purpose: 'fine-tune' }).catch((e: unknown) => e);
    assert.ok(bad instanceof OpenAI.BadRequestError && /line 1/.test(bad.message), String(bad));
    const job = await client.fineTuning.jobs.create({ model: 'long', training_file: file.id, hyperparameters: { n_epochs: 5, batch_size: 2 }, suffix: 'greeter', seed: 3 });
    assert.equal(job.status, 'queued');
    // wait for a checkpoint, then kill the server mid-job
    const checkpointed = async (): Promise<boolean> => {
      const events = await client.fineTuning.jobs.listEvents(job.id, { limit: 100 });
      return events.data.some((e) => /Checkpoint created/.test(e.message));
    };
    for (let i = 0; i < 400 && !(await checkpointed()); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(await checkpointed(), 'a checkpoint was written');
    const midway = await client.fineTuning.jobs.retrieve(job.id);
    server.child.kill('SIGKILL');
    await server.exited;
    assert.equal(midway.status, 'running', 'killed while training');
    server = await serve(args);
    const again = server.client(key);
    let state = await again.fineTuning.jobs.retrieve(job.id);
    for (let i = 0; i < 2400 && (state.status === 'running' || state.status === 'queued'); i++) {
      await new Promise((r) => setTimeout(r, 50));
      state = await again.fineTuning.jobs.retrieve(job.id);
    }
    assert.equal(state.status, 'succeeded', JSON.stringify(state.error));
    const events: string[] = [];
    for await (const e of again.fineTuning.jobs.listEvents(job.id, { limit: 50 })) events.push(e.message); // pages through has_more / after
    assert.ok(events.some((m) => /Resum/.test(m)), `resumed: ${events.slice(-8).join(' | ')}`);
    assert.equal(events[events.length - 1], 'Fine-tuning job started', 'oldest last, as OpenAI lists events');
    assert.match(state.fine_tuned_model!, /^ft:long:greeter:/);
    assert.ok((state.trained_tokens ?? 0) > 0);
    const models = [];
    for await (const m of again.models.list()) models.push(m.id);
    assert.ok(models.includes(state.fine_tuned_model!));
    const reply = await again.chat.completions.create({ model: state.fine_tuned_model!, messages: [{ role: 'user', content: 'hi 1' }], max_tokens: 8, temperature: 0 });
    assert.equal(typeof reply.choices[0].message.content, 'string');
    // another tenant sees none of it
    const bobKey = await createKey(store, 'bob');
    const bob = server.client(bobKey);
    await assert.rejects(bob.fineTuning.jobs.retrieve(job.id), (e: unknown) => e instanceof OpenAI.NotFoundError);
    await assert.rejects(bob.files.retrieve(file.id), (e: unknown) => e instanceof OpenAI.NotFoundError);
    await assert.rejects(bob.chat.completions.create({ model: state.fine_tuned_model!, messages: [{ role: 'user', content: 'x' }] }), (e: unknown) => e instanceof OpenAI.NotFoundError);
    assert.equal(await server.stop(), 0, server.stderr());
    } finally {
      server.child.kill('SIGKILL');
    }
  });
});

