// Paper Table 12 (Appendix C): the training cost of VeRA against LoRA at equal rank (64), and VeRA
// at r 256, on this runtime and the embedded model: time per training step (forward, loss,
// backward, clipping, AdamW) and peak memory. Each configuration runs in its own child process
// (table12-child.ts), so its peak RSS (process.resourceUsage().maxRSS, the whole process: runtime,
// model, activations, adapter state) is its own; runs are interleaved across seeds.
import { spawnSync } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { barChartSpec, renderSvg, stackSpecs } from '../src/plot/index.js';
import { LLAMA_LINEAR } from './fig2-rank-scaling.js';
import { commandLine, fmtMeanStd, meanStd } from './stats.js';
import type { CostResult, CostSpec } from './table12-child.js';
import type { Experiment, ExperimentContext, ExperimentResult } from './types.js';

const CHILD = fileURLToPath(new URL('./table12-child.js', import.meta.url));
const CONFIGS: { method: CostSpec['method']; r: number }[] = [
  { method: 'LoRA', r: 64 },
  { method: 'VeRA', r: 64 },
  { method: 'VeRA', r: 256 },
];

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function runChild(spec: CostSpec): CostResult {
  const out = spawnSync(process.execPath, [CHILD, JSON.stringify(spec)], { encoding: 'utf8', maxBuffer: 16 << 20 });
  if (out.status !== 0) throw new Error(`table12-cost: ${spec.method} r=${spec.r} child failed (${out.status ?? out.signal}): ${(out.stderr || '').trim().split('\n').at(-1) ?? ''}`);
  const line = out.stdout.trim().split('\n').at(-1) ?? '';
  return JSON.parse(line) as CostResult;
}

interface Row {
  label: string;
  method: CostSpec['method'];
  r: number;
  trainable: number;
  projectionFloats: number;
  /** Adapter state while training, analytic: parameter + gradient + two Adam moments per trainable float, plus frozen projections; bytes. */
  adapterStateBytes: number;
  /** Per seed: the median step time (s). */
  stepSeconds: number[];
  /** Per seed: peak RSS (MiB). */
  peakMiB: number[];
  /** Per seed: peak RSS minus the RSS after loading the model (MiB): what training added. */
  trainingMiB: number[];
  backend: string;
}

const MiB = 1024; // maxRSS is in KiB

export const table12Cost: Experiment = {
  name: 'table12-cost',
  title: 'Paper Table 12: training step time and peak memory, VeRA against LoRA at rank 64 (and VeRA r 256), embedded model',
  async run(ctx: ExperimentContext): Promise<ExperimentResult> {
    const budget = ctx.tiny ? { batch: 2, seq: 16, warmup: 1, steps: 2 } : { batch: 8, seq: 128, warmup: 2, steps: 5 };
    const rows: Row[] = CONFIGS.map(({ method, r }) => ({ label: `${method} r=${r}`, method, r, trainable: 0, projectionFloats: 0, adapterStateBytes: 0, stepSeconds: [], peakMiB: [], trainingMiB: [], backend: '' }));
    const loadStart = loadavg()[0]!;
    for (const seed of ctx.seeds) {
      for (const row of rows) {
        const res = runChild({ model: ctx.textModel, method: row.method, r: row.r, targets: LLAMA_LINEAR, ...budget, seed });
        if (!res.losses.every(Number.isFinite)) throw new Error(`table12-cost: ${row.label} seed ${seed}: non-finite loss`);
        row.trainable = res.trainable;
        row.projectionFloats = res.projectionFloats;
        row.adapterStateBytes = 4 * (4 * res.trainable + res.projectionFloats);
        row.backend = res.backend;
        row.stepSeconds.push(median(res.stepSeconds));
        row.peakMiB.push(res.maxRssKiB / MiB);
        row.trainingMiB.push((res.maxRssKiB - res.loadedRssKiB) / MiB);
        ctx.log(`  ${row.label} seed ${seed}: ${(1000 * median(res.stepSeconds)).toFixed(0)} ms/step, peak RSS ${(res.maxRssKiB / MiB).toFixed(0)} MiB (+${((res.maxRssKiB - res.loadedRssKiB) / MiB).toFixed(0)} over the loaded model)`);
      }
    }
    const loadEnd = loadavg()[0]!;
    const cores = cpus().length;
    const lora = rows[0]!;
    const rel = (a: number[], b: number[]): string => {
      const x = meanStd(a).mean / meanStd(b).mean - 1;
      return `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}%`;
    };
    const ms = (xs: number[]): number[] => xs.map((x) => 1000 * x);
    const table = [
      '| method | trainable params | adapter state while training (analytic) | median step time, ms | vs LoRA r=64 | peak RSS, MiB | vs LoRA r=64 | RSS added by training, MiB |',
      '|---|---:|---:|---:|---:|---:|---:|---:|',
      ...rows.map((r) => `| ${r.label} | ${r.trainable.toLocaleString('en-US')} | ${(r.adapterStateBytes / 1024).toFixed(0)} KiB | ${fmtMeanStd(ms(r.stepSeconds), 0, true)} | ${r === lora ? '—' : rel(r.stepSeconds, lora.stepSeconds)} | ${fmtMeanStd(r.peakMiB, 0, true)} | ${r === lora ? '—' : rel(r.peakMiB, lora.peakMiB)} | ${fmtMeanStd(r.trainingMiB, 0, true)} |`),
    ];
    const categories = rows.map((r) => r.label);
    const bars = (name: string, label: string, values: number[][]): ReturnType<typeof barChartSpec> => barChartSpec({
      categoryAxis: { label: 'adapter' },
      valueAxis: { label },
      categories,
      series: [{ name, values: values.map((v) => meanStd(v).mean), errors: values.map((v) => meanStd(v).std) }],
      horizontal: true,
      step: 36,
      size: 360,
    });
    const svg = await renderSvg(stackSpecs([
      bars('median step time (ms)', 'ms per step (mean ± std over seeds)', rows.map((r) => ms(r.stepSeconds))),
      bars('peak RSS (MiB)', 'peak RSS, MiB (mean ± std over seeds)', rows.map((r) => r.peakMiB)),
    ], `Training cost on the embedded model, batch ${budget.batch} × ${budget.seq} tokens`));
    const markdown = [
      `# ${this.title}`,
      '',
      `Regenerate: \`${commandLine(ctx, this.name, true)}\``,
      '',
      `Seeds: ${ctx.seeds.join(', ')}: each seed runs every configuration once (interleaved), with its own random tokens and VeRA projections / LoRA A; the table gives mean ± std over seeds. Backend: ${lora.backend}.`,
      `Machine: ${cores} cores; load average (1 min) ${loadStart.toFixed(2)} at the start, ${loadEnd.toFixed(2)} at the end (above ${cores}, other work competed for the CPU and the step times are inflated).`,
      `Budget: batch ${budget.batch} × ${budget.seq} tokens (random token ids; the step's cost does not depend on the text), adapters on ${LLAMA_LINEAR.join(', ')} of every block (LoRA alpha = r), one step = forward, causal-LM loss, backward, gradient clipping at 1, AdamW; ${budget.warmup} warm-up step${budget.warmup === 1 ? '' : 's'}, then the median of ${budget.steps} timed steps.`,
      'Memory: each configuration runs in its own child process; "peak RSS" is its process.resourceUsage().maxRSS (the whole Node process: runtime, model, activations, adapter state), "RSS added by training" is the peak minus the peak right after loading the model. The runtime has no tensor-byte counter, so the adapter\'s own state is also given analytically: 4 bytes × (4 × trainable parameters: values, gradients, two Adam moments) + VeRA\'s frozen shared A and B.',
      '',
      ...table,
      '',
      '![step time and peak memory](table12-cost.svg)',
      '',
      'Paper (Table 12, Llama 7B, rank 64, instruction tuning on a GPU): VeRA trains 1.8% slower than LoRA (578 vs 568 min) and uses 7.4% less GPU memory (21.69 vs 23.42 GB), since it keeps no gradients or optimizer state for the shared random matrices. Wall-clock numbers here depend on the machine\'s load; the step times of one run are comparable with each other only.',
    ].join('\n');
    return { markdown, plots: { 'table12-cost.svg': svg }, data: { seeds: ctx.seeds, ...budget, cores, loadAverage: { start: loadStart, end: loadEnd }, targets: LLAMA_LINEAR, rows: rows.map((r) => ({ ...r, stepSecondsMean: meanStd(r.stepSeconds).mean, peakMiBMean: meanStd(r.peakMiB).mean })) } };
  },
};
