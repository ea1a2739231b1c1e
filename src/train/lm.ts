// Causal-LM training and evaluation over token sequences, for library users and the demo and
// experiments: a TrainTask for the trainer (batches drawn epoch by epoch, padded to their longest
// row), the mean loss / perplexity of a model on held-out sequences, and the perplexity of one long
// text (`vera perplexity`). Each takes a model or a PeftModel wrapping it (whose adapters run).
import { collateCausalLm, EpochSampler, IGNORE_INDEX } from '../data/jsonl.js';
import { fail } from '../io/errors.js';
import { causalLmForwardLoss, causalLmLoss, type CausalLM } from '../models/index.js';
import { F, noGrad, type Rng, type Tensor } from '../tensor/index.js';
import type { TrainTask } from './trainer.js';

/** What forward needs of a causal LM here: `CausalLMModel` (GPT-2, the Llama family) has it. */
export type LmModel = CausalLM & { forward(ids: Int32Array, shape: [number, number], opts?: { attentionMask?: Float32Array }): Tensor };

/** A model, or a PeftModel (anything with a `model`) wrapping one: its adapter layers sit in the model's tree, so the model's forward runs them. */
export type LmModelOrPeft = LmModel | { readonly model: LmModel };

const unwrap = <M extends CausalLM>(m: M | { readonly model: M }): M => ('forward' in m ? m : m.model);

/** A TrainTask over `sequences` (each ≥ 2 tokens): `batchSize` sequences per micro-batch, loss per target token. */
export function causalLmTask(lm: LmModelOrPeft, sequences: readonly Int32Array[], batchSize: number, padId = 0): TrainTask<number[]> {
  if (sequences.length === 0) throw new Error('causalLmTask: no sequences');
  const model = unwrap(lm);
  const sampler = new EpochSampler(sequences.length, batchSize);
  return {
    nextBatch: (rng: Rng) => sampler.next(rng),
    loss(indices) {
      const batch = collateCausalLm(indices.map((i) => sequences[i]), padId);
      const loss = causalLmForwardLoss(model, batch.inputIds, batch.shape, { attentionMask: batch.attentionMask, ignoreIndex: IGNORE_INDEX, labels: batch.labels });
      return { loss, items: batch.tokens };
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

/** Mean loss over every next-token prediction of `sequences`, in batches; the model in eval mode (its mode is restored after). */
export function evaluateCausalLm(lm: LmModelOrPeft, sequences: readonly Int32Array[], batchSize = 8, padId = 0): LmEvaluation {
  const model = unwrap(lm);
  const wasTraining = model.training;
  model.train(false);
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
    model.train(wasTraining);
  }
}

export interface PerplexityResult {
  /** Predicted tokens (every token but the first). */
  tokens: number;
  /** Mean negative log-likelihood per predicted token (nats). */
  nll: number;
  perplexity: number;
}

/**
 * Perplexity of one token sequence (a whole text): every token after the first is predicted once.
 * A sequence longer than the context (GPT-2's n_positions, a sliding window) is cut into windows of
 * that many tokens that overlap by one, so each window predicts its own tokens from the prefix
 * inside the window. The model runs in eval mode (its mode is restored after).
 */
export function perplexity(lm: CausalLM | { readonly model: CausalLM }, ids: Int32Array): PerplexityResult {
  const model = unwrap(lm);
  const context = model.contextLength ?? ids.length;
  if (ids.length < 2) fail(`perplexity: need at least 2 tokens, got ${ids.length}`);
  let sum = 0;
  let count = 0;
  const wasTraining = model.training;
  model.train(false);
  try {
    noGrad(() => {
      for (let start = 0; start + 1 < ids.length; start += context - 1) {
        const window = ids.subarray(start, Math.min(ids.length, start + context));
        const n = window.length;
        const logits = model.forward(window, [1, n]);
        const targets = new Int32Array(n).fill(IGNORE_INDEX);
        targets.set(window.subarray(1), 0);
        const losses = F.crossEntropy(logits, targets, { reduction: 'none' }).data();
        for (let t = 0; t + 1 < n; t++) sum += losses[t]; // accumulate in double
        count += n - 1;
      }
    });
  } finally {
    model.train(wasTraining);
  }
  const nll = sum / count;
  return { tokens: count, nll, perplexity: Math.exp(nll) };
}
