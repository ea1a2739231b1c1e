// Small helpers the experiments share: mean ± std over seeds, and the command line that regenerates a result.
import * as path from 'node:path';
import type { ExperimentContext } from './types.js';

/** Mean and sample standard deviation (0 for one value). */
export function meanStd(xs: readonly number[]): { mean: number; std: number } {
  const n = xs.length;
  if (n === 0) return { mean: NaN, std: NaN };
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const std = n > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, std };
}

/** "m ± s" with `digits` significant digits (fixed-point when `fixed`). */
export function fmtMeanStd(xs: readonly number[], digits = 3, fixed = false): string {
  const { mean, std } = meanStd(xs);
  const f = (v: number): string => (fixed ? v.toFixed(digits) : v.toPrecision(digits));
  return xs.length > 1 ? `${f(mean)} ± ${f(std)}` : f(mean);
}

/** The npm command that regenerates an experiment with the context's seeds (and its text model, when `usesModel` and not the default). */
export function commandLine(ctx: ExperimentContext, name: string, usesModel = false): string {
  const seeds = ctx.seeds.join(',');
  const model = usesModel && path.resolve(ctx.textModel) !== path.join(ctx.dataDir, 'fortune-llama') ? ` --model ${ctx.textModel}` : '';
  return `npm run experiments -- ${name}${ctx.tiny ? ' --tiny' : ''}${seeds === '0,1,2' || ctx.tiny ? '' : ` --seeds ${seeds}`}${model}`;
}
