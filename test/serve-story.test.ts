// The README's user story, end to end over loopback: two tenants each fine-tune an adapter through
// the API on their own data, then chat through the official openai client; each answer is what that
// tenant's adapter gives (checked against the adapter, exported from the store, merged and decoded
// alone), and the two differ. Also: a generation past --request-timeout ends in a 504.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import OpenAI from 'openai';
import { generate } from '../src/models/index.js';
import { PeftModel } from '../src/peft/index.js';
import { loadTokenizer } from '../src/data/tokenizer.js';
import { runVera, withTmp } from './helpers.js';
import { createKey, load, modelFolder, serve, type Lm } from './serve-helpers.js';

test('two tenants fine-tune their own adapters through the API and each chats with its own', async () => {
  await withTmp(async (dir) => {
    const modelDir = modelFolder(dir);
    const store = join(dir, 'store.db');
    const keys = { alice: await createKey(store, 'alice'), bob: await createKey(store, 'bob') };
    const server = await serve(['--model', modelDir, '--store', store, '--vera-r', '16', '--vera-target-modules', 'c_attn,c_fc', '--quiet']);
    try {
      const models: Record<string, string> = {};
      for (const [tenant, reply] of [['alice', 'all at a hall'], ['bob', 'box by the bay']] as const) {
        const client = server.client(keys[tenant]);
        const lines = Array.from({ length: 16 }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `q${i % 4}` }, { role: 'assistant', content: reply }] }));
        const file = await client.files.create({ file: new File([lines.join('\n')], `${tenant}.jsonl`), purpose: 'fine-tune' });
        const job = await client.fineTuning.jobs.create({ model: 'tiny', training_file: file.id, suffix: tenant, hyperparameters: { n_epochs: 8, batch_size: 4, learning_rate_multiplier: 5 }, seed: 1 });
        let state = job;
        for (let i = 0; i < 3000 && state.status !== 'succeeded' && state.status !== 'failed'; i++) {
          await new Promise((r) => setTimeout(r, 50));
          state = await client.fineTuning.jobs.retrieve(job.id);
        }
        assert.equal(state.status, 'succeeded', JSON.stringify(state.error));
        models[tenant] = state.fine_tuned_model!;
      }
      const tokenizer = (await loadTokenizer(modelDir))!;
      const prompt = tokenizer.encode('user: q1\nassistant:', { addSpecialTokens: false });
      const answers: Record<string, string> = {};
      for (const tenant of ['alice', 'bob'] as const) {
        const reply = await server.client(keys[tenant]).chat.completions.create({ model: models[tenant], messages: [{ role: 'user', content: 'q1' }], max_tokens: 16, temperature: 0 });
        answers[tenant] = reply.choices[0].message.content ?? '';
        // the reference: the adapter as the store holds it, merged, decoded alone
        const out = join(dir, `${tenant}-export`);
        const r = await runVera(['adapters', 'export', '--store', store, '--tenant', tenant, '--id', models[tenant], '--out', out]);
        assert.equal(r.code, 0, r.stderr);
        const merged = PeftModel.fromPretrained(load(modelDir), out).mergeAndUnload() as Lm;
        const { tokens } = generate(merged, prompt, { maxNewTokens: 16, eosTokenIds: [100] });
        const text = tokenizer.decode(tokens[tokens.length - 1] === 100 ? tokens.slice(0, -1) : tokens, { skipSpecialTokens: true });
        assert.equal(answers[tenant], text, `${tenant}'s answer is its own adapter's`);
        // and the other tenant cannot use it
        const other = tenant === 'alice' ? 'bob' : 'alice';
        await assert.rejects(server.client(keys[other]).chat.completions.create({ model: models[tenant], messages: [{ role: 'user', content: 'q1' }] }), (e: unknown) => e instanceof OpenAI.NotFoundError);
      }
      assert.notEqual(answers['alice'], answers['bob']);
      // the training took: each answer begins as its tenant's training replies do (" all at a hall", " box by the bay")
      assert.match(answers['alice'], /^ all/);
      assert.match(answers['bob'], /^ box/);
    } finally {
      assert.equal(await server.stop(), 0, server.stderr());
    }
  });
});

test('a generation that runs past --request-timeout ends in a 504, streamed or not', async () => {
  await withTmp(async (dir) => {
    const { GPT2LMHeadModel, gpt2ConfigFromJson, modelConfigJson, savePretrained } = await import('../src/models/index.js');
    const { Rng } = await import('../src/tensor/index.js');
    const model = new GPT2LMHeadModel(gpt2ConfigFromJson({ model_type: 'gpt2', vocab_size: 101, n_embd: 256, n_layer: 4, n_head: 4, n_positions: 2048, eos_token_id: 100 }, 'slow'), { rng: new Rng(3) });
    const modelDir = join(dir, 'slow');
    savePretrained(modelDir, model, modelConfigJson(model));
    const store = join(dir, 'store.db');
    const key = await createKey(store, 'alice');
    const server = await serve(['--model', modelDir, '--store', store, '--max-tokens', '2000', '--request-timeout', '1', '--quiet']);
    try {
      const client = server.client(key);
      await assert.rejects(client.completions.create({ model: 'slow', prompt: [5], max_tokens: 2000, temperature: 0 }), (e: unknown) => e instanceof OpenAI.APIError && e.status === 504 && /timed out after 1 s/.test(e.message));
      const stream = await client.completions.create({ model: 'slow', prompt: [5], max_tokens: 2000, temperature: 0, stream: true });
      await assert.rejects((async () => {
        for await (const _ of stream) void _;
      })(), (e: unknown) => e instanceof OpenAI.APIError && /timed out after 1 s/.test(e.message));
    } finally {
      assert.equal(await server.stop(), 0, server.stderr());
    }
  });
});
