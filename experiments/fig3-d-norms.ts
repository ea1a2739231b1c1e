// Paper Fig. 3: how far VeRA's vectors move, layer by layer. After training VeRA on every linear
// layer of the embedded model, ‖λd‖ and ‖λb‖ per layer for each adapted module type. The shared A
// and B are the same for every layer, so the norms compare directly across layers (the paper's
// argument); the paper shows ‖d‖ for query and value of RoBERTa-large on RTE.
import { lineChartSpec, renderSvg, stackSpecs } from '../src/plot/index.js';
import { fmtMeanStd, meanStd, commandLine } from './stats.js';
import { trainAdapter, type User } from './text.js';
import { budget, budgetLines, TARGETS, userData, users, veraFor, veraNorms, VERA_LR, type ModuleType } from './lm-common.js';
import type { Experiment, ExperimentContext, ExperimentResult } from './types.js';

const R = 256;
const D_INITIAL = 0.1;
/** Full-run steps: 2 users × 3 seeds = 6 runs of ≈ 100 × 0.7 s + 1.6 s ≈ 7 min on one core. */
const STEPS = 100;

interface NormRow {
  user: User;
  seed: number;
  layer: number;
  module: ModuleType;
  d: number;
  b: number;
  dChange: number;
}

export const fig3DNorms: Experiment = {
  name: 'fig3-d-norms',
  title: 'Paper Fig. 3: ‖λd‖ and ‖λb‖ per layer and module type after VeRA training',
  async run(ctx: ExperimentContext): Promise<ExperimentResult> {
    const b = budget(ctx, STEPS);
    const us = users(ctx);
    const rows: NormRow[] = [];
    const runs: { user: User; seed: number; perplexity: number; trainLoss: number; seconds: number }[] = [];
    for (const user of us) {
      const data = await userData(ctx, user, b);
      for (const seed of ctx.seeds) {
        const run = trainAdapter(ctx, data, { config: veraFor(seed, { r: R, dInitial: D_INITIAL }), steps: b.steps, lr: VERA_LR, batchSize: b.batchSize, seed, evalLimit: b.evalLimit });
        for (const n of veraNorms(run.peft, D_INITIAL)) rows.push({ user, seed, ...n });
        runs.push({ user, seed, perplexity: run.user.perplexity, trainLoss: run.trainLoss, seconds: run.seconds });
        ctx.log(`  ${user} seed ${seed}: perplexity ${run.user.perplexity.toFixed(2)}`);
      }
    }
    const layers = [...new Set(rows.map((r) => r.layer))].sort((a, c) => a - c);
    const pick = (module: ModuleType, layer: number, which: 'd' | 'b' | 'dChange'): number[] => rows.filter((r) => r.module === module && r.layer === layer).map((r) => r[which]);
    // mean over every run (users × seeds) per layer and module type
    const summary = TARGETS.flatMap((module) => layers.map((layer) => ({ module, layer, d: meanStd(pick(module, layer, 'd')), b: meanStd(pick(module, layer, 'b')), dChange: meanStd(pick(module, layer, 'dChange')) })));
    const panel = (which: 'd' | 'b', label: string) =>
      lineChartSpec({
        title: label,
        x: { label: 'layer' },
        y: { label: `${label} (mean ± std over ${us.length} users × ${ctx.seeds.length} seeds)` },
        series: TARGETS.map((module) => ({ name: module, points: summary.filter((s) => s.module === module).map((s) => ({ x: s.layer, y: s[which].mean, err: s[which].std })) })),
        height: 240,
      });
    const svg = await renderSvg(stackSpecs([panel('d', '‖λd‖'), panel('b', '‖λb‖')], `VeRA r = ${R} on the embedded model: trained vector norms per layer (paper Fig. 3)`));
    const table = (which: 'd' | 'b' | 'dChange'): string[] => [
      `| layer | ${TARGETS.join(' | ')} |`,
      `|---:|${TARGETS.map(() => '---:').join('|')}|`,
      ...layers.map((layer) => `| ${layer} | ${TARGETS.map((m) => fmtMeanStd(pick(m, layer, which), 3, true)).join(' | ')} |`),
    ];
    // which module type / which half of the network moved most
    const byModule = TARGETS.map((m) => ({ module: m, d: meanStd(rows.filter((r) => r.module === m).map((r) => r.d)).mean, dChange: meanStd(rows.filter((r) => r.module === m).map((r) => r.dChange)).mean }));
    const half = Math.floor(layers.length / 2);
    const early = meanStd(rows.filter((r) => r.layer < half).map((r) => r.d)).mean;
    const late = meanStd(rows.filter((r) => r.layer >= half).map((r) => r.d)).mean;
    const initNorm = D_INITIAL * Math.sqrt(R);
    const markdown = [
      `# ${this.title}`,
      '',
      `Regenerate: \`${commandLine(ctx, this.name)}\``,
      '',
      ...budgetLines(ctx, b, us, [`VeRA r = ${R}, d_init ${D_INITIAL} (so ‖λd‖ = ${initNorm.toFixed(2)} before training), λb = 0 before training (‖λb‖ = 0).`]),
      '',
      `Held-out perplexity of the trained adapters: ${us.map((u) => `${u} ${fmtMeanStd(runs.filter((r) => r.user === u).map((r) => r.perplexity), 2, true)}`).join(', ')}.`,
      '',
      `## ‖λd‖ per layer (mean ± std over ${us.length} users × ${ctx.seeds.length} seeds; ${initNorm.toFixed(2)} at the start)`,
      '',
      ...table('d'),
      '',
      `## ‖λb‖ per layer (mean ± std over ${us.length} users × ${ctx.seeds.length} seeds; 0 at the start)`,
      '',
      ...table('b'),
      '',
      `## ‖λd − d_init‖ per layer: how far λd moved (mean ± std over ${us.length} users × ${ctx.seeds.length} seeds)`,
      '',
      ...table('dChange'),
      '',
      `Mean ‖λd‖ (‖λd − d_init‖) by module type: ${byModule.map((m) => `${m.module} ${m.d.toFixed(3)} (${m.dChange.toFixed(3)})`).join(', ')}. Mean ‖λd‖ over layers < ${half}: ${early.toFixed(3)}; layers ≥ ${half}: ${late.toFixed(3)}.`,
      '',
      '![‖λd‖ and ‖λb‖ per layer](fig3-d-norms.svg)',
      '',
      'Paper (Fig. 3, RoBERTa-large on RTE, query and value only): the query layers\' d moves more than the value layers\', and later layers adapt more than earlier ones.',
    ].join('\n');
    return {
      markdown,
      plots: { 'fig3-d-norms.svg': svg },
      data: { r: R, dInitial: D_INITIAL, steps: b.steps, batchSize: b.batchSize, lr: VERA_LR, seeds: ctx.seeds, users: us, runs, summary, norms: rows },
    };
  },
};
