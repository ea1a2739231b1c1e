// `vera train` end to end: the CLI runs as a child process (`node bin/vera.js`, which needs dist/
// built), on the tiny GPT-2 fixture with a few steps of patterned data.
import '../src/backends/index.js';
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { collateCausalLm, IGNORE_INDEX, sequentialBatches } from '../src/data/jsonl.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { MLP, causalLmLoss, loadPretrained, mlpConfigToJson, savePretrained, type GPT2LMHeadModel } from '../src/models/index.js';
import { PeftModel } from '../src/peft/index.js';
import { noGrad } from '../src/tensor/index.js';
import { runVera as vera, tinyGpt2TokenizerJson } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const TINY = path.join(ROOT, 'test', 'fixtures', 'gpt2-tiny');


let tmp = '';
let data = ''; // 16 sequences of a repeating pattern
const tmpPath = (...parts: string[]): string => path.join(tmp, ...parts);

function writeJsonl(file: string, rows: unknown[]): string {
  fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

/** A copy of gpt2-tiny with config.json edited and extra files. */
function modelCopy(name: string, editConfig: (c: Record<string, unknown>) => void, extra: Record<string, string> = {}): string {
  const dir = tmpPath(name);
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(TINY, 'model.safetensors'), path.join(dir, 'model.safetensors'));
  const config = JSON.parse(fs.readFileSync(path.join(TINY, 'config.json'), 'utf8')) as Record<string, unknown>;
  editConfig(config);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  for (const [f, content] of Object.entries(extra)) fs.writeFileSync(path.join(dir, f), content);
  return dir;
}

const VERA = ['--method', 'vera', '--r', '8', '--target-modules', 'c_attn,c_proj,c_fc', '--lr', '0.05'];
const LORA = ['--method', 'lora', '--r', '4', '--target-modules', 'c_attn,c_fc', '--lr', '0.01', '--lora-alpha', '8'];
const COMMON = ['--batch-size', '4', '--quiet'];

async function trainOk(args: string[]): Promise<{ summary: Record<string, unknown>; log: Record<string, any> }> {
  const outIdx = args.indexOf('--out');
  assert.ok(outIdx >= 0);
  const r = await vera(['train', '--model', TINY, '--data', data, ...COMMON, '--json', ...args]);
  assert.equal(r.code, 0, `vera train failed: ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, `--json prints one line: ${r.stdout}`);
  const out = args[outIdx + 1];
  const log = JSON.parse(fs.readFileSync(path.join(out, 'training_log.json'), 'utf8')) as Record<string, any>;
  return { summary: JSON.parse(lines[0]) as Record<string, unknown>, log };
}

function gpt2(dir = TINY): GPT2LMHeadModel {
  const loaded = loadPretrained(dir);
  assert.equal(loaded.modelType, 'gpt2');
  return loaded.model as GPT2LMHeadModel;
}

/** Token-weighted mean loss of `model` over a JSONL of input_ids (eval mode). */
function lossOn(model: GPT2LMHeadModel, file: string): number {
  const seqs = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => Int32Array.from((JSON.parse(l) as { input_ids: number[] }).input_ids));
  model.eval();
  let sum = 0;
  let n = 0;
  noGrad(() => {
    for (const group of sequentialBatches(seqs, 4)) {
      const b = collateCausalLm(group, 100);
      const logits = model.forward(b.inputIds, b.shape, { attentionMask: b.attentionMask });
      sum += causalLmLoss(logits, b.inputIds, b.shape, IGNORE_INDEX, b.labels).item() * b.targets;
      n += b.targets;
    }
  });
  return sum / n;
}

/** Next-token accuracy, one unpadded sequence at a time (independent of the CLI's batching). */
function accuracyOn(model: GPT2LMHeadModel, file: string): number {
  const seqs = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => (JSON.parse(l) as { input_ids: number[] }).input_ids);
  model.eval();
  let hits = 0;
  let n = 0;
  noGrad(() => {
    for (const ids of seqs) {
      const logits = model.forward(Int32Array.from(ids), [1, ids.length]).data();
      const vocab = logits.length / ids.length;
      for (let t = 0; t + 1 < ids.length; t++) {
        const row = Array.from(logits.subarray(t * vocab, (t + 1) * vocab));
        if (row.indexOf(Math.max(...row)) === ids[t + 1]) hits++;
        n++;
      }
    }
  });
  return hits / n;
}

const bytes = (dir: string): Buffer => fs.readFileSync(path.join(dir, 'adapter_model.safetensors'));

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vera-cli-train-'));
  const rows = Array.from({ length: 16 }, (_, i) => ({ input_ids: Array.from({ length: 10 + (i % 3) }, (_, k) => ((i + k) % 7) * 5 + 1) }));
  data = writeJsonl(tmpPath('data.jsonl'), rows);
});

after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('vera train', () => {
  test('VeRA: the loss goes down, the adapter is in PEFT layout and loads with PeftModel.fromPretrained', async () => {
    const out = tmpPath('vera-out');
    const { summary, log } = await trainOk([...VERA, '--steps', '8', '--eval-data', data, '--out', out]);
    const history = log.history as { step: number; loss: number; eval_loss?: number }[];
    assert.equal(history.length, 8);
    assert.ok(history[7].loss < history[0].loss - 0.5, `train loss ${history[0].loss} → ${history[7].loss}`);
    const baseLoss = lossOn(gpt2(), data);
    assert.ok((summary.evalLoss as number) < baseLoss - 0.5, `eval loss ${baseLoss} → ${summary.evalLoss}`);
    assert.ok(Math.abs((summary.evalPerplexity as number) - Math.exp(summary.evalLoss as number)) < 1e-6 * (summary.evalPerplexity as number));
    assert.equal(summary.steps, 8);
    assert.equal(summary.epochs, 2);
    assert.equal(summary.sequences, 16);
    assert.ok((summary.tokensPerSecond as number) > 0);
    assert.equal(summary.adapter, out);
    assert.equal(summary.adapterBytes, bytes(out).length);

    const config = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config.peft_type, 'VERA');
    assert.equal(config.r, 8);
    assert.deepEqual(config.target_modules, ['c_attn', 'c_proj', 'c_fc']);
    assert.equal(config.fan_in_fan_out, true);
    assert.equal(config.task_type, 'CAUSAL_LM');
    assert.equal(config.save_projection, true);
    const st = SafetensorsFile.open(path.join(out, 'adapter_model.safetensors'));
    const expected = ['base_model.vera_A', 'base_model.vera_B'];
    for (const layer of [0, 1]) {
      for (const m of ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj']) {
        for (const p of ['vera_lambda_b', 'vera_lambda_d']) expected.push(`base_model.model.transformer.h.${layer}.${m}.${p}`);
      }
    }
    assert.deepEqual(st.keys().sort(), expected.sort());
    assert.deepEqual(st.info('base_model.vera_A').shape, [8, 128]);
    assert.equal(st.info('base_model.vera_A').dtype, 'F32');

    // what was saved is what was trained: the reloaded adapter gives the reported eval loss
    const peft = PeftModel.fromPretrained(gpt2(), out);
    assert.ok(Math.abs(lossOn(peft.model, data) - (summary.evalLoss as number)) < 1e-4);
    assert.equal(summary.evalAccuracy, accuracyOn(peft.model, data));
    assert.ok((summary.evalAccuracy as number) > accuracyOn(gpt2(), data), 'training raised next-token accuracy');
  });

  test('LoRA: trains and saves lora_A/lora_B under PEFT keys', async () => {
    const out = tmpPath('lora-out');
    const { summary, log } = await trainOk([...LORA, '--steps', '6', '--out', out]);
    assert.ok(log.history.at(-1).loss < log.history[0].loss - 0.5);
    assert.equal(summary.method, 'lora');
    const config = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config.peft_type, 'LORA');
    assert.equal(config.lora_alpha, 8);
    const keys = SafetensorsFile.open(path.join(out, 'adapter_model.safetensors')).keys().sort();
    const expected = [0, 1].flatMap((l) => ['attn.c_attn', 'mlp.c_fc'].flatMap((m) => ['lora_A', 'lora_B'].map((p) => `base_model.model.transformer.h.${l}.${m}.${p}.weight`)));
    assert.deepEqual(keys, expected.sort());
    const peft = PeftModel.fromPretrained(gpt2(), out);
    assert.ok(lossOn(peft.model, data) < lossOn(gpt2(), data) - 0.5);
  });

  test('--head-lr puts the --modules-to-save parameters in a second optimizer group', async () => {
    const out = tmpPath('head-out');
    const { log } = await trainOk([...VERA, '--steps', '2', '--modules-to-save', 'ln_f', '--head-lr', '0.003', '--out', out]);
    const groups = log.paramGroups as { name: string; lr: number; params: string[] }[];
    assert.equal(groups.length, 2);
    assert.deepEqual(groups.map((g) => [g.name, g.lr]), [['adapter', 0.05], ['head', 0.003]]);
    assert.deepEqual(groups[1].params.sort(), ['transformer.ln_f.bias', 'transformer.ln_f.weight']);
    assert.equal(groups[0].params.length, 16);
    const keys = SafetensorsFile.open(path.join(out, 'adapter_model.safetensors')).keys();
    assert.ok(keys.some((k) => k.includes('ln_f')), 'modules_to_save are saved with the adapter');
    // without --head-lr: one group
    const single = await trainOk([...VERA, '--steps', '1', '--modules-to-save', 'ln_f', '--out', tmpPath('head-out-1')]);
    assert.equal(single.log.paramGroups.length, 1);
  });

  test('same seed → identical adapter bytes; another seed → different', async () => {
    const args = [...VERA, '--steps', '4', '--schedule', 'linear', '--warmup-steps', '1'];
    await trainOk([...args, '--out', tmpPath('seed-a')]);
    await trainOk([...args, '--out', tmpPath('seed-b')]);
    await trainOk([...args, '--seed', '7', '--out', tmpPath('seed-c')]);
    assert.ok(bytes(tmpPath('seed-a')).equals(bytes(tmpPath('seed-b'))));
    assert.ok(!bytes(tmpPath('seed-a')).equals(bytes(tmpPath('seed-c'))));
    await trainOk([...LORA, '--steps', '2', '--out', tmpPath('seed-la')]);
    await trainOk([...LORA, '--steps', '2', '--out', tmpPath('seed-lb')]);
    assert.ok(bytes(tmpPath('seed-la')).equals(bytes(tmpPath('seed-lb'))), 'LoRA init is seeded too');
  });

  /** An interrupted run (3 of 6 steps, checkpointed) resumed to the end vs an uninterrupted one. */
  async function resumeMatches(model: string, name: string): Promise<void> {
    const args = ['--model', model, ...VERA, '--grad-accum', '2', '--steps'];
    await trainOk([...args, '6', '--out', tmpPath(`${name}-full`), '--checkpoint-dir', tmpPath(`${name}-ck-full`), '--checkpoint-every', '2']);
    await trainOk([...args, '3', '--out', tmpPath(`${name}-half`), '--checkpoint-dir', tmpPath(`${name}-ck`)]);
    const { summary, log } = await trainOk([...args, '6', '--out', tmpPath(`${name}-resumed`), '--checkpoint-dir', tmpPath(`${name}-ck`), '--resume']);
    assert.equal(summary.resumedFromStep, 3);
    assert.equal(summary.steps, 6);
    assert.equal(log.history.length, 6);
    assert.ok(bytes(tmpPath(`${name}-full`)).equals(bytes(tmpPath(`${name}-resumed`))), 'resumed adapter differs from the uninterrupted one');
  }

  test('checkpoint + resume gives the adapter of an uninterrupted run (model without dropout)', async () => {
    const noDropout = modelCopy('tiny-nodrop', (c) => Object.assign(c, { attn_pdrop: 0, embd_pdrop: 0, resid_pdrop: 0 }));
    await resumeMatches(noDropout, 'nodrop');
    // a checkpoint from other data is refused
    const other = writeJsonl(tmpPath('other.jsonl'), Array.from({ length: 5 }, () => ({ input_ids: [1, 2, 3] })));
    const r = await vera(['train', '--model', noDropout, '--data', other, ...VERA, ...COMMON, '--grad-accum', '2', '--steps', '6', '--out', tmpPath('nodrop-other'), '--checkpoint-dir', tmpPath('nodrop-ck'), '--resume']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /nodrop-ck: checkpoint does not match this run's data/);
    assert.ok(!fs.existsSync(tmpPath('nodrop-other')));
  });

  test('checkpoint + resume gives the adapter of an uninterrupted run (gpt2-tiny, dropout 0.1)', async () => {
    await resumeMatches(TINY, 'drop');
  });

  test('--epochs converts to steps; --dtype f16 stores F16 tensors; the human summary names the adapter', async () => {
    const out = tmpPath('epochs-out');
    const { summary } = await trainOk([...VERA, '--epochs', '2.5', '--grad-accum', '2', '--dtype', 'f16', '--out', out]);
    assert.equal(summary.steps, Math.ceil((2.5 * 16) / (4 * 2)));
    const st = SafetensorsFile.open(path.join(out, 'adapter_model.safetensors'));
    assert.ok(st.keys().every((k) => st.info(k).dtype === 'F16'));

    const r = await vera(['train', '--model', TINY, '--data', data, ...VERA, '--steps', '2', '--batch-size', '4', '--eval-data', data, '--out', tmpPath('human-out')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: [\d.]+$/m);
    assert.match(r.stdout, /^steps: 2 /m);
    assert.match(r.stdout, /^train loss: \d+\.\d+/m);
    assert.match(r.stdout, /^eval loss: \d+\.\d+ +perplexity: \d+\.\d+/m);
    assert.match(r.stdout, /tokens\/s/);
    assert.ok(r.stdout.includes(`adapter: ${tmpPath('human-out')}`));
    assert.match(r.stdout, new RegExp(`${bytes(tmpPath('human-out')).length} bytes`));
  });

  test('"text" data is tokenized with the model folder\'s tokenizer.json; short sequences are skipped and counted', async () => {
    const model = modelCopy('tiny-tok', () => {}, { 'tokenizer.json': tinyGpt2TokenizerJson() });
    const text = writeJsonl(tmpPath('text.jsonl'), [{ text: 'hello the world, all at the ball!' }, { text: 'the cat sat on the mat' }, { text: 'h' }, { input_ids: [1, 2, 3] }]);
    // --no-append-eos: 'h' is one token, too short to predict anything
    const r = await vera(['train', '--model', model, '--data', text, ...VERA, ...COMMON, '--json', '--steps', '2', '--no-append-eos', '--out', tmpPath('text-out')]);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(summary.sequences, 3);
    assert.equal(summary.skippedSequences, 1);
    // by default "text" rows end with eos (so 'h' + eos is a sequence); the input_ids row is taken as given
    const d = await vera(['train', '--model', model, '--data', text, ...VERA, ...COMMON, '--json', '--steps', '2', '--out', tmpPath('text-eos-out')]);
    assert.equal(d.code, 0, d.stderr);
    assert.equal((JSON.parse(d.stdout) as Record<string, unknown>).sequences, 4);
  });

  test('a Llama-family model trains as a causal LM; without --target-modules PEFT\'s default (q_proj, v_proj) applies', async () => {
    const llama = path.join(ROOT, 'test', 'fixtures', 'decoders', 'llama-gqa');
    const out = tmpPath('llama-out');
    const r = await vera(['train', '--model', llama, '--data', data, '--method', 'vera', '--r', '8', '--lr', '0.05', ...COMMON, '--json', '--steps', '8', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const log = JSON.parse(fs.readFileSync(path.join(out, 'training_log.json'), 'utf8')) as { history: { loss: number }[] };
    assert.ok(log.history[7].loss < log.history[0].loss - 0.3, `train loss ${log.history[0].loss} → ${log.history[7].loss}`);
    const config = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(config.target_modules, ['q_proj', 'v_proj']);
    assert.equal(config.fan_in_fan_out, false);
    const keys = SafetensorsFile.open(path.join(out, "adapter_model.safetensors")).keys();
    assert.ok(keys.includes('base_model.model.model.layers.1.self_attn.v_proj.vera_lambda_b'), keys.join(', '));
  });
});

describe('vera train: bad input fails with one line naming the flag or file, and writes nothing', { concurrency: 2 }, () => {
  const cases: [string, () => string[], RegExp][] = [
    ['--r 0', () => [...base(), '--r', '0'], /--r\b.*positive integer/],
    ['--r abc', () => [...base(), '--r', 'abc'], /--r\b.*positive integer/],
    ['unknown flag', () => [...base(), '--r', '4', '--frobnicate'], /--frobnicate/],
    ['--target-modules nope', () => [...base(['nope']), '--r', '4'], /--target-modules nope matched no linear layer/],
    ['--target-modules bad regex', () => [...base(['c_(attn']), '--r', '4'], /--target-modules.*not a valid regular expression/],
    ['bad JSONL line', () => [...base(undefined, tmpPath('bad.jsonl')), '--r', '4'], /bad\.jsonl:3: invalid JSON$/],
    ['ids out of range', () => [...base(undefined, tmpPath('range.jsonl')), '--r', '4'], /range\.jsonl:2: "input_ids" must be an array of integers in \[0, 101\)$/],
    ['missing model folder', () => ['train', '--model', tmpPath('no-such-model'), '--data', data, ...rest(), '--r', '4'], /no-such-model/],
    ['missing data file', () => [...base(undefined, tmpPath('missing.jsonl')), '--r', '4'], /missing\.jsonl: not found$/],
    ['"text" without tokenizer.json', () => [...base(undefined, tmpPath('text-only.jsonl')), '--r', '4'], /text-only\.jsonl:1: "text" needs a tokenizer\.json in .*gpt2-tiny \(or give "input_ids"\)$/],
    ['image model', () => ['train', '--model', tmpPath('mlp-model'), '--data', data, ...rest(), '--r', '4'], /model_type "vera_mlp" is not a causal language model; --task causal-lm trains GPT-2 and the Llama family \(use --task img-cls\)/],
    ['--steps with --epochs', () => [...base(), '--r', '4', '--epochs', '1'], /--steps.*--epochs/],
    ['--seq-len over n_positions', () => [...base(), '--r', '4', '--seq-len', '65'], /--seq-len 65 exceeds the model's context length \(64\)/],
    ['LoRA flag with --method vera', () => [...base(), '--r', '4', '--lora-alpha', '16'], /--lora-alpha applies to --method lora/],
    ['--head-lr without --modules-to-save', () => [...base(), '--r', '4', '--head-lr', '0.1'], /--head-lr needs --modules-to-save/],
    ['--modules-to-save matching nothing', () => [...base(), '--r', '4', '--modules-to-save', 'classifier'], /--modules-to-save classifier matched no module/],
    ['--resume without checkpoint', () => [...base(), '--r', '4', '--checkpoint-dir', tmpPath('no-ck'), '--resume'], /no-ck: no trainer checkpoint/],
  ];
  const out = (): string => tmpPath('never-written');
  const rest = (): string[] => ['--method', 'vera', '--target-modules', 'c_attn', '--out', out(), '--steps', '2', '--quiet'];
  function base(targets?: string[], dataFile?: string): string[] {
    const args = ['train', '--model', TINY, '--data', dataFile ?? data, ...rest()];
    if (targets) args[args.indexOf('--target-modules') + 1] = targets.join(',');
    return args;
  }

  before(() => {
    fs.writeFileSync(tmpPath('bad.jsonl'), '{"input_ids": [1, 2, 3]}\n\n{"input_ids": [1, 2\n');
    fs.writeFileSync(tmpPath('range.jsonl'), '{"input_ids": [1, 2, 3]}\n{"input_ids": [1, 101]}\n');
    fs.writeFileSync(tmpPath('text-only.jsonl'), '{"text": "hello"}\n');
    const mlp = { inputSize: 4, hiddenSizes: [3], numClasses: 2 };
    savePretrained(tmpPath('mlp-model'), new MLP(mlp), mlpConfigToJson(mlp));
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
