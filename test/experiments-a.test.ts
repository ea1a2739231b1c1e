// The paper-figure experiments fig6-expressivity, fig2-rank-scaling and table12-cost through the
// real runner (`node dist/experiments/cli.js NAME --tiny`): the files are written, the raw numbers
// are finite, the plots show their series. fig6 needs no model; the other two train on the embedded
// text model and are skipped when data/fortune-llama has not been built.
import '../src/backends/index.js';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { meanStd } from '../experiments/stats.js';
import { checkNumbers, withTmp } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MODEL = path.join(ROOT, 'data', 'fortune-llama');
const CLI = path.join(ROOT, 'dist', 'experiments', 'cli.js');
const run = promisify(execFile);
const NO_MODEL = existsSync(path.join(MODEL, 'model.safetensors')) ? false : 'data/fortune-llama is not there: the embedded text model this experiment trains on has not been built';

/** Each experiment: the plots it writes and the names each must show; whether it needs the text model. */
const EXPERIMENTS: { name: string; plots: Record<string, string[]>; model: boolean }[] = [
  { name: 'fig6-expressivity', plots: { 'fig6-expressivity.svg': ['LoRA', 'VeRA', 'trainable parameters'] }, model: false },
  { name: 'fig2-rank-scaling', plots: { 'fig2-rank-scaling-text.svg': ['LoRA', 'VeRA', 'base model (no adapter)', 'perplexity'], 'fig2-rank-scaling-fashion.svg': ['LoRA', 'VeRA', 'head only (no adapter)', 'accuracy'] }, model: true },
  { name: 'fig2-rank-scaling-dora', plots: { 'fig2-rank-scaling-dora-text.svg': ['DVoRA', 'DoRA', 'VeRA', 'LoRA', 'perplexity'], 'fig2-rank-scaling-dora-fashion.svg': ['DVoRA', 'DoRA', 'VeRA', 'LoRA', 'accuracy'] }, model: true },
  { name: 'table12-cost', plots: { 'table12-cost.svg': ['LoRA r=64', 'VeRA r=64', 'VeRA r=256', 'median step time (ms)', 'peak RSS (MiB)'] }, model: true },
];

describe('experiments (paper figures) --tiny through the runner', () => {
  for (const e of EXPERIMENTS) {
    test(e.name, { timeout: 120_000, skip: e.model ? NO_MODEL : false }, () =>
      withTmp(async (dir) => {
        // one native thread: the pool's hand-offs stall badly when the test runner's other processes hold the cores
        await run(process.execPath, [CLI, e.name, '--tiny', '--quiet', '--out', dir, '--model', MODEL], { env: { ...process.env, VERA_NUM_THREADS: '1' } });
        const md = readFileSync(path.join(dir, `${e.name}.md`), 'utf8');
        assert.match(md, /^# /);
        assert.ok(md.includes(`npm run experiments -- ${e.name} --tiny`), 'the markdown gives the command that regenerates it');
        assert.match(md, /Seeds: 0\b/);
        assert.match(md, /\n\|[-|: ]+\|\n/, 'a table');
        assert.match(md, /Paper \(/, 'what the paper reports');
        assert.ok(!/NaN|Infinity/.test(md), 'no NaN or Infinity in the tables');
        const data = JSON.parse(readFileSync(path.join(dir, `${e.name}.json`), 'utf8')) as Record<string, unknown>;
        assert.ok(checkNumbers(data, e.name) > 5, 'the raw numbers are there');
        for (const [file, names] of Object.entries(e.plots)) {
          const svg = readFileSync(path.join(dir, file), 'utf8');
          assert.match(svg, /^<svg /);
          for (const n of names) assert.ok(svg.includes(n), `${file} shows "${n}"`);
          assert.ok(md.includes(`](${file})`), `the markdown links ${file}`);
        }
      }, 'vera-exp-a-'),
    );
  }
});

describe('per-user experiments --tiny through the runner', () => {
  const PER_USER: { name: string; methods: string[] }[] = [
    { name: 'users', methods: ['VeRA r 256', 'VeRA r 8', 'LoRA r 8', 'LoRA r 1'] },
    { name: 'users-dora', methods: ['VeRA r 256', 'DVoRA r 256', 'LoRA r 8', 'DoRA r 8'] },
  ];
  for (const e of PER_USER) {
    test(e.name, { timeout: 120_000, skip: NO_MODEL }, () =>
      withTmp(async (dir) => {
        await run(process.execPath, [CLI, e.name, '--tiny', '--quiet', '--out', dir, '--model', MODEL], { env: { ...process.env, VERA_NUM_THREADS: '1' } });
        const md = readFileSync(path.join(dir, `${e.name}.md`), 'utf8');
        assert.match(md, /^# /);
        assert.ok(md.includes(`npm run experiments -- ${e.name} --tiny`), 'the markdown gives the command that regenerates it');
        for (const m of e.methods) assert.ok(md.includes(`| ${m} |`), `a row for ${m}`);
        assert.ok(!/NaN|Infinity/.test(md), 'no NaN or Infinity in the tables');
        const data = JSON.parse(readFileSync(path.join(dir, `${e.name}.json`), 'utf8')) as { rows: { before: number; after: number[] }[] };
        assert.ok(checkNumbers(data, e.name) > 5, 'the raw numbers are there');
        assert.equal(data.rows.length, e.methods.length, 'one row per method (one user in --tiny)');
        const svg = readFileSync(path.join(dir, `${e.name}.svg`), 'utf8');
        assert.match(svg, /^<svg /);
        for (const n of ['base', ...e.methods]) assert.ok(svg.includes(n), `${e.name}.svg shows "${n}"`);
      }, 'vera-exp-u-'),
    );
  }
});

test('users-dora and fig2-rank-scaling-dora take VeRA\'s and LoRA\'s rows from users / fig2-rank-scaling run in the same folder, and give the numbers those runs gave', { timeout: 240_000, skip: NO_MODEL }, () =>
  withTmp(async (dir) => {
    const env = { env: { ...process.env, VERA_NUM_THREADS: '1' } };
    for (const name of ['users', 'users-dora', 'fig2-rank-scaling', 'fig2-rank-scaling-dora']) {
      await run(process.execPath, [CLI, name, '--tiny', '--quiet', '--out', dir, '--model', MODEL], env);
    }
    const json = (name: string): Record<string, unknown> => JSON.parse(readFileSync(path.join(dir, `${name}.json`), 'utf8')) as Record<string, unknown>;
    assert.match(readFileSync(path.join(dir, 'users-dora.md'), 'utf8'), /not retrained here/);
    type Row = { user?: string; method: string; r?: number; after?: number[]; values?: number[] };
    const users = json('users').rows as Row[];
    const usersDora = json('users-dora').rows as Row[];
    for (const m of ['VeRA r 256', 'LoRA r 8']) assert.deepEqual(usersDora.find((r) => r.method === m), users.find((r) => r.method === m), m);
    assert.match(readFileSync(path.join(dir, 'fig2-rank-scaling-dora.md'), 'utf8'), /not retrained here/);
    const fig2 = json('fig2-rank-scaling') as { text: { rows: Row[] } };
    const fig2Dora = json('fig2-rank-scaling-dora') as { text: { rows: Row[] } };
    assert.deepEqual(fig2Dora.text.rows.filter((r) => r.method === 'VeRA' || r.method === 'LoRA'), fig2.text.rows);
    assert.deepEqual(fig2Dora.text.rows.map((r) => r.method), ['VeRA', 'LoRA', 'DVoRA', 'DoRA']);
  }, 'vera-exp-r-'),
);

test('meanStd: sample standard deviation, 0 for one value', () => {
  assert.deepEqual(meanStd([3]), { mean: 3, std: 0 });
  const { mean, std } = meanStd([1, 2, 3, 4]);
  assert.equal(mean, 2.5);
  assert.ok(Math.abs(std - Math.sqrt(5 / 3)) < 1e-12);
});
