// The figures the commands draw with --plot (specs only; src/plot renders them): `vera train`'s loss
// curve and `vera inspect --adapter`'s per-layer norms (the paper's Figure 3 view).
import { barChartSpec, lineChartSpec, stackSpecs, type Series, type TopLevelSpec } from '../plot/index.js';
import type { HistoryEntry } from '../train/index.js';

/** Eval metrics that are not plotted beside the loss: the eval loss has its own line, perplexity is exp of it. */
const LOSS_METRICS = new Set(['eval_loss', 'eval_perplexity']);

/**
 * The training curve: the training loss at every logged step and the eval loss where it was
 * evaluated; below it, when the run evaluated other metrics (accuracy, F1, BLEU, …), those per step.
 * `finalEval` (the metrics of the final evaluation) adds points at step `steps` that the history
 * lacks (a resumed run with no steps left, the E2E generation metrics).
 */
export function trainingCurveSpec(history: readonly HistoryEntry[], finalEval: Record<string, number> | null, steps: number, title: string): TopLevelSpec {
  const rows: Record<string, number | undefined>[] = history.map((h) => ({ ...h }));
  if (finalEval !== null) {
    let last = rows.find((r) => r['step'] === steps);
    if (last === undefined) rows.push((last = { step: steps }));
    for (const [k, v] of Object.entries(finalEval)) if (typeof last[k] !== 'number') last[k] = v;
  }
  const seriesOf = (key: string, name: string): Series => ({
    name,
    points: rows.filter((r) => typeof r[key] === 'number' && typeof r['step'] === 'number').map((r) => ({ x: r['step']!, y: r[key]! })),
  });
  const loss = [seriesOf('loss', 'train loss'), seriesOf('eval_loss', 'eval loss')].filter((s) => s.points.length > 0);
  const metricKeys = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) => k.startsWith('eval_') && !LOSS_METRICS.has(k)).sort();
  const metrics = metricKeys.map((k) => seriesOf(k, k.slice('eval_'.length))).filter((s) => s.points.length > 0);
  // both panels over the whole run, so their steps line up
  const xDomain: [number, number] = [0, Math.max(1, steps, ...rows.map((r) => r['step'] ?? 0))];
  const lossChart = lineChartSpec({ x: { label: 'step', domain: xDomain }, y: { label: 'loss' }, series: loss, height: 260 });
  if (metrics.length === 0) return stackSpecs([lossChart], title);
  const metricChart = lineChartSpec({ x: { label: 'step', domain: xDomain }, y: { label: 'eval metric' }, series: metrics, height: 200 });
  return stackSpecs([lossChart, metricChart], title);
}

/** What adapterNormsSpec needs of an inspect report. */
export interface NormsReport {
  peftType: string;
  r: number;
  layers: { module: string; norms: Record<string, number> }[];
}

const NORM_LABELS: Record<string, string> = { lambda_d: '‖λd‖', lambda_b: '‖λb‖', lora_A: '‖A‖', lora_B: '‖B‖' };

/**
 * Grouped bars of the trained vectors' norms per adapted layer: ‖λd‖ and ‖λb‖ for VeRA, ‖A‖ and ‖B‖
 * (Frobenius) for LoRA. More than 16 layers are drawn as horizontal bars, one row per layer.
 */
export function adapterNormsSpec(rep: NormsReport, title: string): TopLevelSpec {
  const keys = [...new Set(rep.layers.flatMap((l) => Object.keys(l.norms)))];
  const known = Object.keys(NORM_LABELS).filter((k) => keys.includes(k));
  const order = [...known, ...keys.filter((k) => !known.includes(k))];
  return barChartSpec({
    title,
    categoryAxis: { label: 'adapted layer' },
    valueAxis: { label: 'norm' },
    categories: rep.layers.map((l) => l.module),
    series: order.map((k) => ({ name: NORM_LABELS[k] ?? `‖${k}‖`, values: rep.layers.map((l) => l.norms[k] ?? NaN) })),
    horizontal: rep.layers.length > 16,
  });
}
