// `vera train --task seq-cls | img-cls` and `--data-format e2e`, end to end through the CLI
// (`node bin/vera.js`, which needs dist/ built): tiny random BERT / RoBERTa folders written with
// savePretrained plus a tiny WordPiece tokenizer and GLUE TSV files; an MLP on the shipped
// Fashion-MNIST subset; gpt2-tiny on an E2E CSV. The reported metrics are recomputed here from the
// saved adapter, loaded with PeftModel.fromPretrained.
import '../src/backends/index.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { loadTokenizer } from '../src/data/tokenizer.js';
import { readGlueTsv } from '../src/data/glue.js';
import { loadFashionMnist } from '../src/data/fashion-mnist.js';
import { accuracy, f1 } from '../src/data/metrics.js';
import { BertForSequenceClassification, MLP, RobertaForSequenceClassification, bertConfigFromJson, loadPretrained, mlpConfigToJson, modelConfigJson, savePretrained } from '../src/models/index.js';
import { PeftModel } from '../src/peft/index.js';
import { e2ePrompt, groupReferences, readE2eCsv } from '../src/data/e2e.js';
import { corpusBleu, corpusCider, corpusNist, corpusRougeL } from '../src/data/text-metrics.js';
import { beamSearch } from '../src/models/generation.js';
import type { Module } from '../src/nn/index.js';
import { F, Rng, Tensor, noGrad } from '../src/tensor/index.js';
import { runVera as vera, tinyGpt2TokenizerJson } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FASHION = path.join(ROOT, 'data', 'fashion-mnist');


async function trainJson(args: string[]): Promise<Record<string, unknown>> {
  const r = await vera(['train', ...args, '--json', '--quiet']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

let tmp = '';
const tmpPath = (...parts: string[]): string => path.join(tmp, ...parts);

const WORDS = ['the', 'movie', 'film', 'plot', 'was', 'is', 'good', 'great', 'fine', 'bad', 'awful', 'boring', 'very', 'a', 'it', '.', '##s'];
const SPECIAL = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];

/** A BERT-style WordPiece tokenizer.json over WORDS (uncased, [CLS] a [SEP] b [SEP]). */
function tinyWordPieceJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  [...SPECIAL, ...WORDS].forEach((t, i) => (vocab[t] = i));
  const special = (id: string, typeId: number): object => ({ SpecialToken: { id, type_id: typeId } });
  const seq = (id: string, typeId: number): object => ({ Sequence: { id, type_id: typeId } });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIAL.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [special('[CLS]', 0), seq('A', 0), special('[SEP]', 0)],
      pair: [special('[CLS]', 0), seq('A', 0), special('[SEP]', 0), seq('B', 1), special('[SEP]', 1)],
      special_tokens: { '[CLS]': { id: '[CLS]', ids: [2], tokens: ['[CLS]'] }, '[SEP]': { id: '[SEP]', ids: [3], tokens: ['[SEP]'] } },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  };
}

/** A random tiny encoder folder (config.json + model.safetensors + tokenizer files). */
function encoderFolder(name: string, modelType: 'bert' | 'roberta', extra: Record<string, unknown> = {}): string {
  const dir = tmpPath(name);
  const json = {
    model_type: modelType,
    vocab_size: SPECIAL.length + WORDS.length,
    hidden_size: 16,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    intermediate_size: 32,
    max_position_embeddings: modelType === 'roberta' ? 66 : 64,
    type_vocab_size: modelType === 'roberta' ? 1 : 2,
    pad_token_id: modelType === 'roberta' ? 1 : 0,
    hidden_dropout_prob: 0,
    attention_probs_dropout_prob: 0,
    // a random encoder with BERT's 0.02 init barely tells sentences apart; wider weights give the head features to use
    initializer_range: 0.3,
    ...extra,
  };
  const config = bertConfigFromJson(json, `${name}/config.json`, modelType);
  const rng = new Rng(7);
  const model = modelType === 'bert' ? new BertForSequenceClassification(config, { rng }) : new RobertaForSequenceClassification(config, { rng });
  const tokenizer = tinyWordPieceJson();
  const files: Record<string, Uint8Array> = {
    'tokenizer.json': Buffer.from(JSON.stringify(tokenizer)),
    'tokenizer_config.json': Buffer.from(JSON.stringify({ pad_token: '[PAD]', cls_token: '[CLS]', sep_token: '[SEP]', unk_token: '[UNK]', model_max_length: 64 })),
  };
  savePretrained(dir, model, modelConfigJson(model), undefined, files);
  return dir;
}

/** Sentiment sentences: label 1 for the first three adjectives, 0 for the last three. */
function sst2Rows(): [string, number][] {
  const rows: [string, number][] = [];
  for (const subject of ['the movie', 'the film', 'it', 'the plots']) {
    for (const verb of ['was', 'is']) {
      for (const [adj, label] of [['good', 1], ['great', 1], ['very fine', 1], ['bad', 0], ['awful', 0], ['very boring', 0]] as const) rows.push([`${subject} ${verb} ${adj} .`, label]);
    }
  }
  return rows;
}

const VERA = ['--method', 'vera', '--r', '16', '--target-modules', 'query,value', '--lr', '0.05', '--head-lr', '0.05'];

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vera-tasks-'));
  fs.writeFileSync(tmpPath('sst2.tsv'), 'sentence\tlabel\n' + sst2Rows().map(([s, l]) => `${s}\t${l}`).join('\n') + '\n');
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('vera train --task seq-cls', () => {
  test('SST-2 on a tiny BERT: accuracy on the dev file, equal to what the saved adapter gives', async () => {
    const model = encoderFolder('bert', 'bert');
    const out = tmpPath('out-sst2');
    const data = tmpPath('sst2.tsv');
    const s = await trainJson(['--model', model, '--task', 'seq-cls', '--glue-task', 'sst2', '--train', data, '--eval', data, ...VERA, '--steps', '120', '--batch-size', '8', '--out', out]);
    assert.equal(s.task, 'seq-cls');
    assert.equal(s.unit, 'samples');
    assert.equal(s.tokens, null);
    const metrics = s.evalMetrics as Record<string, number>;
    assert.deepEqual(Object.keys(metrics).sort(), ['eval_accuracy', 'eval_loss']);
    assert.ok(metrics.eval_accuracy >= 0.9, `accuracy ${metrics.eval_accuracy}`);
    const config = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config.task_type, 'SEQ_CLS');
    assert.deepEqual(config.modules_to_save, ['classifier', 'score'], "PEFT's SEQ_CLS heads");
    const log = JSON.parse(fs.readFileSync(path.join(out, 'training_log.json'), 'utf8')) as { paramGroups: { name: string; lr: number; params: string[] }[] };
    assert.deepEqual(log.paramGroups.map((g) => g.name), ['adapter', 'head']);
    assert.ok(log.paramGroups[1].params.every((p) => p.includes('classifier')));

    // recompute: base model + adapter (λ vectors and the trained classifier) on the same file
    const base = loadPretrained(model, { log: () => {} }).model as BertForSequenceClassification;
    const peft = PeftModel.fromPretrained(base, out);
    peft.model.eval();
    const tok = (await loadTokenizer(model))!;
    const dev = readGlueTsv(data, 'sst2');
    const enc = tok.encodeBatch(dev.examples.map((e) => e.textA));
    const predicted = noGrad(() => F.argmax(base.forward(enc.inputIds, enc.shape, { attentionMask: enc.attentionMask, tokenTypeIds: enc.tokenTypeIds })));
    assert.equal(accuracy([...predicted], dev.examples.map((e) => e.label!)), metrics.eval_accuracy);
  });

  test('MRPC pairs on a tiny RoBERTa: accuracy and F1, recomputed from the adapter', async () => {
    const model = encoderFolder('roberta', 'roberta');
    const rows = sst2Rows().map(([s, l], i) => `${l}\t${i}\t${i + 1000}\t${s}\tthe movie was ${l ? 'good' : 'bad'} .`);
    const file = tmpPath('mrpc.tsv');
    fs.writeFileSync(file, 'Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n' + rows.join('\n') + '\n');
    const out = tmpPath('out-mrpc');
    const s = await trainJson(['--model', model, '--task', 'seq-cls', '--glue-task', 'mrpc', '--data', file, '--eval-data', file, ...VERA, '--steps', '20', '--batch-size', '8', '--out', out]);
    const metrics = s.evalMetrics as Record<string, number>;
    assert.deepEqual(Object.keys(metrics).sort(), ['eval_accuracy', 'eval_f1', 'eval_loss']);
    const log = JSON.parse(fs.readFileSync(path.join(out, 'training_log.json'), 'utf8')) as { paramGroups: { name: string; params: string[] }[] };
    assert.deepEqual(log.paramGroups[1].params.sort(), ['classifier.dense.bias', 'classifier.dense.weight', 'classifier.out_proj.bias', 'classifier.out_proj.weight'], "RoBERTa's two-layer head is in the head group");
    const base = loadPretrained(model, { log: () => {} }).model as RobertaForSequenceClassification;
    PeftModel.fromPretrained(base, out).model.eval();
    const tok = (await loadTokenizer(model))!;
    const dev = readGlueTsv(file, 'mrpc');
    const enc = tok.encodeBatch(dev.examples.map((e) => [e.textA, e.textB!] as const));
    const predicted = [...noGrad(() => F.argmax(base.forward(enc.inputIds, enc.shape, { attentionMask: enc.attentionMask })))];
    const labels = dev.examples.map((e) => e.label!);
    assert.ok(Math.abs(accuracy(predicted, labels) - metrics.eval_accuracy) < 1e-12);
    assert.ok(Math.abs(f1(predicted, labels) - metrics.eval_f1) < 1e-12);
  });

  test('STS-B: a regression head (1 output) replaces the checkpoint\'s 2-label one; Pearson and Spearman', async () => {
    const model = encoderFolder('bert-stsb', 'bert');
    const rows = sst2Rows().map(([s, l], i) => [i, 'main-captions', 'MSRvid', '2012', '0001', 'none', 'none', s, 'it was fine .', (l * 4 + (i % 3) * 0.2).toFixed(3)].join('\t'));
    const file = tmpPath('stsb.tsv');
    fs.writeFileSync(file, 'index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n' + rows.join('\n') + '\n');
    const r = await vera(['train', '--model', model, '--task', 'seq-cls', '--glue-task', 'stsb', '--data', file, '--eval-data', file, ...VERA, '--steps', '120', '--batch-size', '8', '--out', tmpPath('out-stsb'), '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /newly initialized classifier\.(weight|bias), classifier\.(weight|bias) for stsb \(1 label\)/);
    // --json without --quiet: progress objects, one per line, then the summary
    const s = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { evalMetrics: Record<string, number>; evalAccuracy: number | null };
    assert.deepEqual(Object.keys(s.evalMetrics).sort(), ['eval_loss', 'eval_pearson', 'eval_spearmanr']);
    assert.ok(s.evalMetrics.eval_pearson > 0.5, `pearson ${s.evalMetrics.eval_pearson}`);
    assert.equal(s.evalAccuracy, null);
  });

  test('bad input: one line on stderr, no output folder', async () => {
    const model = encoderFolder('bert-bad', 'bert');
    const bad = tmpPath('bad.tsv');
    fs.writeFileSync(bad, 'sentence\tlabel\nfine .\t1\nbad .\tpositive\n');
    const test = tmpPath('test.tsv');
    fs.writeFileSync(test, 'index\tsentence\n0\tfine .\n');
    const out = tmpPath('never');
    const common = ['--method', 'vera', '--r', '4', '--target-modules', 'query', '--steps', '1', '--out', out, '--quiet'];
    const cases: [string[], RegExp][] = [
      [['--model', model, '--task', 'seq-cls', '--data', bad, ...common], /--task seq-cls needs --glue-task/],
      [['--model', model, '--task', 'seq-cls', '--glue-task', 'sst2', '--data', bad, ...common], /bad\.tsv:3: column 2 \("label"\): label "positive" is not one of 0, 1$/],
      [['--model', model, '--task', 'seq-cls', '--glue-task', 'sst2', '--data', test, ...common], /test\.tsv: has no "label" column \(a test split\?\)/],
      [['--model', model, '--task', 'seq-cls', '--glue-task', 'sst2', '--data', tmpPath('sst2.tsv'), '--seq-len', '100', ...common], /--seq-len 100 exceeds the model's 64 positions/],
      [['--model', model, '--task', 'causal-lm', '--data', bad, ...common], /model_type "bert" is not a causal language model; .*use --task seq-cls/],
      [['--model', model, '--task', 'img-cls', '--data', `fashion-mnist:${FASHION}`, ...common], /model_type "bert" is not an image classifier/],
      [['--model', model, '--glue-task', 'sst2', '--data', bad, ...common], /--glue-task is for --task seq-cls, not --task causal-lm/],
      [['--model', model, '--task', 'seq-cls', '--data-format', 'jsonl', '--data', bad, ...common], /--data-format jsonl is not for --task seq-cls \(use glue\)/],
      [['--model', model, '--task', 'seq-cls', '--glue-task', 'sst2', ...common], /--data \(or --train\) is required/],
    ];
    for (const [args, pattern] of cases) {
      const r = await vera(['train', ...args]);
      assert.notEqual(r.code, 0, args.join(' '));
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, `one line on stderr, got: ${r.stderr}`);
      assert.match(lines[0], pattern);
      assert.ok(!fs.existsSync(out));
    }
  });
});

describe('vera train --task img-cls', () => {
  test('an MLP on the Fashion-MNIST subset: eval accuracy rises and matches the saved adapter', async () => {
    const config = { inputSize: 784, hiddenSizes: [32], numClasses: 10 };
    const dir = tmpPath('mlp');
    savePretrained(dir, new MLP(config, new Rng(3)), mlpConfigToJson(config));
    const out = tmpPath('out-mlp');
    const spec = `fashion-mnist:${FASHION}`;
    const s = await trainJson(['--model', dir, '--task', 'img-cls', '--data', spec, '--eval-data', spec, '--method', 'vera', '--r', '32', '--target-modules', 'layers.0', '--modules-to-save', 'layers.1', '--lr', '0.02', '--head-lr', '0.01', '--steps', '60', '--batch-size', '32', '--out', out]);
    assert.equal(s.task, 'img-cls');
    assert.equal(s.sequences, 10000);
    assert.equal(s.evalSequences, 2000);
    const test = loadFashionMnist(FASHION, 'test');
    const accuracyOf = (model: MLP): number => {
      model.eval();
      const predicted = noGrad(() => F.argmax(model.forward(Tensor.fromArray(test.images, [test.count, 784]))));
      return accuracy([...predicted], test.labels);
    };
    const before = accuracyOf(loadPretrained(dir, { log: () => {} }).model as MLP);
    const trained = loadPretrained(dir, { log: () => {} }).model as MLP;
    PeftModel.fromPretrained(trained, out);
    const after = accuracyOf(trained);
    assert.ok(Math.abs(after - (s.evalAccuracy as number)) < 1e-12, `${after} vs ${String(s.evalAccuracy)}`);
    assert.ok(after > before + 0.2, `accuracy ${before} → ${after}`);
  });

  test('explicit IDX files; labels outside the classes and wrong image sizes are one-line errors', async () => {
    const config = { inputSize: 784, hiddenSizes: [8], numClasses: 3 };
    const dir = tmpPath('mlp3');
    savePretrained(dir, new MLP(config, new Rng(3)), mlpConfigToJson(config));
    const out = tmpPath('never-img');
    const files = `${path.join(FASHION, 'train-images-idx3-ubyte.gz')},${path.join(FASHION, 'train-labels-idx1-ubyte.gz')}`;
    const r = await vera(['train', '--model', dir, '--task', 'img-cls', '--data', files, '--method', 'vera', '--r', '4', '--target-modules', 'layers.0', '--steps', '1', '--out', out, '--quiet']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr.trim(), /train-labels-idx1-ubyte\.gz: label \d of image \d+ is outside the model's 3 classes$/);
    const r2 = await vera(['train', '--model', dir, '--task', 'img-cls', '--data', 'just-one-file', '--method', 'vera', '--r', '4', '--target-modules', 'layers.0', '--steps', '1', '--out', out, '--quiet']);
    assert.match(r2.stderr.trim(), /--data just-one-file: expected fashion-mnist:DIR or IMAGES,LABELS/);
    assert.ok(!fs.existsSync(out));
  });
});

describe('vera train --data-format e2e', () => {
  const rows = ['Alimentum', 'Aromi', 'Bibimbap'].flatMap((n) => [`"name[${n}], area[city]","${n} is in the city."`, `"name[${n}], area[city]","In the city: ${n}."`]);
  /** gpt2-tiny with a tokenizer, and an E2E CSV of `rows`. */
  const setup = (name: string): { dir: string; file: string } => {
    const dir = tmpPath(`gpt2-${name}`);
    fs.mkdirSync(dir);
    const tiny = path.join(ROOT, 'test', 'fixtures', 'gpt2-tiny');
    for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(tiny, f), path.join(dir, f));
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), tinyGpt2TokenizerJson());
    const file = tmpPath(`${name}.csv`);
    fs.writeFileSync(file, 'mr,ref\n' + rows.join('\n') + '\n');
    return { dir, file };
  };

  test('gpt2-tiny on an E2E CSV: the loss covers the references only and goes down', async () => {
    const { dir, file } = setup('e2e');
    const out = tmpPath('out-e2e');
    const s = await trainJson(['--model', dir, '--data-format', 'e2e', '--data', file, '--eval-data', file, '--method', 'vera', '--r', '8', '--target-modules', 'c_attn,c_proj,c_fc', '--lr', '0.05', '--steps', '12', '--batch-size', '3', '--out', out]);
    assert.equal(s.sequences, 6);
    const log = JSON.parse(fs.readFileSync(path.join(out, 'training_log.json'), 'utf8')) as { data: { targetTokens: number; format: string }; history: Record<string, number>[] };
    assert.equal(log.data.format, 'e2e');
    // the targets are " ref" + <|endoftext|> of each row, nothing of the MR prompt
    const tok = (await loadTokenizer(dir))!;
    const refs = rows.map((r) => r.split('","')[1].slice(0, -1));
    assert.equal(log.data.targetTokens, refs.reduce((n, ref) => n + tok.encode(` ${ref}`).length + 1, 0));
    const first = log.history.find((h) => typeof h.loss === 'number')!;
    assert.ok((s.trainLoss as number) < first.loss, `loss ${first.loss} → ${String(s.trainLoss)}`);
    assert.equal(typeof s.evalPerplexity, 'number');
  });

  test('the generation eval: BLEU and ROUGE-L of e2e_predictions.txt, texts the saved adapter generates', async () => {
    const { dir, file } = setup('e2e-gen');
    const out = tmpPath('out-e2e-gen');
    const beams = { numBeams: 3, lengthPenalty: 0.9, noRepeatNgramSize: 4, maxNewTokens: 16 };
    const s = await trainJson(['--model', dir, '--data-format', 'e2e', '--data', file, '--eval-data', file, '--method', 'vera', '--r', '8', '--target-modules', 'c_attn,c_proj,c_fc',
      '--lr', '0.05', '--steps', '30', '--batch-size', '3', '--label-smoothing', '0.1', '--num-beams', '3', '--length-penalty', '0.9', '--max-new-tokens', '16', '--eval-limit', '2', '--out', out]);
    const e2e = s.e2e as { bleu: number; nist: number; rougeL: number; cider: number; mrs: number; predictions: string; numBeams: number; maxNewTokens: number };
    assert.equal(e2e.mrs, 2);
    assert.equal(e2e.numBeams, 3);
    const predictions = fs.readFileSync(path.join(out, 'e2e_predictions.txt'), 'utf8').split('\n').slice(0, -1);
    assert.equal(predictions.length, 2);
    const groups = groupReferences(readE2eCsv(file)).slice(0, 2);
    assert.equal(fs.readFileSync(path.join(out, 'e2e_references.txt'), 'utf8'), groups.map((g) => g.refs.join('\n') + '\n').join('\n'));
    // the reported metrics are those of the written texts
    const refs = groups.map((g) => g.refs);
    assert.equal(e2e.bleu, corpusBleu(predictions, refs).bleu);
    assert.equal(e2e.rougeL, corpusRougeL(predictions, refs).rougeL);
    assert.equal(e2e.nist, corpusNist(predictions, refs));
    assert.equal(e2e.cider, corpusCider(predictions, refs));
    const metrics = s.evalMetrics as Record<string, number>;
    assert.equal(metrics.eval_bleu, e2e.bleu);
    assert.ok(e2e.rougeL > 0, `ROUGE-L ${e2e.rougeL}: the adapter learned nothing of the references (${predictions.join(' | ')})`);
    // and the texts are what beam search generates with the saved adapter
    const model = loadPretrained(dir).model as unknown as Parameters<typeof beamSearch>[0] & Module;
    PeftModel.fromPretrained(model, out);
    const tok = (await loadTokenizer(dir))!;
    groups.forEach((g, i) => {
      const result = beamSearch(model, tok.encode(e2ePrompt(g.mr)), { ...beams, eosTokenIds: [100] });
      const ids = result.finishReason === 'eos' ? result.tokens.slice(0, -1) : result.tokens;
      assert.equal(predictions[i], tok.decode(ids).replace(/\s+/g, ' ').trim());
    });
    const log = JSON.parse(fs.readFileSync(path.join(out, 'training_log.json'), 'utf8')) as { options: Record<string, unknown>; summary: { e2e: unknown } };
    assert.equal(log.options.labelSmoothing, 0.1);
    assert.deepEqual(log.summary.e2e, e2e);
  });

  test('the generation flags need the E2E eval; a too long --max-new-tokens fails before training', async () => {
    const { dir, file } = setup('e2e-flags');
    const out = tmpPath('out-e2e-flags');
    const r = await vera(['train', '--model', dir, '--data-format', 'e2e', '--data', file, '--method', 'vera', '--r', '4', '--num-beams', '4', '--steps', '1', '--out', out, '--quiet']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr.trim(), /^vera: --num-beams is for the E2E generation eval \(--task causal-lm --data-format e2e with --eval-data\)$/);
    const r2 = await vera(['train', '--model', dir, '--data-format', 'e2e', '--data', file, '--eval-data', file, '--method', 'vera', '--r', '4', '--max-new-tokens', '60', '--steps', '1', '--out', out, '--quiet']);
    assert.match(r2.stderr.trim(), /e2e-flags\.csv: an MR prompt of \d+ tokens \+ --max-new-tokens 60 exceeds the model's context of 64 positions$/);
    assert.ok(!fs.existsSync(out));
  });
});
