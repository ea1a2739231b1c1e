// Cross-entropy with label smoothing, as torch.nn.CrossEntropyLoss(label_smoothing=ε): the target
// distribution puts 1−ε on the label and ε/C on every class, so the loss is
// (1−ε)·CE + ε·mean over classes of −log_softmax, averaged over the rows whose target is not
// ignored. Composed from F ops, so autograd needs nothing new.
import { F, Tensor } from '../tensor/index.js';

/** Mean label-smoothed cross-entropy of logits (..., C) against one target per row. */
export function labelSmoothedCrossEntropy(logits: Tensor, targets: Int32Array, epsilon: number, ignoreIndex = -100): Tensor {
  if (!(epsilon >= 0 && epsilon <= 1)) throw new Error(`label smoothing must be in [0, 1], got ${epsilon}`);
  const ce = F.crossEntropy(logits, targets, { ignoreIndex });
  if (epsilon === 0) return ce;
  const classes = logits.shape[logits.ndim - 1];
  const rows = targets.length;
  const counted = targets.reduce((n, t) => n + (t === ignoreIndex ? 0 : 1), 0);
  // each counted row weighs 1/(counted·C): the mean over rows of the mean over classes
  const weights = Tensor.fromArray(Float32Array.from(targets, (t) => (t === ignoreIndex ? 0 : 1 / (counted * classes))), [rows, 1]);
  const logp = F.reshape(F.logSoftmax(logits), [rows, classes]);
  const uniform = F.scale(F.sum(F.mul(logp, weights)), -1);
  return F.add(F.scale(ce, 1 - epsilon), F.scale(uniform, epsilon));
}
