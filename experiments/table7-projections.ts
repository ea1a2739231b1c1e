// Paper Table 7: one random pair (A, B) shared by every adapted layer (VeRA's default) against a
// pair drawn anew for each layer (unique_projections), on the embedded model's held-out users. The
// trainable vectors are the same size either way; only the frozen matrices differ.
import { barChart } from '../src/plot/index.js';
import { fmtMeanStd, meanStd, commandLine } from './stats.js';
import { budget, budgetLines, users, veraVariantGrid, VERA_LR } from './lm-common.js';
import type { Experiment, ExperimentContext, ExperimentResult } from './types.js';

const R = 256;
/** Full-run steps: 2 variants × 2 users × 3 seeds = 12 runs of ≈ 60 × 0.72 s + 1.6 s ≈ 9 min on one core. */
const STEPS = 60;

const VARIANTS = [
  { id: 'shared', label: 'shared (one pair for all layers)', unique: false },
  { id: 'unique', label: 'unique (a pair per layer)', unique: true },
] as const;

export const table7Projections: Experiment = {
  name: 'table7-projections',
  title: 'Paper Table 7: shared vs unique random projections, held-out perplexity',
  async run(ctx: ExperimentContext): Promise<ExperimentResult> {
    const b = budget(ctx, STEPS);
    const us = users(ctx);
    const { base, cells, cell } = await veraVariantGrid(ctx, b, us, R, VARIANTS.map((v) => ({ id: v.id, init: { uniqueProjections: v.unique } })));
    const svg = await barChart({
      title: 'Shared vs unique random matrices (paper Table 7): held-out perplexity, mean ± std',
      categoryAxis: { label: 'user' },
      valueAxis: { label: 'held-out perplexity (lower is better)' },
      categories: [...us],
      series: VARIANTS.map((v) => ({ name: v.label, values: us.map((u) => meanStd(cell(v.id, u).perplexity).mean), errors: us.map((u) => meanStd(cell(v.id, u).perplexity).std) })),
    });
    const markdown = [
      `# ${this.title}`,
      '',
      `Regenerate: \`${commandLine(ctx, this.name)}\``,
      '',
      ...budgetLines(ctx, b, us, [`VeRA r = ${R}, Kaiming-uniform A and B, d_init 0.1. "unique" draws each layer's own pair (A: r × in, B: out × r) from the same generator, one layer after another; "shared" slices one pair sized for the widest layer.`]),
      '',
      'Held-out perplexity, mean ± std over seeds (lower is better).',
      '',
      `| random matrices | trainable params | ${us.map((u) => `${u} perplexity`).join(' | ')} |`,
      `|---|---:|${us.map(() => '---:').join('|')}|`,
      `| base model (no adapter) | 0 | ${us.map((u) => base[u]!.toFixed(2)).join(' | ')} |`,
      ...VARIANTS.map((v) => `| ${v.label} | ${cell(v.id, us[0]!).trainable} | ${us.map((u) => fmtMeanStd(cell(v.id, u).perplexity, 2, true)).join(' | ')} |`),
      '',
      '![held-out perplexity, shared vs unique](table7-projections.svg)',
      '',
      'Paper (RoBERTa-large; accuracy / correlation, higher is better): shared 90.0 ± 0.9 (MRPC), 84.6 ± 1.5 (RTE), 67.7 ± 0.8 (CoLA), 91.5 ± 0.6 (STS-B); unique 90.7 ± 0.3, 84.6 ± 0.8, 68.3 ± 1.8, 91.5 ± 0.2: the same mean on RTE and STS-B, unique slightly better on MRPC and CoLA.',
    ].join('\n');
    return {
      markdown,
      plots: { 'table7-projections.svg': svg },
      data: { r: R, steps: b.steps, batchSize: b.batchSize, lr: VERA_LR, seeds: ctx.seeds, users: us, base, cells: cells.map((c) => ({ ...c, ...meanStd(c.perplexity) })) },
    };
  },
};
