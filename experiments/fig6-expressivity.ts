// Paper Fig. 6 (Appendix E): how well LoRA and VeRA fit a random 10×10 matrix with a given number
// of trainable parameters. One 10→10 linear layer whose base weight is zero is adapted with the
// library's real VeraLinear / LoraLinear (getPeftModel), fed the identity so that its output is
// ΔWᵀ, and trained with Adam on the mean squared error against the target. The final MSE against
// the trainable-parameter count, for LoRA ranks 1..10 and VeRA ranks 1..1024, mean ± std over seeds.
import { Linear, Module } from '../src/nn/index.js';
import { getPeftModel, loraConfig, veraConfig, type BasePeftConfig } from '../src/peft/index.js';
import { F, Rng, Tensor, manualSeed, noGrad } from '../src/tensor/index.js';
import { AdamW, train } from '../src/train/index.js';
import { lineChart } from '../src/plot/index.js';
import { fmtMeanStd, meanStd, commandLine } from './stats.js';
import type { Experiment, ExperimentContext, ExperimentResult } from './types.js';

const N = 10;
const LORA_RANKS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
const VERA_RANKS = [1, 4, 16, 64, 256, 1024];
const LRS = [3e-3, 1e-2, 3e-2, 1e-1];

/** The whole model: one linear layer, no bias. */
class OneLinear extends Module {
  lin: Linear;
  constructor() {
    super();
    this.lin = this.addModule('lin', new Linear(N, N, { bias: false }));
    this.lin.weight.copyFrom(new Float32Array(N * N)); // W0 = 0: the output is ΔW alone
  }
  forward(x: Tensor): Tensor {
    return this.lin.forward(x);
  }
}

export interface FitOptions {
  steps: number;
  lr: number;
  seed: number;
}

/** A target matrix per seed: N(0, 1) entries (its own generator, so every method sees the same one). */
export function targetMatrix(seed: number): Float32Array {
  return new Rng(1000 + seed).fillNormal(new Float32Array(N * N), 0, 1);
}

/** Fits `target` (row-major N×N, read as ΔW) with one adapter; returns its trainable parameters and final MSE. */
export function fitMatrix(config: BasePeftConfig, target: Float32Array, o: FitOptions): { trainable: number; mse: number } {
  manualSeed(o.seed); // LoRA's A draws from the global generator
  const model = new OneLinear();
  const peft = getPeftModel(model, config);
  const params = peft.trainableParameters();
  const eye = new Float32Array(N * N);
  for (let i = 0; i < N; i++) eye[i * N + i] = 1;
  const x = Tensor.fromArray(eye, [N, N]);
  // output row i = e_i·(W0 + ΔW)ᵀ = column i of ΔW, so the wanted output is targetᵀ
  const t = new Float32Array(N * N);
  for (let i = 0; i < N; i++) for (let j = 0; j < N; j++) t[i * N + j] = target[j * N + i]!;
  const y = Tensor.fromArray(t, [N, N]);
  const mse = (): Tensor => F.mean(F.pow(F.sub(model.forward(x), y), 2));
  const optimizer = new AdamW([{ lr: o.lr, params: params.map(([, p]) => p) }], { weightDecay: 0 });
  train(params, optimizer, { nextBatch: () => null, loss: () => ({ loss: mse(), items: 1 }) }, { steps: o.steps, seed: o.seed, progress: false, schedule: 'cosine' });
  return { trainable: params.reduce((a, [, p]) => a + p.size, 0), mse: noGrad(() => mse().item()) };
}

interface Row {
  method: 'LoRA' | 'VeRA';
  r: number;
  trainable: number;
  mse: number[];
  /** The lr that gave each seed's MSE. */
  lr: number[];
}

export const fig6Expressivity: Experiment = {
  name: 'fig6-expressivity',
  title: 'Paper Fig. 6: fitting a random 10×10 matrix, MSE against trainable parameters (LoRA vs VeRA)',
  async run(ctx: ExperimentContext): Promise<ExperimentResult> {
    const steps = ctx.tiny ? 20 : 2000;
    // the capacity of each parametrization, not one optimizer setting: the best final MSE over a small lr grid
    const lrs = ctx.tiny ? [1e-2] : LRS;
    const loraRanks = ctx.tiny ? [1, 10] : LORA_RANKS;
    const veraRanks = ctx.tiny ? [1, 256] : VERA_RANKS;
    const rows: Row[] = [];
    const configs: [Row['method'], number, (seed: number) => BasePeftConfig][] = [
      ...loraRanks.map((r): [Row['method'], number, (seed: number) => BasePeftConfig] => ['LoRA', r, () => loraConfig({ targetModules: ['lin'], r, loraAlpha: r })]),
      ...veraRanks.map((r): [Row['method'], number, (seed: number) => BasePeftConfig] => ['VeRA', r, (seed) => veraConfig({ targetModules: ['lin'], r, projectionPrngKey: seed, saveProjection: false })]),
    ];
    for (const [method, r, make] of configs) {
      const row: Row = { method, r, trainable: 0, mse: [], lr: [] };
      for (const seed of ctx.seeds) {
        let best = { mse: Infinity, lr: NaN };
        for (const lr of lrs) {
          const fit = fitMatrix(make(seed), targetMatrix(seed), { steps, lr, seed });
          row.trainable = fit.trainable;
          if (fit.mse < best.mse) best = { mse: fit.mse, lr };
        }
        row.mse.push(best.mse);
        row.lr.push(best.lr);
      }
      ctx.log(`  ${method} r=${r}: ${row.trainable} params, MSE ${fmtMeanStd(row.mse, 4)}`);
      rows.push(row);
    }

    const series = (['LoRA', 'VeRA'] as const).map((m) => ({
      name: m,
      points: rows.filter((r) => r.method === m).map((r) => ({ x: r.trainable, y: meanStd(r.mse).mean, err: meanStd(r.mse).std })),
    }));
    const svg = await lineChart({
      title: 'Fitting a random 10×10 matrix (paper Fig. 6)',
      x: { label: 'trainable parameters', log: true },
      y: { label: 'MSE (mean ± std over seeds)', log: true },
      series,
    });
    const table = [
      '| method | r | trainable params | MSE (mean ± std) | best lr per seed |',
      '|---|---:|---:|---:|---|',
      ...rows.map((r) => `| ${r.method} | ${r.r} | ${r.trainable} | ${fmtMeanStd(r.mse, 4)} | ${r.lr.join(', ')} |`),
    ];
    const markdown = [
      `# ${this.title}`,
      '',
      `Regenerate: \`${commandLine(ctx, this.name)}\``,
      '',
      `Seeds: ${ctx.seeds.join(', ')} (seed s: target matrix from its own generator, VeRA projection_prng_key s, LoRA A from manualSeed(s)).`,
      `Setup: one 10→10 linear layer with W0 = 0 and no bias, adapted with the library's VeraLinear / LoraLinear (getPeftModel, target \`lin\`; LoRA alpha = r; VeRA d_initial 0.1, b = 0, shared kaiming-uniform A, B), input the identity so the output is ΔWᵀ; target entries N(0, 1); loss the MSE over the 100 entries; full batch, Adam (AdamW, weight decay 0) with a cosine schedule, ${steps} steps, at each lr of {${lrs.join(', ')}}; the table gives the final MSE of the best lr per seed (this measures what each parametrization can express, not one optimizer setting). MSE near 1e-15 is float32 round-off: an exact fit.`,
      '',
      ...table,
      '',
      '![MSE against trainable parameters](fig6-expressivity.svg)',
      '',
      'Paper (Fig. 6): for a given number of trainable parameters LoRA (PQ) and VeRA (XdYb) fit the matrix equally well, and VeRA reaches parametrizations below LoRA rank 1 (20 parameters here).',
    ].join('\n');
    return { markdown, plots: { 'fig6-expressivity.svg': svg }, data: { steps, lrs, seeds: ctx.seeds, rows: rows.map((r) => ({ ...r, ...meanStd(r.mse) })) } };
  },
};
