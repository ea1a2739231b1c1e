// Causal-LM training and evaluation over token sequences, for library users and the demo and
// experiments: a TrainTask for the trainer (batches drawn epoch by epoch, padded to their longest
// row) and the mean loss / perplexity of a model on held-out sequences.
import { collateCausalLm, EpochSampler, IGNORE_INDEX } from '../data/jsonl.js';
import { causalLmLoss, type CausalLM } from '../models/index.js';
import { noGrad, type Rng, type Tensor } from '../tensor/index.js';
import type { TrainTask } from './trainer.js';

/** What forward needs of a causal LM here. */
export type LmModel = CausalLM & { forward(ids: Int32Array, shape: [number, number], opts?: { attentionMask?: Float32Array }): Tensor };

/** A TrainTask over `sequences` (each ≥ 2 tokens): `batchSize` sequences per micro-batch, loss per target token. */
export function causalLmTask(model: LmModel, sequences: readonly Int32Array[], batchSize: number, padId = 0): TrainTask<number[]> {
  if (sequences.length === 0) throw new Error('causalLmTask: no sequences');
  const sampler = new EpochSampler(sequences.length, batchSize);
  return {
    nextBatch: (rng: Rng) => sampler.next(rng),
    loss(indices) {
      const batch = collateCausalLm(indices.map((i) => sequences[i]), padId);
      const logits = model.forward(batch.inputIds, batch.shape, { attentionMask: batch.attentionMask });
      return { loss: causalLmLoss(logits, batch.inputIds, batch.shape, IGNORE_INDEX, batch.labels), items: batch.tokens };
    },
  };
}

export interface LmEvaluation {
  /** Mean negative log-likelihood per predicted token (nats). */
  loss: number;
  perplexity: number;
  /** Tokens predicted (Σ length − 1). */
  targets: number;
}

/** Mean loss over every next-token prediction of `sequences`, in batches; the model in eval mode. */
export function evaluateCausalLm(model: LmModel & { training?: boolean; train?(mode?: boolean): unknown }, sequences: readonly Int32Array[], batchSize = 8, padId = 0): LmEvaluation {
  const wasTraining = model.training === true;
  model.train?.(false);
  try {
    return noGrad(() => {
      let sum = 0;
      let count = 0;
      for (let i = 0; i < sequences.length; i += batchSize) {
        const batch = collateCausalLm(sequences.slice(i, i + batchSize), padId);
        if (batch.targets === 0) continue;
        const logits = model.forward(batch.inputIds, batch.shape, { attentionMask: batch.attentionMask });
        sum += causalLmLoss(logits, batch.inputIds, batch.shape, IGNORE_INDEX, batch.labels).item() * batch.targets;
        count += batch.targets;
      }
      if (count === 0) throw new Error('evaluateCausalLm: no sequence with at least 2 tokens');
      const loss = sum / count;
      return { loss, perplexity: Math.exp(loss), targets: count };
    });
  } finally {
    model.train?.(wasTraining);
  }
}
