// The embedded-model ablation / analysis experiments (table6-ablations, table7-projections,
// fig3-d-norms, appd-similarity, seed000-forgetting) through the real runner in --tiny mode, and the
// SVD routine they use against matrices with known singular values.
import '../src/backends/index.js';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Rng } from '../src/tensor/index.js';
import { cosine, effectiveRank, singularValues, stableRank } from '../experiments/svd.js';
import { checkNumbers, withTmp } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MODEL = path.join(ROOT, 'data', 'fortune-llama');
const CLI = path.join(ROOT, 'dist', 'experiments', 'cli.js');
const run = promisify(execFile);

/** Each experiment: the plots it writes, and the series names each must show. */
const EXPERIMENTS: { name: string; plots: Record<string, string[]> }[] = [
  { name: 'table6-ablations', plots: { 'table6-ablations.svg': ['startrek', 'only d (λb = 1, d_init 0)', 'uniform [0, 0.1]'] } },
  { name: 'table7-projections', plots: { 'table7-projections.svg': ['shared (one pair for all layers)', 'unique (a pair per layer)'] } },
  { name: 'fig3-d-norms', plots: { 'fig3-d-norms.svg': ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', '‖λd‖', '‖λb‖'] } },
  { name: 'appd-similarity', plots: { 'appd-similarity.svg': ['LoRA–VeRA (same user)', 'LoRA–VeRA (other user)', 'LoRA–random N(0,1)'] } },
  {
    name: 'seed000-forgetting',
    plots: { 'seed000-forgetting.svg': ['VeRA (startrek)', 'LoRA (startrek)'], 'seed000-spectrum.svg': ['VeRA r=1024', 'LoRA r=8', 'LoRA r=64'] },
  },
];

/** Text as an SVG writes it (vega escapes these in text nodes and attributes). */
const svgEscape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

describe('experiments (ablations and analyses) --tiny through the runner', { skip: existsSync(path.join(MODEL, 'model.safetensors')) ? false : 'data/fortune-llama is not there: the embedded text model these experiments train on has not been built' }, () => {
  for (const e of EXPERIMENTS) {
    test(e.name, { timeout: 120_000 }, () =>
      withTmp(async (dir) => {
        // one native thread: the pool's hand-offs stall badly when the test runner's other processes hold the cores
        await run(process.execPath, [CLI, e.name, '--tiny', '--quiet', '--out', dir, '--model', MODEL], { env: { ...process.env, VERA_NUM_THREADS: '1' } });
        const md = readFileSync(path.join(dir, `${e.name}.md`), 'utf8');
        assert.match(md, /^# /);
        assert.ok(md.includes(`npm run experiments -- ${e.name} --tiny`), 'the markdown gives the command that regenerates it');
        assert.match(md, /Seeds: 0 /);
        assert.ok(!/NaN|Infinity/.test(md), 'no NaN or Infinity in the tables');
        const data = JSON.parse(readFileSync(path.join(dir, `${e.name}.json`), 'utf8')) as Record<string, unknown>;
        assert.ok(checkNumbers(data, e.name) > 10, 'the raw numbers are there');
        for (const [file, names] of Object.entries(e.plots)) {
          const svg = readFileSync(path.join(dir, file), 'utf8');
          assert.match(svg, /^<svg /);
          for (const n of names) assert.ok(svg.includes(svgEscape(n)), `${file} shows "${n}"`);
          assert.ok(md.includes(`](${file})`), `the markdown links ${file}`);
        }
      }, 'vera-exp-b-'),
    );
  }
});

/** An orthogonal n × n matrix (row-major) as a product of Householder reflections I − 2vvᵀ/vᵀv. */
function orthogonal(n: number, rng: Rng): Float64Array {
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  for (let h = 0; h < 4; h++) {
    const v = Float64Array.from(rng.fillNormal(new Float32Array(n), 0, 1));
    const vv = v.reduce((a, x) => a + x * x, 0);
    for (let i = 0; i < n; i++) {
      let d = 0;
      for (let k = 0; k < n; k++) d += q[i * n + k]! * v[k]!;
      for (let k = 0; k < n; k++) q[i * n + k] -= (2 * d * v[k]!) / vv;
    }
  }
  return q;
}

/** U · diag(s) · Vᵀ for random orthogonal U (m × m), V (n × n): a matrix whose singular values are s. */
function withSingularValues(m: number, n: number, s: number[], seed: number): Float64Array {
  const rng = new Rng(seed);
  const u = orthogonal(m, rng);
  const v = orthogonal(n, rng);
  const a = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
    let x = 0;
    for (let k = 0; k < s.length; k++) x += u[i * m + k]! * s[k]! * v[j * n + k]!;
    a[i * n + j] = x;
  }
  return a;
}

describe('experiments/svd.ts', () => {
  test('singular values of matrices built with known ones (tall, wide, rank-deficient, repeated)', () => {
    const cases: [number, number, number[]][] = [
      [40, 12, [9, 7.5, 5, 5, 3, 2, 1, 0.5, 0.25, 1e-3, 1e-5, 1e-8]],
      [10, 30, [4, 3, 2, 1, 1, 1, 0.1, 0.01, 0.001, 0.0001]],
      [25, 25, [3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]],
    ];
    for (const [m, n, s] of cases) {
      const got = singularValues(withSingularValues(m, n, s, m * 100 + n), m, n);
      assert.equal(got.length, Math.min(m, n));
      const want = [...s].sort((a, b) => b - a);
      for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) <= 1e-12 * want[0]!, `${m}×${n} σ_${i + 1}: ${got[i]} vs ${want[i]}`);
    }
    // a diagonal matrix, and the transpose gives the same values
    assert.deepEqual([...singularValues([0, -2, 3, 0], 2, 2)], [3, 2]);
    const a = withSingularValues(7, 4, [5, 4, 3, 2], 1);
    const at = new Float64Array(28);
    for (let i = 0; i < 7; i++) for (let j = 0; j < 4; j++) at[j * 7 + i] = a[i * 4 + j]!;
    const [x, y] = [singularValues(a, 7, 4), singularValues(at, 4, 7)];
    for (let i = 0; i < 4; i++) assert.ok(Math.abs(x[i]! - y[i]!) < 1e-12);
    assert.deepEqual([...singularValues(new Float64Array(6), 2, 3)], [0, 0]);
    assert.throws(() => singularValues([1, NaN], 1, 2), /non-finite/);
    assert.throws(() => singularValues([1, 2, 3], 2, 2), /3 values for a 2 × 2/);
  });

  test('rank summaries and cosine', () => {
    assert.equal(stableRank([2, 0, 0]), 1);
    assert.ok(Math.abs(stableRank([1, 1, 1, 1]) - 4) < 1e-12);
    assert.ok(Math.abs(effectiveRank([3, 3, 3, 0]) - 3) < 1e-12);
    assert.equal(effectiveRank([0, 0]), 0);
    assert.ok(Math.abs(cosine([1, 2, 3], [2, 4, 6]) - 1) < 1e-12);
    assert.equal(cosine([1, 0], [0, 5]), 0);
    assert.equal(cosine([0, 0], [1, 1]), 0);
    assert.ok(Math.abs(cosine([1, 1], [-1, -1]) + 1) < 1e-12);
  });
});
