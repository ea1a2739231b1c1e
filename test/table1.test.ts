// The paper's Table 1 (VeRA, ICLR 2024): trainable parameters and bytes of LoRA and VeRA on the query
// and key layers of RoBERTa-base, RoBERTa-large and GPT-3, reproduced by `vera inspect --config`
// from the model configs in examples/configs. docs/table1.md explains the cells that do not follow
// the paper's own formula, and the rounding conventions.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { inspectConfig, type ConfigReport } from '../src/cli/commands/inspect.js';

const root = new URL('../../', import.meta.url).pathname;
const configs = join(root, 'examples', 'configs');

interface Row {
  model: 'roberta-base' | 'roberta-large' | 'gpt3-175b';
  targets: string[];
  r: number;
  lora: [string, string];
  vera: [string, string];
}

// As printed in the paper (rank, # trainable parameters, required bytes).
const TABLE_1: Row[] = [
  { model: 'roberta-base', targets: ['query', 'key'], r: 1, lora: ['36.8K', '144KB'], vera: ['18.4K', '72KB'] },
  { model: 'roberta-base', targets: ['query', 'key'], r: 16, lora: ['589.8K', '2MB'], vera: ['18.8K', '74KB'] },
  { model: 'roberta-base', targets: ['query', 'key'], r: 256, lora: ['9437.1K', '36MB'], vera: ['24.5K', '96KB'] },
  { model: 'roberta-large', targets: ['query', 'key'], r: 1, lora: ['98.3K', '384KB'], vera: ['49.2K', '192KB'] },
  { model: 'roberta-large', targets: ['query', 'key'], r: 16, lora: ['1572.8K', '6MB'], vera: ['49.5K', '195KB'] },
  { model: 'roberta-large', targets: ['query', 'key'], r: 256, lora: ['25165.8K', '96MB'], vera: ['61.4K', '240KB'] },
  { model: 'gpt3-175b', targets: ['q_proj', 'k_proj'], r: 1, lora: ['4.7M', '18MB'], vera: ['2.4M', '9.1MB'] },
  { model: 'gpt3-175b', targets: ['q_proj', 'k_proj'], r: 16, lora: ['75.5M', '288MB'], vera: ['2.8M', '10.5MB'] },
  { model: 'gpt3-175b', targets: ['q_proj', 'k_proj'], r: 256, lora: ['1207.9M', '4.6GB'], vera: ['8.7M', '33MB'] },
];

const decimals = (cell: string): number => (/\.(\d+)/.exec(cell)?.[1].length ?? 0);
const valueOf = (cell: string): number => Number(/^[\d.]+/.exec(cell)![0]);
const near = (a: number, b: number): boolean => Math.abs(a - b) < 1e-9;

/** A parameter cell (K = 10³, M = 10⁶) shows `n` truncated or rounded to the cell's decimals: the paper uses both. */
function paramsCellShows(cell: string, n: number): boolean {
  const unit = cell.endsWith('K') ? 1e3 : cell.endsWith('M') ? 1e6 : NaN;
  const scale = 10 ** decimals(cell);
  const x = (n / unit) * scale;
  return near(Math.floor(x + 1e-9) / scale, valueOf(cell)) || near(Math.round(x) / scale, valueOf(cell));
}

/** A bytes cell shows `bytes` rounded to its decimals in KB = KiB, MB = MiB; the GB cell is MiB / 1000. */
function bytesCellShows(cell: string, bytes: number): boolean {
  const mib = 1024 * 1024;
  const unit = cell.endsWith('KB') ? 1024 : cell.endsWith('MB') ? mib : cell.endsWith('GB') ? 1000 * mib : NaN;
  const scale = 10 ** decimals(cell);
  return near(Math.round((bytes / unit) * scale) / scale, valueOf(cell));
}

const report = (row: Row, method: 'vera' | 'lora'): ConfigReport => inspectConfig(join(configs, row.model, 'config.json'), method, row.r, row.targets);

test('Table 1, LoRA: every cell is L_tuned · 2 · d_model · r parameters, 4 bytes each', () => {
  for (const row of TABLE_1) {
    const rep = report(row, 'lora');
    const [params, bytes] = row.lora;
    assert.ok(paramsCellShows(params, rep.trainableParams), `${row.model} r=${row.r}: ${rep.trainableParams} is not ${params}`);
    assert.ok(bytesCellShows(bytes, rep.adapterBytes), `${row.model} r=${row.r}: ${rep.adapterBytes} bytes is not ${bytes}`);
    assert.equal(rep.projectionParams, 0);
  }
});

test('Table 1, VeRA on RoBERTa: every cell is L_tuned · (d_model + r), but for one misprinted count', () => {
  for (const row of TABLE_1.filter((r) => r.model !== 'gpt3-175b')) {
    const rep = report(row, 'vera');
    const [params, bytes] = row.vera;
    assert.ok(bytesCellShows(bytes, rep.adapterBytes), `${row.model} r=${row.r}: ${rep.adapterBytes} bytes is not ${bytes}`);
    if (row.model === 'roberta-large' && row.r === 16) {
      // 48 · (1024 + 16) = 49,920 ("49.9K"); the bytes beside it, 195KB = 49,920 · 4 / 1024, agree with 49.9K, not 49.5K
      assert.equal(rep.trainableParams, 49_920);
      assert.ok(!paramsCellShows(params, rep.trainableParams));
      continue;
    }
    assert.ok(paramsCellShows(params, rep.trainableParams), `${row.model} r=${row.r}: ${rep.trainableParams} is not ${params}`);
  }
});

test('Table 1, VeRA on GPT-3: the cells are L_tuned · d_model + 2 · d_model · r, not the paper\'s L_tuned · (d_model + r)', () => {
  for (const row of TABLE_1.filter((r) => r.model === 'gpt3-175b')) {
    const rep = report(row, 'vera');
    const lTuned = rep.targets.length;
    const dModel = rep.targets[0].out;
    assert.equal(lTuned, 192);
    assert.equal(dModel, 12288);
    assert.equal(rep.trainableParams, lTuned * (dModel + row.r), 'the real count is the paper\'s formula');
    const [params, bytes] = row.vera;
    const printed = lTuned * dModel + 2 * dModel * row.r;
    assert.ok(paramsCellShows(params, printed) && bytesCellShows(bytes, 4 * printed), `${row.model} r=${row.r}: ${printed} does not give ${params} / ${bytes}`);
    if (row.r > 1) assert.ok(!paramsCellShows(params, rep.trainableParams), 'the printed figure differs from the real count');
  }
});

test('vera inspect --config --json prints the three counts (RoBERTa-base, VeRA r=256, query and key)', () => {
  const out = execFileSync(process.execPath, [join(root, 'bin', 'vera.js'), 'inspect', '--config', join(configs, 'roberta-base', 'config.json'), '--method', 'vera', '--r', '256', '--target-modules', 'query,key', '--json'], { encoding: 'utf8' });
  // 24 layers · (768 + 256); A 256 × 768 and B 768 × 256
  assert.deepEqual(JSON.parse(out), { trainableParams: 24_576, projectionParams: 2 * 256 * 768, adapterBytes: 98_304 });
});

test('vera inspect --config: defaults, all-linear, and one-line errors', () => {
  const run = (...args: string[]): { code: number; out: string; err: string } => {
    try {
      return { code: 0, out: execFileSync(process.execPath, [join(root, 'bin', 'vera.js'), 'inspect', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }), err: '' };
    } catch (e) {
      const x = e as { status: number; stdout: string; stderr: string };
      return { code: x.status, out: x.stdout, err: x.stderr };
    }
  };
  const base = join(configs, 'roberta-base', 'config.json');
  // no --target-modules: PEFT's default for roberta (query, value) has the same sizes as query, key
  assert.deepEqual(JSON.parse(run('--config', base, '--method', 'lora', '--r', '8', '--json').out), JSON.parse(run('--config', base, '--method', 'lora', '--r', '8', '--target-modules', 'query,key', '--json').out));
  // all-linear on the encoder: 6 linear layers per block
  const all = inspectConfig(base, 'vera', 4, 'all-linear');
  assert.equal(all.targets.length, 72);
  const gpt2 = inspectConfig(join(root, 'test', 'fixtures', 'gpt2-tiny', 'config.json'), 'vera', 4, ['all-linear']);
  assert.ok(gpt2.targets.every((l) => l.path !== 'lm_head') && gpt2.targets.length === 8);
  for (const [args, message] of [
    [['--config', base, '--r', '8'], /--method vera\|lora is required/],
    [['--config', base, '--method', 'vera'], /--r N is required/],
    [['--config', base, '--method', 'vera', '--r', '2', '--target-modules', 'nope'], /matched no linear layer of this roberta model/],
    [['--config', join(root, 'package.json'), '--method', 'vera', '--r', '2'], /package\.json: field "model_type" is required/],
    [['--adapter', base, '--r', '2'], /go with --config FILE/],
  ] as [string[], RegExp][]) {
    const r = run(...args);
    assert.equal(r.code, 1, args.join(' '));
    assert.match(r.err, message);
    assert.equal(r.err.trim().split('\n').length, 1, 'one line');
    assert.equal(r.out, '');
  }
});
