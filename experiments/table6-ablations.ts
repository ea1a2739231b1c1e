// Paper Table 6: ablations of VeRA's components on the embedded model's held-out users. (a) both
// scaling vectors vs only λd (λb fixed at 1, d starting at 0 as in the paper) vs only λb (λd fixed
// at 1); (b) the shared matrices drawn Kaiming-uniform (default) / Kaiming-normal / uniform [0, 0.1];
// (c) d_initial 0.1 (default) / 1e-7 / 1.0. Every variant changes one thing from the default, and the
// default is trained once and shown in each group, as the paper's blue rows.
import { barChart } from '../src/plot/index.js';
import type { VeraConfigInit } from '../src/peft/index.js';
import { fmtMeanStd, meanStd, commandLine } from './stats.js';
import { budget, budgetLines, users, veraVariantGrid, VERA_LR } from './lm-common.js';
import type { Experiment, ExperimentContext, ExperimentResult } from './types.js';

const R = 256;
/**
 * Full-run steps: 7 variants × 2 users × 3 seeds = 42 runs of ≈ 20 × 0.7 s + 1.6 s eval ≈ 11 min on one
 * core (one-thread CPU time measured per step; two free cores are faster).
 */
const STEPS = 20;

interface Variant {
  id: string;
  label: string;
  init: VeraConfigInit;
}

const VARIANTS: Variant[] = [
  { id: 'default', label: 'VeRA (default)', init: {} },
  { id: 'only_d', label: 'only d (λb = 1, d_init 0)', init: { ablation: 'only_d', dInitial: 0 } },
  { id: 'only_b', label: 'only b (λd = 1)', init: { ablation: 'only_b' } },
  { id: 'kaiming_normal', label: 'Kaiming normal', init: { projectionInit: 'kaiming_normal' } },
  { id: 'uniform', label: 'uniform [0, 0.1]', init: { projectionInit: 'uniform' } },
  { id: 'd_1e-7', label: 'd_init 1e-7', init: { dInitial: 1e-7 } },
  { id: 'd_1', label: 'd_init 1.0', init: { dInitial: 1 } },
];

/** The paper's three sub-tables: rows as [variant id, label in that table]. */
const GROUPS: { title: string; rows: [string, string][]; paper: string }[] = [
  {
    title: '(a) Scaling vectors',
    rows: [['default', 'VeRA'], ['only_d', 'only d'], ['only_b', 'only b']],
    paper: 'paper (RoBERTa-large, MRPC / RTE accuracy): VeRA 90.5 ± 0.7 / 85.8 ± 0.7, only d 89.7 ± 0.0 / 67.0 ± 13.9, only b 81.6 ± 10.1 / 64.3 ± 11.5',
  },
  {
    title: '(b) Matrix initialization',
    rows: [['default', 'Kaiming uniform'], ['kaiming_normal', 'Kaiming normal'], ['uniform', 'uniform [0, 0.1]']],
    paper: 'paper: Kaiming uniform 90.5 ± 0.7 / 85.8 ± 0.7, Kaiming normal 90.0 ± 1.1 / 82.6 ± 5.2, uniform [0, 0.1] 68.9 ± 1.3 / 53.1 ± 0.8',
  },
  {
    title: '(c) Initial value of d',
    rows: [['default', '0.1'], ['d_1e-7', '1e-7'], ['d_1', '1.0']],
    paper: 'paper: d_init 0.1 90.5 ± 0.7 / 85.8 ± 0.7, 1e-7 90.8 ± 0.9 / 84.7 ± 0.9, 1.0 70.3 ± 1.2 / 60.3 ± 12.4',
  },
];

export const table6Ablations: Experiment = {
  name: 'table6-ablations',
  title: 'Paper Table 6: VeRA ablations (only d / only b, projection init, d_initial), held-out perplexity',
  async run(ctx: ExperimentContext): Promise<ExperimentResult> {
    const b = budget(ctx, STEPS);
    const us = users(ctx);
    const { base, cells, cell } = await veraVariantGrid(ctx, b, us, R, VARIANTS);
    const tables: string[] = [];
    for (const g of GROUPS) {
      tables.push(
        `### ${g.title}`,
        '',
        `| ${g.title.slice(4)} | trainable params | ${us.map((u) => `${u} perplexity`).join(' | ')} |`,
        `|---|---:|${us.map(() => '---:').join('|')}|`,
        `| base model (no adapter) | 0 | ${us.map((u) => base[u]!.toFixed(2)).join(' | ')} |`,
        ...g.rows.map(([id, label]) => `| ${id === 'default' ? `**${label}** (default)` : label} | ${cell(id, us[0]!).trainable} | ${us.map((u) => fmtMeanStd(cell(id, u).perplexity, 2, true)).join(' | ')} |`),
        '',
        `Paper, for comparison (higher is better there; lower perplexity is better here): ${g.paper}.`,
        '',
      );
    }
    const svg = await barChart({
      title: 'VeRA ablations (paper Table 6): held-out perplexity, mean ± std over seeds',
      categoryAxis: { label: 'variant' },
      valueAxis: { label: 'held-out perplexity (lower is better)' },
      categories: VARIANTS.map((v) => v.label),
      series: us.map((u) => ({ name: u, values: VARIANTS.map((v) => meanStd(cell(v.id, u).perplexity).mean), errors: VARIANTS.map((v) => meanStd(cell(v.id, u).perplexity).std) })),
      horizontal: true,
    });
    const markdown = [
      `# ${this.title}`,
      '',
      `Regenerate: \`${commandLine(ctx, this.name)}\``,
      '',
      ...budgetLines(ctx, b, us, [`VeRA r = ${R}; each variant changes one thing from the default (Kaiming-uniform shared A and B, d_init 0.1, λb = 0 at the start). "only d" fixes λb at 1 and starts d at 0 (as the paper); "only b" fixes λd at 1.`]),
      '',
      'Held-out perplexity, mean ± std over seeds (lower is better).',
      '',
      ...tables,
      '![held-out perplexity per variant](table6-ablations.svg)',
      '',
      'The paper finds both vectors needed (only d a little better than only b), both Kaiming initializations far better than uniform [0, 0.1], and d_init 0.1 or 1e-7 better than 1.0.',
    ].join('\n');
    return {
      markdown,
      plots: { 'table6-ablations.svg': svg },
      data: { r: R, steps: b.steps, batchSize: b.batchSize, lr: VERA_LR, seeds: ctx.seeds, users: us, base, variants: VARIANTS.map(({ id, label, init }) => ({ id, label, init })), cells: cells.map((c) => ({ ...c, ...meanStd(c.perplexity) })) },
    };
  },
};
