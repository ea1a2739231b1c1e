// Issue 14's rank-scaling run: DVoRA (DoRA's magnitude on VeRA) and DoRA (on LoRA) over growing
// ranks on Fig. 2's two tasks (the embedded model on 'startrek'; the CNN on five new Fashion-MNIST
// classes), at VeRA's and LoRA's lrs, drawn with VeRA and LoRA. VeRA's and LoRA's rows are
// fig2-rank-scaling's (its JSON, when it was run with these seeds and budgets; they are seeded, so
// retraining gives the same numbers), which keeps this run within the 15-minute budget.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chart, runRankGrid, table, type Method, type Row } from './fig2-rank-scaling.js';
import { commandLine, fmtMeanStd } from './stats.js';
import type { Experiment, ExperimentContext, ExperimentResult } from './types.js';

const DVORA_RANKS = [1, 16, 256, 1024];
const DORA_RANKS = [1, 4, 16, 64];

interface Fig2Json {
  seeds: number[];
  text: { steps: number; batchSize: number; seqLen: number; rows: Row[] };
  image: { steps: number; batchSize: number; base: { steps: number }; rows: Row[] };
}

/** fig2-rank-scaling's VeRA/LoRA rows when its run matches this one's seeds and budgets, else null. */
function fig2Rows(ctx: ExperimentContext, run: Awaited<ReturnType<typeof runRankGrid>>): { text: Row[]; image: Row[] } | null {
  const file = path.join(ctx.outDir, 'fig2-rank-scaling.json');
  if (!fs.existsSync(file)) return null;
  const d = JSON.parse(fs.readFileSync(file, 'utf8')) as Fig2Json;
  const same = JSON.stringify(d.seeds) === JSON.stringify(ctx.seeds)
    && d.text.steps === run.text.steps && d.text.batchSize === run.text.batchSize && d.text.seqLen === run.text.seqLen
    && d.image.steps === run.image.steps && d.image.batchSize === run.image.batchSize && d.image.base.steps === run.image.base.steps;
  return same ? { text: d.text.rows, image: d.image.rows } : null;
}

export const fig2RankScalingDora: Experiment = {
  name: 'fig2-rank-scaling-dora',
  title: 'Fig. 2 with DoRA: DVoRA and DoRA against VeRA and LoRA at growing rank (text perplexity, Fashion-MNIST accuracy)',
  async run(ctx: ExperimentContext): Promise<ExperimentResult> {
    const dvora = ctx.tiny ? [4] : DVORA_RANKS;
    const dora = ctx.tiny ? [4] : DORA_RANKS;
    const cells: [Method, number][] = [...dvora.map((r): [Method, number] => ['DVoRA', r]), ...dora.map((r): [Method, number] => ['DoRA', r])];
    const run = await runRankGrid(ctx, cells);
    let reused = fig2Rows(ctx, run);
    let source = 'VeRA and LoRA rows: fig2-rank-scaling\'s (docs/experiments/fig2-rank-scaling.json, same seeds and budgets), not retrained here.';
    if (reused === null) {
      // no matching fig2 run: VeRA and LoRA at the same ranks, here
      const again = await runRankGrid(ctx, [...dvora.map((r): [Method, number] => ['VeRA', r]), ...dora.map((r): [Method, number] => ['LoRA', r])]);
      reused = { text: again.textRows, image: again.imageRows };
      source = 'VeRA and LoRA trained in this run at the same ranks.';
    }
    const textRows = [...reused.text, ...run.textRows];
    const imageRows = [...reused.image, ...run.imageRows];
    const plots = {
      'fig2-rank-scaling-dora-text.svg': await chart(textRows, `Held-out perplexity on '${run.user}': VeRA, LoRA, DVoRA, DoRA`, 'perplexity (mean ± std)', { name: 'base model (no adapter)', value: run.base.perplexity }),
      'fig2-rank-scaling-dora-fashion.svg': await chart(imageRows, 'Fashion-MNIST new-class accuracy: VeRA, LoRA, DVoRA, DoRA', 'accuracy % (mean ± std)', { name: 'head only (no adapter)', value: run.headValues.reduce((a, b) => a + b, 0) / run.headValues.length }),
    };
    const markdown = [
      `# ${this.title}`,
      '',
      `Regenerate: \`${commandLine(ctx, this.name, true)}\``,
      '',
      `Seeds: ${ctx.seeds.join(', ')}. DVoRA ranks ${dvora.join(', ')} at VeRA's lrs; DoRA ranks ${dora.join(', ')} at LoRA's (alpha = r); the magnitude vectors train at their method's lr. Tasks, budgets and everything else as fig2-rank-scaling ([fig2-rank-scaling.md](fig2-rank-scaling.md)): text ${run.text.steps} steps of batch ${run.text.batchSize} on ${run.trainFortunes} fortunes of '${run.user}' cut to ${run.text.seqLen} tokens, perplexity on ${run.evalFortunes} held-out ones (base ${run.base.perplexity.toFixed(2)}); images ${run.image.steps} steps of batch ${run.image.batchSize} with the head trained fully (head only: ${fmtMeanStd(run.headValues, 1, true)}%). ${source}`,
      '',
      '## (a) Text',
      '',
      ...table(textRows, 'perplexity', 2),
      '',
      '![perplexity against trainable parameters](fig2-rank-scaling-dora-text.svg)',
      '',
      '## (b) Fashion-MNIST',
      '',
      ...table(imageRows, 'accuracy %', 1),
      '',
      '![accuracy against trainable parameters](fig2-rank-scaling-dora-fashion.svg)',
      '',
      'Paper (DoRA, Liu et al., 2024): DoRA above LoRA at every rank it tried (commonsense reasoning, r 4–64), and DVoRA above VeRA (instruction tuning).',
    ].join('\n');
    return { markdown, plots, data: { seeds: ctx.seeds, dvoraRanks: dvora, doraRanks: dora, source, text: { ...run.text, basePerplexity: run.base.perplexity, rows: textRows }, image: { ...run.image, headParams: run.headParams, rows: imageRows } } };
  },
};
