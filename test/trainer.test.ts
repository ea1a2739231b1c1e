// The Trainer class (src/train/trainer-class.ts) on the tiny GPT-2 fixture: callbacks in order,
// early stopping, best and last adapters, the same bytes as `vera train`; and what `vera train`
// now prints: --json progress lines, the eos default of "text" rows and the truncated-row count.
import '../src/backends/index.js';
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';

import { readCausalLmJsonl } from '../src/data/jsonl.js';
import { loadTokenizer } from '../src/data/tokenizer.js';
import { loadPretrained, type GPT2LMHeadModel } from '../src/models/index.js';
import { getPeftModel, PeftModel, veraConfig } from '../src/peft/index.js';
import { manualSeed } from '../src/tensor/index.js';
import {
  causalLmBatchLoss, causalLmCollator, evaluateCausalLm, prepareTask, ProgressReporter, Trainer, type LmExample, type SaveEvent,
} from '../src/train/index.js';
import { runVera as vera, tinyGpt2TokenizerJson } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const TINY = path.join(ROOT, 'test', 'fixtures', 'gpt2-tiny');
const EOS = 100;

let tmp = '';
let data = ''; // 16 rows of a repeating pattern, as input_ids
let evalData = '';
const rows: number[][] = Array.from({ length: 16 }, (_, i) => Array.from({ length: 10 + (i % 3) }, (_, k) => ((i + k) % 7) * 5 + 1));
const evalRows = rows.slice(0, 5);
const tmpPath = (...parts: string[]): string => path.join(tmp, ...parts);
const examples = (r: number[][]): LmExample[] => r.map((ids) => ({ ids: Int32Array.from(ids), labels: null }));
const VERA = { targetModules: ['c_attn', 'c_proj', 'c_fc'], r: 8, fanInFanOut: true };

function writeJsonl(file: string, list: unknown[]): string {
  fs.writeFileSync(file, list.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

function gpt2(): GPT2LMHeadModel {
  return loadPretrained(TINY).model as GPT2LMHeadModel;
}

/** A VeRA PeftModel on a fresh gpt2-tiny, seeded as `vera train` seeds it. */
function veraModel(seed = 42): PeftModel<GPT2LMHeadModel> {
  manualSeed(seed);
  const model = gpt2();
  manualSeed(seed);
  return getPeftModel(model, veraConfig(VERA));
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vera-trainer-'));
  data = writeJsonl(tmpPath('data.jsonl'), rows.map((ids) => ({ input_ids: ids })));
  evalData = writeJsonl(tmpPath('eval.jsonl'), evalRows.map((ids) => ({ input_ids: ids })));
});

after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('Trainer', () => {
  test('calls onStep, onEval and onSave in order; saves best/ and last/, both reloadable with their recorded eval loss', async () => {
    const peft = veraModel();
    const events: string[] = [];
    const saves: SaveEvent[] = [];
    const out = tmpPath('run');
    const trainer = new Trainer({
      model: peft,
      trainDataset: examples(rows),
      evalDataset: examples(evalRows),
      collator: causalLmCollator(EOS),
      loss: (model, batch) => causalLmBatchLoss(model, batch),
      unit: 'tokens',
      args: { steps: 6, batchSize: 4, lr: 0.05, evalEvery: 2, outputDir: out, saveBest: { metric: 'loss' }, progress: false },
      callbacks: {
        onStep: (s) => events.push(`step ${s.step}`),
        onEval: (m, step) => events.push(`eval ${step} ${typeof m['eval_loss']}`),
        onSave: (e) => (events.push(`save ${e.kind} ${e.step}`), saves.push(e)),
      },
    });
    const log = await trainer.train();
    assert.equal(log.steps, 6);
    assert.equal(log.stoppedEarly, false);
    // steps in order; an eval right after its step; a best save only right after an eval; last at the end
    const stepsSeen = events.filter((e) => e.startsWith('step')).map((e) => Number(e.split(' ')[1]));
    assert.deepEqual(stepsSeen, [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(events.filter((e) => e.startsWith('eval')), ['eval 2 number', 'eval 4 number', 'eval 6 number']);
    events.forEach((e, i) => {
      if (e.startsWith('eval')) assert.equal(events[i - 1], `step ${e.split(' ')[1]}`);
      if (e.startsWith('save best')) assert.ok(events[i - 1].startsWith('eval'), events.join(' | '));
    });
    assert.equal(events.at(-1), 'save last 6');
    assert.ok(saves.some((s) => s.kind === 'best'));

    // the best is the lowest eval loss of the history, at its step
    const evals = log.history.filter((h) => typeof h['eval_loss'] === 'number');
    assert.equal(evals.length, 3);
    const lowest = evals.reduce((a, b) => ((b['eval_loss'] as number) < (a['eval_loss'] as number) ? b : a));
    assert.deepEqual(log.bestMetric, { name: 'eval_loss', value: lowest['eval_loss'], step: lowest.step });
    assert.ok((evals[2]['eval_loss'] as number) < (evals[0]['eval_loss'] as number), 'the eval loss goes down');

    // both folders load into a fresh model and give the eval loss recorded for them
    const evalSeqs = evalRows.map((r) => Int32Array.from(r));
    const best = PeftModel.fromPretrained(gpt2(), path.join(out, 'best'));
    assert.ok(Math.abs(evaluateCausalLm(best, evalSeqs, 8, EOS).loss - log.bestMetric!.value) < 1e-5);
    const last = PeftModel.fromPretrained(gpt2(), path.join(out, 'last'));
    assert.ok(Math.abs(evaluateCausalLm(last, evalSeqs, 8, EOS).loss - log.evalMetrics!['eval_loss']) < 1e-5);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out, 'best', 'best.json'), 'utf8')), { step: lowest.step, metric: 'eval_loss', value: lowest['eval_loss'] });
    assert.ok(fs.existsSync(path.join(out, 'last', 'training_log.json')));
  });

  test('early stopping stops the loop after `patience` evaluations without improvement', async () => {
    const stepsRun: number[] = [];
    const trainer = new Trainer({
      model: veraModel(),
      trainDataset: examples(rows),
      evalDataset: examples(evalRows),
      collator: causalLmCollator(EOS),
      loss: (model, batch) => causalLmBatchLoss(model, batch),
      args: { steps: 40, batchSize: 4, lr: 0.05, evalEvery: 1, progress: false },
      // the loss does fall, but never by 10 nats: after the first eval, each one counts as no improvement
      earlyStopping: { metric: 'eval_loss', patience: 2, threshold: 10 },
      callbacks: { onStep: (s) => stepsRun.push(s.step) },
    });
    const log = await trainer.train();
    assert.equal(log.stoppedEarly, true);
    assert.equal(log.steps, 3);
    assert.deepEqual(stepsRun, [1, 2, 3]);
    assert.equal(log.history.at(-1)!.step, 3);
    assert.equal(trainer.steps, 40);

    // with a reachable threshold the same run goes on while the loss falls
    const patient = new Trainer({
      model: veraModel(),
      trainDataset: examples(rows),
      evalDataset: examples(evalRows),
      collator: causalLmCollator(EOS),
      loss: (model, batch) => causalLmBatchLoss(model, batch),
      args: { steps: 6, batchSize: 4, lr: 0.05, evalEvery: 1, progress: false },
      earlyStopping: { metric: 'eval_loss', patience: 2, threshold: 0 },
    });
    const full = await patient.train();
    assert.equal(full.steps, 6);
    assert.equal(full.stoppedEarly, false);
  });

  test('a plain model trains whole (every parameter in the optimizer)', async () => {
    manualSeed(42);
    const model = gpt2();
    const before = model.namedParameters().map(([, t]) => t.toFloat32Array().slice());
    const trainer = new Trainer({ model, trainDataset: examples(rows), collator: causalLmCollator(EOS), loss: (m, b) => causalLmBatchLoss(m, b), args: { steps: 2, batchSize: 4, progress: false } });
    assert.equal(trainer.params.length, model.namedParameters().length);
    const log = await trainer.train();
    assert.ok(Number.isFinite(log.finalLoss));
    const changed = model.namedParameters().filter(([, t], i) => t.toFloat32Array().some((v, j) => v !== before[i][j]));
    assert.equal(changed.length, before.length);
  });

  test('gives the same adapter bytes as `vera train` with the same seed and options (task form and rows form)', async () => {
    const out = tmpPath('cli-out');
    const r = await vera(['train', '--model', TINY, '--data', data, '--method', 'vera', '--r', '8', '--target-modules', 'c_attn,c_proj,c_fc', '--lr', '0.05', '--batch-size', '4', '--steps', '6', '--quiet', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const cliBytes = fs.readFileSync(path.join(out, 'adapter_model.safetensors'));

    // the task builder `vera train` uses, then the Trainer
    manualSeed(42);
    const task = await prepareTask({ task: 'causal-lm', model: TINY, data, dataFormat: 'jsonl', batchSize: 4, log: () => {} });
    manualSeed(42);
    const peft = getPeftModel(task.model, veraConfig(VERA));
    await new Trainer({ model: peft, task, args: { steps: 6, batchSize: 4, lr: 0.05, progress: false } }).train();
    assert.ok(Buffer.from(peft.adapterFiles()['adapter_model.safetensors'] as Uint8Array).equals(cliBytes), 'task form differs from vera train');

    // rows + the causal-LM collator: the same batches, so the same bytes
    const rowsPeft = veraModel();
    await new Trainer({ model: rowsPeft, trainDataset: examples(rows), collator: causalLmCollator(EOS), loss: (m, b) => causalLmBatchLoss(m, b), args: { steps: 6, batchSize: 4, lr: 0.05, progress: false } }).train();
    assert.ok(Buffer.from(rowsPeft.adapterFiles()['adapter_model.safetensors'] as Uint8Array).equals(cliBytes), 'rows form differs from vera train');
  });
});

describe('vera train output', () => {
  test('--json: every stdout line is one JSON object; progress lines carry step, loss, lr, eta, and eval metrics only when new; the summary last', async () => {
    const r = await vera(['train', '--model', TINY, '--data', data, '--eval-data', evalData, '--method', 'vera', '--r', '8', '--lr', '0.05', '--batch-size', '4', '--steps', '4', '--eval-every', '2', '--json', '--out', tmpPath('json-out')]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const progress = lines.filter((l) => l['type'] === 'progress');
    assert.deepEqual(progress.map((p) => p['step']), [1, 2, 3, 4]);
    for (const p of progress) {
      for (const k of ['loss', 'lr', 'etaSeconds', 'tokensPerSecond']) assert.equal(typeof p[k], 'number', `${k} in ${JSON.stringify(p)}`);
      assert.equal(typeof p['eval_loss'] === 'number', p['step'] === 2 || p['step'] === 4, JSON.stringify(p));
    }
    assert.equal(progress.at(-1)!['etaSeconds'], 0);
    const summary = lines.at(-1)!;
    assert.equal(summary['task'], 'causal-lm');
    assert.equal(summary['steps'], 4);
    assert.equal(lines.length, progress.length + 1);
  });

  test('"text" rows end with eos by default; rows cut at --seq-len are counted and printed', async () => {
    const model = tmpPath('tiny-tok');
    fs.mkdirSync(model);
    for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(TINY, f), path.join(model, f));
    fs.writeFileSync(path.join(model, 'tokenizer.json'), tinyGpt2TokenizerJson());
    const text = writeJsonl(tmpPath('text.jsonl'), [{ text: 'the cat' }, { text: 'hello the world, all at the ball and the hall!' }, { text: 'all' }, { input_ids: [1, 2, 3] }]);
    const out = tmpPath('text-out');
    const r = await vera(['train', '--model', model, '--data', text, '--method', 'vera', '--r', '4', '--steps', '1', '--seq-len', '8', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^data: 1 of 4 rows were longer than --seq-len 8 and were cut$/m);
    const log = JSON.parse(fs.readFileSync(path.join(out, 'training_log.json'), 'utf8')) as { data: Record<string, unknown> };
    assert.equal(log.data['appendEos'], EOS);
    assert.equal(log.data['appendEosTo'], 'text');
    assert.equal(log.data['truncated'], 1);

    // the same rows read by the library: text rows end with eos unless cut; input_ids rows as given
    const read = await readCausalLmJsonl(text, { vocabSize: 101, seqLen: 8, tokenizer: () => loadTokenizer(model), appendEos: EOS, appendEosTo: 'text' });
    const [cat, long, all, ids] = read.sequences;
    assert.equal(cat.at(-1), EOS);
    assert.equal(long.length, 8);
    assert.notEqual(long.at(-1), EOS);
    assert.equal(all.at(-1), EOS);
    assert.deepEqual([...ids], [1, 2, 3]);
    assert.equal(log.data['tokens'], read.tokens);

    // --no-append-eos: none
    const none = await vera(['train', '--model', model, '--data', text, '--method', 'vera', '--r', '4', '--steps', '1', '--seq-len', '8', '--no-append-eos', '--quiet', '--out', tmpPath('text-none')]);
    assert.equal(none.code, 0, none.stderr);
    const noneLog = JSON.parse(fs.readFileSync(path.join(tmpPath('text-none'), 'training_log.json'), 'utf8')) as { data: Record<string, unknown> };
    assert.equal(noneLog.data['appendEos'], undefined);
    assert.equal(noneLog.data['tokens'], (read.tokens as number) - 2);
  });
});

class Capture extends Writable {
  text = '';
  constructor(public isTTY: boolean) {
    super();
  }
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

test('ProgressReporter without a TTY prints each eval metric once, on the line after its step; the ETA follows the smoothed step time', () => {
  const out = new Capture(false);
  const p = new ProgressReporter({ total: 6, logEvery: 1, unit: 'tokens', stream: out });
  for (let s = 1; s <= 6; s++) p.update(s, { loss: 1 / s, items: 10, extra: { lr: 1e-3 }, metrics: s === 2 ? { eval_loss: 0.5 } : null });
  p.stop();
  const lines = out.text.trim().split('\n');
  assert.equal(lines.filter((l) => l.includes('eval_loss')).length, 1, out.text);
  assert.equal(lines[2], 'step 2: eval_loss 0.5000');
  assert.ok(lines[1].startsWith('train 2/6'));
  assert.ok(Number.isFinite(p.stepSeconds) && p.stepSeconds >= 0);
  assert.equal(p.eta, 0);
});
