// `vera train --early-stopping-patience` and `--save-best`: the run really stops early (fewer
// steps in training_log.json), <out>/best holds the best evaluation's adapter (it reloads and gives
// the recorded eval loss) beside the last one in <out>, and bad combinations are refused in one
// line with nothing written. The CLI runs as a child process on the tiny GPT-2 fixture.
import '../src/backends/index.js';
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { evaluateCausalLm } from '../src/train/index.js';
import { loadPretrained, type GPT2LMHeadModel } from '../src/models/index.js';
import { PeftModel } from '../src/peft/index.js';
import { runVera as vera } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const TINY = path.join(ROOT, 'test', 'fixtures', 'gpt2-tiny');
const EOS = 100;

let tmp = '';
let data = '';
let evalData = '';
const rows: number[][] = Array.from({ length: 16 }, (_, i) => Array.from({ length: 10 + (i % 3) }, (_, k) => ((i + k) % 7) * 5 + 1));
const evalSeqs = rows.slice(0, 5).map((r) => Int32Array.from(r));
const tmpPath = (...parts: string[]): string => path.join(tmp, ...parts);
const VERA = ['--method', 'vera', '--r', '8', '--target-modules', 'c_attn,c_proj,c_fc', '--batch-size', '4', '--quiet', '--json'];

function gpt2(): GPT2LMHeadModel {
  return loadPretrained(TINY).model as GPT2LMHeadModel;
}

interface Run { summary: Record<string, unknown>; history: Record<string, number>[] }

async function trainOk(args: string[]): Promise<Run> {
  const out = args[args.indexOf('--out') + 1];
  const r = await vera(['train', '--model', TINY, '--data', data, '--eval-data', evalData, ...VERA, ...args]);
  assert.equal(r.code, 0, `vera train failed: ${r.stderr}`);
  const log = JSON.parse(fs.readFileSync(path.join(out, 'training_log.json'), 'utf8')) as { history: Record<string, number>[] };
  return { summary: JSON.parse(r.stdout.trim()) as Record<string, unknown>, history: log.history };
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vera-cli-best-'));
  data = tmpPath('data.jsonl');
  evalData = tmpPath('eval.jsonl');
  fs.writeFileSync(data, rows.map((ids) => JSON.stringify({ input_ids: ids })).join('\n') + '\n');
  fs.writeFileSync(evalData, rows.slice(0, 5).map((ids) => JSON.stringify({ input_ids: ids })).join('\n') + '\n');
});

after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('vera train --early-stopping-patience / --save-best', () => {
  test('early stopping ends the run: fewer steps in training_log.json, the adapter of the step it stopped at', async () => {
    // the eval loss falls, but never by 10 nats: after the first evaluation none counts as an improvement
    const out = tmpPath('es');
    const { summary, history } = await trainOk(['--lr', '0.05', '--steps', '40', '--eval-every', '1', '--early-stopping-patience', '2', '--early-stopping-threshold', '10', '--out', out]);
    assert.equal(summary['stoppedEarly'], true);
    assert.equal(summary['steps'], 3);
    assert.equal(history.at(-1)!.step, 3);
    assert.ok(history.length <= 3, `history of ${history.length} rows`);
    const peft = PeftModel.fromPretrained(gpt2(), out);
    assert.ok(Math.abs(evaluateCausalLm(peft, evalSeqs, 8, EOS).loss - (summary['evalLoss'] as number)) < 1e-5);

    // with a threshold that improvements pass, the same run goes on to --steps
    const full = await trainOk(['--lr', '0.05', '--steps', '6', '--eval-every', '1', '--early-stopping-patience', '2', '--out', tmpPath('es-full')]);
    assert.equal(full.summary['stoppedEarly'], false);
    assert.equal(full.summary['steps'], 6);
  });

  test('--save-best: <out>/best holds the best evaluation\'s adapter (reloads with its recorded loss), <out> the last', async () => {
    // a large lr makes the loss bounce, so the best evaluation need not be the last
    const out = tmpPath('best');
    const { summary, history } = await trainOk(['--lr', '0.5', '--steps', '8', '--eval-every', '2', '--save-best', '--out', out]);
    assert.deepEqual(fs.readdirSync(out).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'best', 'training_log.json']);
    assert.deepEqual(fs.readdirSync(path.join(out, 'best')).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'best.json']);
    const evals = history.filter((h) => typeof h['eval_loss'] === 'number');
    assert.equal(evals.length, 4);
    const lowest = evals.reduce((a, b) => (b['eval_loss'] < a['eval_loss'] ? b : a));
    const info = JSON.parse(fs.readFileSync(path.join(out, 'best', 'best.json'), 'utf8')) as { step: number; metric: string; value: number };
    assert.deepEqual(info, { step: lowest.step, metric: 'eval_loss', value: lowest['eval_loss'] });
    assert.deepEqual(summary['best'], { metric: 'eval_loss', value: lowest['eval_loss'], step: lowest.step, dir: path.join(out, 'best') });

    const best = PeftModel.fromPretrained(gpt2(), path.join(out, 'best'));
    assert.ok(Math.abs(evaluateCausalLm(best, evalSeqs, 8, EOS).loss - info.value) < 1e-5, 'best/ gives its recorded eval loss');
    const last = PeftModel.fromPretrained(gpt2(), out);
    assert.ok(Math.abs(evaluateCausalLm(last, evalSeqs, 8, EOS).loss - (summary['evalLoss'] as number)) < 1e-5, '<out> gives the last eval loss');
  });

  test('--save-best accuracy keeps the highest next-token accuracy', async () => {
    const out = tmpPath('best-acc');
    const { history } = await trainOk(['--lr', '0.5', '--steps', '6', '--eval-every', '2', '--save-best', 'accuracy', '--out', out]);
    const evals = history.filter((h) => typeof h['eval_accuracy'] === 'number');
    const highest = evals.reduce((a, b) => (b['eval_accuracy'] > a['eval_accuracy'] ? b : a));
    const info = JSON.parse(fs.readFileSync(path.join(out, 'best', 'best.json'), 'utf8')) as { step: number; metric: string; value: number };
    assert.deepEqual(info, { step: highest.step, metric: 'eval_accuracy', value: highest['eval_accuracy'] });
  });
});

describe('vera train: bad early-stopping / save-best combinations fail in one line and write nothing', { concurrency: 2 }, () => {
  const out = (): string => tmpPath('never-written');
  const base = (withEval = true): string[] => ['train', '--model', TINY, '--data', data, ...(withEval ? ['--eval-data', evalData] : []), ...VERA.filter((a) => a !== '--json'), '--steps', '2', '--out', out()];
  const cases: [string, () => string[], RegExp][] = [
    ['patience without --eval-data', () => [...base(false), '--early-stopping-patience', '2'], /--early-stopping-patience needs --eval-data/],
    ['--save-best without --eval-data', () => [...base(false), '--save-best'], /--save-best needs --eval-data/],
    ['patience without --eval-every', () => [...base(), '--early-stopping-patience', '2'], /--early-stopping-patience needs --eval-every/],
    ['--save-best without --eval-every', () => [...base(), '--save-best'], /--save-best needs --eval-every/],
    ['--early-stopping-metric alone', () => [...base(), '--eval-every', '1', '--early-stopping-metric', 'loss'], /--early-stopping-metric needs --early-stopping-patience/],
    ['--early-stopping-threshold alone', () => [...base(), '--eval-every', '1', '--early-stopping-threshold', '0.1'], /--early-stopping-threshold needs --early-stopping-patience/],
    ['a metric the task does not give', () => [...base(), '--eval-every', '1', '--save-best', 'bleu'], /--save-best: --task causal-lm evaluates eval_loss, eval_perplexity, eval_accuracy, not eval_bleu/],
    ['a malformed metric', () => [...base(), '--eval-every', '1', '--early-stopping-patience', '2', '--early-stopping-metric', 'Eval-Loss'], /--early-stopping-metric.*metric name/],
    ['patience 0', () => [...base(), '--eval-every', '1', '--early-stopping-patience', '0'], /--early-stopping-patience.*positive integer/],
    ['with --resume', () => [...base(), '--eval-every', '1', '--save-best', '--checkpoint-dir', tmpPath('ck'), '--resume'], /--save-best cannot be combined with --resume/],
  ];
  for (const [name, args, pattern] of cases) {
    test(name, async () => {
      const r = await vera(args());
      assert.notEqual(r.code, 0);
      // (a backend notice, when the native addon is not built here, is not the error)
      const lines = r.stderr.trimEnd().split('\n').filter((l) => !/^vera: (native backend not available|VERA_BACKEND=)/.test(l));
      assert.equal(lines.length, 1, `one line on stderr, got: ${r.stderr}`);
      assert.match(lines[0], pattern);
      assert.equal(r.stdout, '');
      assert.ok(!fs.existsSync(out()), 'no output folder');
    });
  }
});
