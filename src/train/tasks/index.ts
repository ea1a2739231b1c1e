// Task builders: data files + a model folder → a PreparedTask the Trainer runs (`vera train --task`
// is a thin layer over these). Each task's collator and batch loss are exported for library users
// who bring their own rows.
import { prepareCausalLm } from './causal-lm.js';
import { prepareImgCls } from './img-cls.js';
import { prepareSeqCls } from './seq-cls.js';
import type { PreparedTask, TaskOptions } from './common.js';

export * from './common.js';
export { prepareCausalLm, collateLmExamples, causalLmCollator, causalLmBatchLoss, nextTokenHits, e2eGenerationEval, type LmExample } from './causal-lm.js';
export { prepareSeqCls, loadForTask, classificationCollator, type ClassificationExample, type ClassificationBatch } from './seq-cls.js';
export { prepareImgCls, readImages, type ImageSet } from './img-cls.js';

/** Reads the task's data, loads (or builds) its model, and returns what training and evaluation need. */
export async function prepareTask(o: TaskOptions): Promise<PreparedTask> {
  if (o.task === 'causal-lm') return prepareCausalLm(o);
  if (o.task === 'seq-cls') return prepareSeqCls(o);
  return prepareImgCls(o);
}
