// `vera train --method full` end to end (the CLI as a child process, dist/ built): training every
// parameter of a causal LM, from a checkpoint or from config.json alone (--from-scratch), the
// Hugging Face folder it writes, resume, and --pack / --append-eos.
import '../src/backends/index.js';
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { packSequences, readCausalLmJsonl } from '../src/data/jsonl.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { causalLmLoss, llamaConfigFromJson, LlamaForCausalLM, loadPretrained, modelFromConfig } from '../src/models/index.js';
import { Rng } from '../src/tensor/index.js';
import { maxAbsDiff, runVera as vera, tinyGpt2TokenizerJson } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const LLAMA_GQA = path.join(ROOT, 'test', 'fixtures', 'decoders', 'llama-gqa');
const SMOLLM_TIED = path.join(ROOT, 'test', 'fixtures', 'decoders', 'smollm-tied');
const EOS = 100; // <|endoftext|> of the tiny tokenizer

let tmp = '';
let scratch = ''; // config.json + tokenizer files, no weights
let data = ''; // 24 lines of patterned input_ids
let evalOne = ''; // one line
const evalIds = [3, 8, 13, 18, 23, 28, 33, 3, 8, 13, 18, 23];
const tmpPath = (...parts: string[]): string => path.join(tmp, ...parts);

/** A tiny tied Llama: vocab 101 (the tiny GPT-2 tokenizer's), hidden 32, 2 layers. */
const TINY_LLAMA = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 101,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  tie_word_embeddings: true,
  bos_token_id: EOS,
  eos_token_id: EOS,
  initializer_range: 0.02,
};
const TOKENIZER_FILES: Record<string, string> = {
  'tokenizer.json': tinyGpt2TokenizerJson(),
  'tokenizer_config.json': JSON.stringify({ eos_token: '<|endoftext|>', bos_token: '<|endoftext|>', model_max_length: 64 }),
  'special_tokens_map.json': JSON.stringify({ eos_token: '<|endoftext|>' }),
  'generation_config.json': JSON.stringify({ eos_token_id: EOS, bos_token_id: EOS }),
};

function writeJsonl(file: string, rows: unknown[]): string {
  fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

function modelFolder(name: string, config: Record<string, unknown>, files: Record<string, string> = TOKENIZER_FILES): string {
  const dir = tmpPath(name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  for (const [f, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, f), content);
  return dir;
}

const COMMON = ['--batch-size', '4', '--quiet', '--json'];

async function trainOk(args: string[]): Promise<{ summary: Record<string, any>; log: Record<string, any>; out: string }> {
  const out = args[args.indexOf('--out') + 1];
  const r = await vera(['train', '--method', 'full', ...COMMON, ...args]);
  assert.equal(r.code, 0, `vera train failed: ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, `--json prints one line: ${r.stdout}`);
  const log = JSON.parse(fs.readFileSync(path.join(out, 'training_log.json'), 'utf8')) as Record<string, any>;
  return { summary: JSON.parse(lines[0]) as Record<string, any>, log, out };
}

const weights = (dir: string): Buffer => fs.readFileSync(path.join(dir, 'model.safetensors'));

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vera-cli-train-full-'));
  scratch = modelFolder('scratch', TINY_LLAMA);
  const rows = Array.from({ length: 24 }, (_, i) => ({ input_ids: Array.from({ length: 10 + (i % 3) }, (_, k) => ((i + k) % 7) * 5 + 3) }));
  data = writeJsonl(tmpPath('data.jsonl'), rows);
  evalOne = writeJsonl(tmpPath('eval.jsonl'), [{ input_ids: evalIds }]);
  fs.writeFileSync(tmpPath('eval-ids.json'), JSON.stringify(evalIds));
});

after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('vera train --method full', () => {
  test('from scratch: the loss falls, every parameter changes, the folder loads and vera perplexity matches the eval', async () => {
    const { summary, log, out } = await trainOk(['--from-scratch', '--model', scratch, '--data', data, '--eval-data', evalOne, '--steps', '12', '--lr', '0.01', '--out', tmpPath('scratch-out')]);
    const history = log.history as { step: number; loss: number }[];
    assert.ok(history.at(-1)!.loss < history[0].loss - 1, `train loss ${history[0].loss} → ${history.at(-1)!.loss}`);
    assert.equal(summary.method, 'full');
    assert.equal(log.options.lr, 0.01);
    assert.ok(!('r' in log.options) && !('targetModules' in log.options) && !('dInitial' in log.options), JSON.stringify(log.options));

    // the files of a Hugging Face folder; the tokenizer files copied byte for byte
    assert.deepEqual(fs.readdirSync(out).sort(), ['config.json', 'generation_config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'training_log.json']);
    for (const f of Object.keys(TOKENIZER_FILES)) assert.ok(fs.readFileSync(path.join(out, f)).equals(fs.readFileSync(path.join(scratch, f))), f);
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(config, { ...TINY_LLAMA, torch_dtype: 'float32' });
    assert.equal(summary.adapterBytes, weights(out).length);

    // the tied embedding is one parameter: stored once, counted once, in one optimizer slot
    const st = SafetensorsFile.open(path.join(out, 'model.safetensors'));
    assert.ok(st.keys().includes('model.embed_tokens.weight') && !st.keys().includes('lm_head.weight'), st.keys().join(', '));
    const trained = loadPretrained(out).model as LlamaForCausalLM;
    assert.equal(trained.stateDict().get('lm_head.weight'), trained.model.embed_tokens.weight);
    const params = trained.namedParameters();
    const size = params.reduce((n, [, t]) => n + t.size, 0);
    assert.equal(summary.trainableParams, size);
    assert.equal(summary.allParams, size);
    const names = (log.paramGroups as { params: string[] }[]).flatMap((g) => g.params);
    assert.deepEqual(names.sort(), params.map(([n]) => n).sort());
    assert.ok(!names.includes('lm_head.weight'));

    // every parameter moved from the seeded initialization (--seed 42, the family's init)
    const init = modelFromConfig(TINY_LLAMA, 'config.json', { rng: new Rng(42) });
    const initParams = new Map(init.namedParameters());
    for (const [name, t] of params) {
      assert.ok(maxAbsDiff(t.data(), initParams.get(name)!.data()) > 1e-4, `${name} did not change`);
    }

    // what was saved is what was evaluated: vera perplexity gives the eval loss of training_log.json
    const p = await vera(['perplexity', '--model', out, '--token-ids', tmpPath('eval-ids.json'), '--json']);
    assert.equal(p.code, 0, p.stderr);
    const ppl = JSON.parse(p.stdout) as { tokens: number; nll: number; perplexity: number };
    assert.equal(ppl.tokens, evalIds.length - 1);
    const last = history.at(-1) as Record<string, number>;
    assert.ok(Math.abs(ppl.nll - last.eval_loss) < 1e-5, `perplexity nll ${ppl.nll} vs eval_loss ${last.eval_loss}`);
    assert.ok(Math.abs(ppl.perplexity - summary.evalPerplexity) < 1e-4 * ppl.perplexity);

    const g = await vera(['generate', '--model', out, '--prompt', 'the cat', '--max-new-tokens', '4', '--json']);
    assert.equal(g.code, 0, g.stderr);
    assert.ok((JSON.parse(g.stdout) as { tokens: number[] }).tokens.length >= 1);
  });

  test('the tied embedding\'s gradient is the sum of its two uses (embedding and head)', () => {
    const tied = modelFromConfig(TINY_LLAMA, 'config.json', { rng: new Rng(1) }) as LlamaForCausalLM;
    const untied = new LlamaForCausalLM({ ...llamaConfigFromJson({ ...TINY_LLAMA, tie_word_embeddings: false }, 'config.json'), modelType: 'llama' }, { init: false });
    const source = new Map(tied.namedParameters());
    for (const [name, t] of untied.namedParameters()) t.copyFrom((source.get(name) ?? source.get('model.embed_tokens.weight')!).data());
    const ids = Int32Array.from(evalIds);
    for (const m of [tied, untied]) causalLmLoss(m.forward(ids, [1, ids.length]), ids, [1, ids.length]).backward();
    const g = tied.model.embed_tokens.weight.grad!.data();
    const e = untied.model.embed_tokens.weight.grad!.data();
    const h = untied.stateDict().get('lm_head.weight')!.grad!.data();
    assert.ok(maxAbsDiff(g, Float32Array.from(e, (v, i) => v + h[i])) < 1e-6);
    assert.equal(tied.namedParameters().length, untied.namedParameters().length - 1);
  });

  test('--resume gives the model of an uninterrupted run', async () => {
    const args = ['--from-scratch', '--model', scratch, '--data', data, '--grad-accum', '2', '--weight-decay', '0.1', '--steps'];
    await trainOk([...args, '6', '--out', tmpPath('resume-full'), '--checkpoint-dir', tmpPath('resume-ck-full'), '--checkpoint-every', '2']);
    await trainOk([...args, '3', '--out', tmpPath('resume-half'), '--checkpoint-dir', tmpPath('resume-ck')]);
    const { summary, log } = await trainOk([...args, '6', '--out', tmpPath('resume-resumed'), '--checkpoint-dir', tmpPath('resume-ck'), '--resume']);
    assert.equal(summary.resumedFromStep, 3);
    assert.equal(log.history.length, 6);
    assert.deepEqual((log.paramGroups as { name: string }[]).map((g) => g.name), ['model', 'no_decay']);
    assert.ok(weights(tmpPath('resume-full')).equals(weights(tmpPath('resume-resumed'))), 'resumed model differs from the uninterrupted one');
    assert.ok(!weights(tmpPath('resume-full')).equals(weights(tmpPath('resume-half'))));
    // the checkpoint holds every parameter, the tied one once
    const ck = SafetensorsFile.open(path.join(tmpPath('resume-ck'), 'trainable.safetensors'));
    assert.equal(ck.keys().length, (log.paramGroups as { params: string[] }[]).flatMap((g) => g.params).length);
  });

  test('from a checkpoint: the tensor names are kept, --dtype sets the stored dtype; untied and tied models', async () => {
    for (const [model, name] of [[LLAMA_GQA, 'gqa'], [SMOLLM_TIED, 'tied']] as const) {
      const { summary, out } = await trainOk(['--model', model, '--data', data, '--steps', '3', '--dtype', 'bf16', '--out', tmpPath(`ckpt-${name}`)]);
      const before = SafetensorsFile.open(path.join(model, 'model.safetensors'));
      const after = SafetensorsFile.open(path.join(out, 'model.safetensors'));
      assert.deepEqual(after.keys().sort(), before.keys().sort());
      for (const k of after.keys()) assert.equal(after.info(k).dtype, 'BF16', k);
      const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(config.torch_dtype, 'bfloat16');
      assert.equal(config.num_key_value_heads, JSON.parse(fs.readFileSync(path.join(model, 'config.json'), 'utf8')).num_key_value_heads);
      if (name === 'gqa') assert.ok(fs.readFileSync(path.join(out, 'tokenizer.json')).equals(fs.readFileSync(path.join(model, 'tokenizer.json'))));
      const loaded = loadPretrained(out).model;
      const base = loadPretrained(model).model;
      assert.equal(summary.trainableParams, base.namedParameters().reduce((n, [, t]) => n + t.size, 0));
      const w = (m: typeof loaded): Float32Array => new Map(m.namedParameters()).get('model.layers.0.self_attn.q_proj.weight')!.data();
      assert.ok(maxAbsDiff(w(loaded), w(base)) > 1e-3, 'the weights trained');
    }
  });
});

describe('vera train --pack / --append-eos', () => {
  const lengths = Array.from({ length: 24 }, (_, i) => 10 + (i % 3));
  const total = lengths.reduce((a, b) => a + b + 1, 0); // an eos after each line

  test('--pack: floor(total / seq-len) blocks of --seq-len tokens, lines separated by eos', async () => {
    const { summary, log } = await trainOk(['--from-scratch', '--model', scratch, '--data', data, '--eval-data', data, '--pack', '--seq-len', '16', '--steps', '2', '--out', tmpPath('pack-out')]);
    const blocks = Math.floor(total / 16);
    assert.equal(summary.sequences, blocks);
    assert.equal(summary.evalSequences, blocks);
    assert.equal(summary.packed, true);
    assert.deepEqual(log.data, { file: data, records: 24, packed: true, blockSize: 16, blocks, tokens: total, droppedTokens: total - 16 * blocks, skipped: 0 });
    assert.equal(log.evalData.blocks, blocks);
    // the blocks the command trains on, from the same readers: the lines, each followed by eos, cut every 16 tokens
    const read = await readCausalLmJsonl(data, { vocabSize: 101, seqLen: 16, appendEos: EOS, truncate: false });
    const packed = packSequences(read.sequences, 16);
    assert.equal(packed.blocks.length, blocks);
    const lines = fs.readFileSync(data, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { input_ids: number[] }).input_ids);
    const stream = lines.flatMap((ids) => [...ids, EOS]);
    packed.blocks.forEach((b, i) => assert.deepEqual([...b], stream.slice(16 * i, 16 * (i + 1))));
    assert.deepEqual([...packed.blocks[0]], [...lines[0], EOS, ...lines[1].slice(0, 16 - lines[0].length - 1)]);
  });

  test('--append-eos: each line ends with eos, unless cut at --seq-len', async () => {
    const { summary, log } = await trainOk(['--from-scratch', '--model', scratch, '--data', data, '--append-eos', '--seq-len', '12', '--steps', '1', '--out', tmpPath('eos-out')]);
    assert.equal(summary.sequences, 24);
    // lines of 10, 11 and 12 tokens: + eos 11, 12, 13 → the 12-token lines are cut to 12 (no eos)
    assert.equal(summary.truncatedSequences, 8);
    assert.equal(log.data.tokens, lengths.reduce((a, n) => a + Math.min(n + 1, 12), 0));
    assert.equal(log.data.appendEos, EOS);
  });
});

describe('vera train --method full: refused combinations give one line, a non-zero exit and no output', { concurrency: 2 }, () => {
  const out = (): string => tmpPath('never-written');
  const full = (...extra: string[]): string[] => ['train', '--method', 'full', '--model', scratch, '--from-scratch', '--data', data, '--steps', '1', '--quiet', '--out', out(), ...extra];
  const cases: [string, () => string[], RegExp][] = [
    ['--r with full', () => full('--r', '4'), /^vera: --r is for --method vera or lora; --method full trains every parameter of the model$/],
    ['--target-modules with full', () => full('--target-modules', 'q_proj'), /--target-modules is for --method vera or lora/],
    ['--lora-alpha with full', () => full('--lora-alpha', '8'), /--lora-alpha is for --method vera or lora/],
    ['--d-initial with full', () => full('--d-initial', '0.5'), /--d-initial is for --method vera or lora/],
    ['--modules-to-save with full', () => full('--modules-to-save', 'lm_head'), /--modules-to-save is for --method vera or lora/],
    ['--no-save-projection with full', () => full('--no-save-projection'), /--no-save-projection is for --method vera or lora/],
    ['full for seq-cls', () => full('--task', 'seq-cls'), /--method full is for --task causal-lm; --task seq-cls trains an adapter/],
    ['vera without --r', () => ['train', '--method', 'vera', '--model', LLAMA_GQA, '--data', data, '--out', out()], /--r is required with --method vera: the rank/],
    ['--from-scratch with vera', () => ['train', '--method', 'lora', '--r', '4', '--from-scratch', '--model', LLAMA_GQA, '--data', data, '--out', out()], /--from-scratch is for --method full/],
    ['--from-scratch with weights', () => ['train', '--method', 'full', '--from-scratch', '--model', LLAMA_GQA, '--data', data, '--out', out()], /--from-scratch: .*llama-gqa holds weights \(model\.safetensors\)/],
    ['no weights without --from-scratch', () => ['train', '--method', 'full', '--model', scratch, '--data', data, '--out', out()], /scratch: no model\.safetensors .*give --from-scratch/],
    ['--pack with e2e', () => full('--pack', '--data-format', 'e2e'), /--pack is for --data-format jsonl/],
    ['--pack without eos', () => ['train', '--method', 'full', '--from-scratch', '--model', tmpPath('no-eos'), '--data', data, '--pack', '--out', out()], /--pack needs the model's eos token: .*no-eos\/config\.json has no eos_token_id/],
    ['--append-eos without eos', () => ['train', '--method', 'full', '--from-scratch', '--model', tmpPath('no-eos'), '--data', data, '--append-eos', '--out', out()], /--append-eos needs the model's eos token/],
    ['--pack with too little data', () => full('--pack', '--seq-len', '64', '--data', tmpPath('short.jsonl')), /short\.jsonl: 9 tokens \(an eos after each line included\) do not fill one --pack block of --seq-len 64/],
  ];

  before(() => {
    const noEos: Record<string, unknown> = { ...TINY_LLAMA };
    delete noEos.eos_token_id;
    modelFolder('no-eos', noEos);
    writeJsonl(tmpPath('short.jsonl'), [{ input_ids: [1, 2, 3] }, { input_ids: [4, 5, 6, 7] }]);
  });

  for (const [name, args, pattern] of cases) {
    test(name, async () => {
      const r = await vera(args());
      assert.notEqual(r.code, 0);
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, `one line on stderr, got: ${r.stderr}`);
      assert.match(lines[0], pattern);
      assert.equal(r.stdout, '');
      assert.ok(!fs.existsSync(out()), 'no output folder');
    });
  }
});
