// Evaluation metrics of the GLUE benchmark, as scikit-learn and SciPy define them (the `evaluate`
// library's glue metric calls those): accuracy, binary F1 (positive class 1), Matthews correlation,
// Pearson and Spearman correlation (ties get their average rank). Degenerate cases follow the same
// libraries: MCC is 0 when a marginal is constant, F1 is 0 without true positives, a correlation
// with a constant input is NaN.

export type GlueMetricName = 'accuracy' | 'f1' | 'matthews_correlation' | 'pearson' | 'spearmanr';

function sameLength(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  if (a.length !== b.length) throw new Error(`${what}: ${a.length} predictions for ${b.length} references`);
  if (a.length === 0) throw new Error(`${what}: no examples`);
}

/** Fraction of predictions equal to their reference. */
export function accuracy(predictions: ArrayLike<number>, references: ArrayLike<number>): number {
  sameLength(predictions, references, 'accuracy');
  let hits = 0;
  for (let i = 0; i < predictions.length; i++) if (predictions[i] === references[i]) hits++;
  return hits / predictions.length;
}

/** Counts of the binary confusion matrix with `positive` as the positive class. */
function confusion(predictions: ArrayLike<number>, references: ArrayLike<number>, positive: number): { tp: number; fp: number; fn: number; tn: number } {
  let tp = 0;
  let fp = 0;
  let fn = 0;
  let tn = 0;
  for (let i = 0; i < predictions.length; i++) {
    const p = predictions[i] === positive;
    const r = references[i] === positive;
    if (p && r) tp++;
    else if (p) fp++;
    else if (r) fn++;
    else tn++;
  }
  return { tp, fp, fn, tn };
}

/** Binary F1 of class `positive` (default 1): 2·tp / (2·tp + fp + fn); 0 when that is 0/0. */
export function f1(predictions: ArrayLike<number>, references: ArrayLike<number>, positive = 1): number {
  sameLength(predictions, references, 'f1');
  const { tp, fp, fn } = confusion(predictions, references, positive);
  const denom = 2 * tp + fp + fn;
  return denom === 0 ? 0 : (2 * tp) / denom;
}

/**
 * Matthews correlation coefficient for any number of classes (scikit-learn's multiclass form,
 * which is the usual (tp·tn − fp·fn)/√(…) for two): 0 when predictions or references are constant.
 */
export function matthewsCorrelation(predictions: ArrayLike<number>, references: ArrayLike<number>): number {
  sameLength(predictions, references, 'matthews_correlation');
  const n = predictions.length;
  const predCount = new Map<number, number>();
  const refCount = new Map<number, number>();
  let correct = 0;
  for (let i = 0; i < n; i++) {
    predCount.set(predictions[i], (predCount.get(predictions[i]) ?? 0) + 1);
    refCount.set(references[i], (refCount.get(references[i]) ?? 0) + 1);
    if (predictions[i] === references[i]) correct++;
  }
  let pk = 0; // Σ_k p_k·t_k
  for (const [k, p] of predCount) pk += p * (refCount.get(k) ?? 0);
  let pp = 0;
  for (const p of predCount.values()) pp += p * p;
  let tt = 0;
  for (const t of refCount.values()) tt += t * t;
  const cov = correct * n - pk;
  const denom = Math.sqrt((n * n - pp) * (n * n - tt));
  return denom === 0 ? 0 : cov / denom;
}

/** Pearson's r (in float64); NaN when either input is constant. */
export function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  sameLength(x, y, 'pearson');
  const n = x.length;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = x[i] - mx;
    const dy = y[i] - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  if (sxx === 0 || syy === 0) return NaN;
  return Math.max(-1, Math.min(1, sxy / Math.sqrt(sxx * syy)));
}

/** Ranks 1…n, tied values sharing the average of their ranks (scipy.stats.rankdata's 'average'). */
export function averageRanks(values: ArrayLike<number>): Float64Array {
  const n = values.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => values[a] - values[b]);
  const ranks = new Float64Array(n);
  for (let i = 0; i < n; ) {
    let j = i;
    while (j + 1 < n && values[order[j + 1]] === values[order[i]]) j++;
    const rank = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) ranks[order[k]] = rank;
    i = j + 1;
  }
  return ranks;
}

/** Spearman's ρ: Pearson's r of the average ranks. */
export function spearman(x: ArrayLike<number>, y: ArrayLike<number>): number {
  sameLength(x, y, 'spearmanr');
  return pearson(averageRanks(x), averageRanks(y));
}

/** The GLUE tasks (MNLI's two dev sets share one metric). */
export const GLUE_TASKS = ['cola', 'sst2', 'mrpc', 'stsb', 'qqp', 'mnli', 'qnli', 'rte', 'wnli'] as const;
export type GlueTask = (typeof GLUE_TASKS)[number];

/** The metrics GLUE reports for a task (the `evaluate` glue metric's choice). */
export const GLUE_METRICS: Record<GlueTask, readonly GlueMetricName[]> = {
  cola: ['matthews_correlation'],
  sst2: ['accuracy'],
  mrpc: ['accuracy', 'f1'],
  stsb: ['pearson', 'spearmanr'],
  qqp: ['accuracy', 'f1'],
  mnli: ['accuracy'],
  qnli: ['accuracy'],
  rte: ['accuracy'],
  wnli: ['accuracy'],
};

/** The task's GLUE metrics: class predictions and labels, or (STS-B) predicted and gold scores. */
export function glueMetric(task: GlueTask, predictions: ArrayLike<number>, references: ArrayLike<number>): Partial<Record<GlueMetricName, number>> {
  const out: Partial<Record<GlueMetricName, number>> = {};
  for (const name of GLUE_METRICS[task]) {
    out[name] =
      name === 'accuracy'
        ? accuracy(predictions, references)
        : name === 'f1'
          ? f1(predictions, references)
          : name === 'matthews_correlation'
            ? matthewsCorrelation(predictions, references)
            : name === 'pearson'
              ? pearson(predictions, references)
              : spearman(predictions, references);
  }
  return out;
}
