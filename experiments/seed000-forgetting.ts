// Seed 000's open questions, on the embedded model:
// (a) Does VeRA forget less of the source domain, like LoRA ("LoRA learns less and forgets less")?
//     After finetuning on a user, perplexity on the pretraining categories' held-out fortunes
//     (forgetting) next to the perplexity on the user's held-out fortunes (learning), for VeRA at
//     ranks 64 / 256 / 1024 and LoRA at ranks 1 / 8 / 64.
// (b) VeRA's rank can exceed the layer's width at little cost: is its ΔW then higher-rank than
//     LoRA's? Singular values of ΔW (σ_i/σ_1) for a few layers, VeRA r 1024 against LoRA r 8 and 64.
import { lineChartSpec, renderSvg, stackSpecs } from '../src/plot/index.js';
import { evaluateCausalLm } from '../src/train/index.js';
import { fmtMeanStd, meanStd, commandLine } from './stats.js';
import { loadBase, trainAdapter, type User } from './text.js';
import { budget, budgetLines, deltaWeightsOf, evaluateGeneral, loraFor, LORA_LR, userData, users, veraFor, VERA_LR, type ModuleType } from './lm-common.js';
import { effectiveRank, singularValues, stableRank } from './svd.js';
import type { Experiment, ExperimentContext, ExperimentResult } from './types.js';

/**
 * Full-run steps: 6 configs × 2 users × 3 seeds = 36 runs; per (user, seed) ≈ 20 × 4.4 s of steps (VeRA r
 * 1024 alone 1.7 s a step, 3× a LoRA step) + 6 × 4.2 s of evals, plus 72 SVDs of ≈ 0.7 s: ≈ 12 min on one core.
 */
const STEPS = 20;

interface Config {
  id: string;
  method: 'VeRA' | 'LoRA';
  r: number;
  /** Its ΔW spectra go into the plot (the brief's VeRA r 1024 vs LoRA r 8 and 64). */
  plotSpectrum: boolean;
}

const CONFIGS: Config[] = [
  { id: 'VeRA r=64', method: 'VeRA', r: 64, plotSpectrum: false },
  { id: 'VeRA r=256', method: 'VeRA', r: 256, plotSpectrum: false },
  { id: 'VeRA r=1024', method: 'VeRA', r: 1024, plotSpectrum: true },
  { id: 'LoRA r=1', method: 'LoRA', r: 1, plotSpectrum: false },
  { id: 'LoRA r=8', method: 'LoRA', r: 8, plotSpectrum: true },
  { id: 'LoRA r=64', method: 'LoRA', r: 64, plotSpectrum: true },
];

/** The layers whose ΔW spectrum is computed: attention and MLP, first and last block. */
const SPECTRUM_MODULES: ModuleType[] = ['q_proj', 'down_proj'];
/** σ_i/σ_1 below this is float32 round-off of ΔW (computed in float32), not signal: not drawn. */
const FLOOR = 1e-6;

interface Run {
  config: string;
  user: User;
  seed: number;
  trainable: number;
  userPerplexity: number;
  userLoss: number;
  generalPerplexity: number;
  generalLoss: number;
  seconds: number;
}

interface Spectrum {
  config: string;
  user: User;
  seed: number;
  layer: number;
  module: ModuleType;
  shape: [number, number];
  /** σ_i / σ_1, largest first. */
  normalized: number[];
  sigma1: number;
  stableRank: number;
  effectiveRank: number;
  /** How many σ_i/σ_1 exceed FLOOR (the numerical rank). */
  numericalRank: number;
}

export const seed000Forgetting: Experiment = {
  name: 'seed000-forgetting',
  title: 'Seed 000: forgetting of the pretraining domain and ΔW spectra, VeRA vs LoRA across ranks',
  async run(ctx: ExperimentContext): Promise<ExperimentResult> {
    const b = budget(ctx, STEPS);
    const us = users(ctx);
    const runs: Run[] = [];
    const spectra: Spectrum[] = [];
    const base: Record<string, { userPerplexity: number; userLoss: number; generalPerplexity: number; generalLoss: number }> = {};
    let generalTargets = 0;
    for (const user of us) {
      const data = await userData(ctx, user, b);
      const model = loadBase(ctx);
      const u = evaluateCausalLm(model, b.evalLimit ? data.eval.slice(0, b.evalLimit) : data.eval, 8, data.eosId);
      const g = evaluateGeneral(model, data, b.generalLimit);
      generalTargets = g.targets;
      base[user] = { userPerplexity: u.perplexity, userLoss: u.loss, generalPerplexity: g.perplexity, generalLoss: g.loss };
      ctx.log(`  ${user}: base perplexity ${u.perplexity.toFixed(2)}, pretraining categories ${g.perplexity.toFixed(2)}`);
      for (const c of CONFIGS) {
        for (const seed of ctx.seeds) {
          const config = c.method === 'VeRA' ? veraFor(seed, { r: c.r }) : loraFor(c.r);
          const run = trainAdapter(ctx, data, { config, steps: b.steps, lr: c.method === 'VeRA' ? VERA_LR : LORA_LR, batchSize: b.batchSize, seed, evalLimit: b.evalLimit });
          const general = evaluateGeneral(run.base, data, b.generalLimit);
          runs.push({ config: c.id, user, seed, trainable: run.trainable, userPerplexity: run.user.perplexity, userLoss: run.user.loss, generalPerplexity: general.perplexity, generalLoss: general.loss, seconds: run.seconds });
          if (c.plotSpectrum) {
            // --tiny: q_proj only and two Jacobi sweeps (a smoke test of the path, not a spectrum)
            const modules = ctx.tiny ? SPECTRUM_MODULES.slice(0, 1) : SPECTRUM_MODULES;
            const lastLayer = run.base.config.numHiddenLayers - 1;
            for (const d of deltaWeightsOf(run.peft, (at) => modules.includes(at.module) && (at.layer === 0 || at.layer === lastLayer))) {
              const sv = singularValues(d.data, d.rows, d.cols, ctx.tiny ? { maxSweeps: 2 } : {});
              const s1 = sv[0]!;
              const normalized = [...sv].map((s) => (s1 > 0 ? s / s1 : 0));
              spectra.push({ config: c.id, user, seed, layer: d.layer, module: d.module, shape: [d.rows, d.cols], normalized, sigma1: s1, stableRank: stableRank(sv), effectiveRank: effectiveRank(sv), numericalRank: normalized.filter((x) => x > FLOOR).length });
            }
          }
        }
        const mine = runs.filter((r) => r.config === c.id && r.user === user);
        ctx.log(`  ${user} ${c.id}: perplexity ${fmtMeanStd(mine.map((r) => r.userPerplexity), 2, true)}, pretraining categories ${fmtMeanStd(mine.map((r) => r.generalPerplexity), 2, true)}`);
      }
    }

    // (a) the table and the learning-vs-forgetting plot
    const of = (config: string, user: string): Run[] => runs.filter((r) => r.config === config && r.user === user);
    const gain = (r: Run): number => base[r.user]!.userLoss - r.userLoss; // nats per token gained on the user
    const forget = (r: Run): number => r.generalLoss - base[r.user]!.generalLoss; // nats per token lost on the pretraining categories
    const tableA: string[] = [];
    for (const user of us) {
      tableA.push(
        `### ${user}`,
        '',
        '| adapter | trainable params | user perplexity | gain on user (nats/token) | pretraining-categories perplexity | forgetting (nats/token) |',
        '|---|---:|---:|---:|---:|---:|',
        `| base model (no adapter) | 0 | ${base[user]!.userPerplexity.toFixed(2)} | 0 | ${base[user]!.generalPerplexity.toFixed(2)} | 0 |`,
        ...CONFIGS.map((c) => {
          const rs = of(c.id, user);
          return `| ${c.id} | ${rs[0]!.trainable} | ${fmtMeanStd(rs.map((r) => r.userPerplexity), 2, true)} | ${fmtMeanStd(rs.map(gain), 4, true)} | ${fmtMeanStd(rs.map((r) => r.generalPerplexity), 2, true)} | ${fmtMeanStd(rs.map(forget), 4, true)} |`;
        }),
        '',
      );
    }
    const tradeoff = lineChartSpec({
      title: 'Learning vs forgetting (points: ranks, in increasing order along each line)',
      x: { label: 'gain on the user (nats/token, mean over seeds)' },
      y: { label: 'forgetting on the pretraining categories (nats/token, mean ± std)' },
      series: us.flatMap((user) =>
        (['VeRA', 'LoRA'] as const).map((method) => ({
          name: `${method} (${user})`,
          points: CONFIGS.filter((c) => c.method === method).map((c) => {
            const rs = of(c.id, user);
            const f = meanStd(rs.map(forget));
            return { x: meanStd(rs.map(gain)).mean, y: f.mean, err: f.std };
          }),
        })),
      ),
      height: 260,
    });

    // (b) spectra: mean normalized spectrum over users × seeds per (config, layer)
    const matrices = [...new Map(spectra.map((s) => [`${s.layer}.${s.module}`, { layer: s.layer, module: s.module, shape: s.shape }])).values()].sort((a, c) => a.layer - c.layer || SPECTRUM_MODULES.indexOf(a.module) - SPECTRUM_MODULES.indexOf(c.module));
    const meanSpectrum = (config: string, layer: number, module: ModuleType): number[] => {
      const ss = spectra.filter((s) => s.config === config && s.layer === layer && s.module === module);
      return ss[0]!.normalized.map((_, i) => meanStd(ss.map((s) => s.normalized[i]!)).mean);
    };
    const plotted = CONFIGS.filter((c) => c.plotSpectrum);
    const spectrumPanels = matrices.map((mx) =>
      lineChartSpec({
        title: `layer ${mx.layer} ${mx.module} (${mx.shape[0]} × ${mx.shape[1]})`,
        x: { label: 'index i' },
        y: { label: 'σ_i / σ_1 (mean over runs)', log: true },
        series: plotted.map((c) => ({ name: c.id, points: meanSpectrum(c.id, mx.layer, mx.module).map((y, i) => ({ x: i + 1, y })).filter((p) => p.y > FLOOR) })),
        height: 200,
      }),
    );
    const [tradeoffSvg, spectrumSvg] = await Promise.all([
      renderSvg(stackSpecs([tradeoff], 'Seed 000 (a): learning vs forgetting, VeRA r 64/256/1024 and LoRA r 1/8/64')),
      renderSvg(stackSpecs(spectrumPanels, 'Seed 000 (b): normalized singular values of ΔW')),
    ]);
    const cellB = (config: string, mx: { layer: number; module: ModuleType }, key: 'stableRank' | 'effectiveRank' | 'numericalRank'): string =>
      fmtMeanStd(spectra.filter((s) => s.config === config && s.layer === mx.layer && s.module === mx.module).map((s) => s[key]), 1, true);
    const tableB = [
      `| adapter | ${matrices.map((mx) => `L${mx.layer} ${mx.module}: stable / effective / numerical rank`).join(' | ')} |`,
      `|---|${matrices.map(() => '---:').join('|')}|`,
      ...plotted.map((c) => `| ${c.id} | ${matrices.map((mx) => `${cellB(c.id, mx, 'stableRank')} / ${cellB(c.id, mx, 'effectiveRank')} / ${cellB(c.id, mx, 'numericalRank')}`).join(' | ')} |`),
    ];
    const markdown = [
      `# ${this.title}`,
      '',
      `Regenerate: \`${commandLine(ctx, this.name)}\``,
      '',
      ...budgetLines(ctx, b, us, [
        `Adapters: VeRA r 64 / 256 / 1024 (d_init 0.1; r 1024 exceeds every layer's width, so its ΔW can be full-rank), LoRA r 1 / 8 / 64 (alpha = 2r). LoRA r 8 and 64 also serve part (b). All at one lr per method; no per-rank tuning.`,
        `Forgetting: perplexity on the first ${b.generalLimit} sequences (${generalTargets} predicted tokens) of the pretraining categories' held-out split (data/fortunes/general/eval.jsonl), after finetuning on the user. Gain and forgetting are differences of mean loss per token against the base (nats; positive gain = learned, positive forgetting = forgot).`,
      ]),
      '',
      '## (a) Learning vs forgetting (mean ± std over seeds)',
      '',
      ...tableA,
      '![learning vs forgetting](seed000-forgetting.svg)',
      '',
      '## (b) Singular values of ΔW',
      '',
      `Layers ${matrices.map((mx) => `${mx.layer} ${mx.module}`).join(', ')}; singular values by one-sided Jacobi in float64 (experiments/svd.ts) of ΔW as the adapter computes it (float32). Stable rank ‖ΔW‖²_F/σ₁², effective rank exp(entropy of σ/Σσ) (Roy & Vetterli), numerical rank = #{σ_i/σ_1 > ${FLOOR}} (below that is float32 round-off; such points are not drawn). Mean ± std over ${us.length} users × ${ctx.seeds.length} seeds.`,
      '',
      ...tableB,
      '',
      '![normalized singular values](seed000-spectrum.svg)',
      '',
      'For comparison: the VeRA paper does not measure either. Biderman et al. (2024, "LoRA learns less and forgets less") find LoRA forgets less of the source domain than full finetuning and that full finetuning learns perturbations of rank 10–100× LoRA\'s; seed 000 asks whether VeRA, whose rank is nearly free, behaves like LoRA or like a higher-rank update.',
    ].join('\n');
    return {
      markdown,
      plots: { 'seed000-forgetting.svg': tradeoffSvg, 'seed000-spectrum.svg': spectrumSvg },
      data: {
        steps: b.steps, batchSize: b.batchSize, lr: { vera: VERA_LR, lora: LORA_LR }, seeds: ctx.seeds, users: us, generalLimit: b.generalLimit, generalTargets,
        configs: CONFIGS, base, runs: runs.map((r) => ({ ...r, gain: gain(r), forgetting: forget(r) })),
        spectra,
      },
    };
  },
};
