// What the examples share: where the embedded model and its users' fortunes lie, and a VeRA
// adapter trained for a few steps on one user's fortunes (the examples need adapters that differ).
// Not an example itself.
import { fileURLToPath } from 'node:url';
import {
  AdamW, causalLmTask, getPeftModel, readCausalLmJsonl, train, veraConfig,
  type CausalLMModel, type PeftModel, type Tokenizer,
} from 'vera';

/** The package's data folder (the examples run as dist/examples/NAME.js). */
const DATA = new URL('../../data/', import.meta.url);

/** fortune-llama: the 5.4M-parameter Llama (with its tokenizer) that ships in data/fortune-llama. */
export const FORTUNE_LLAMA = fileURLToPath(new URL('fortune-llama', DATA));

/** Users whose fortune categories fortune-llama never saw: data/fortunes/users/NAME/train.jsonl. */
export const USERS = ['startrek', 'zippy', 'riddles', 'tao'] as const;

/** A user's training fortunes, as token sequences ending in eos. */
export async function userFortunes(user: string, model: CausalLMModel, tokenizer: Tokenizer, seqLen = 64): Promise<Int32Array[]> {
  const file = fileURLToPath(new URL(`fortunes/users/${user}/train.jsonl`, DATA));
  const data = await readCausalLmJsonl(file, { vocabSize: model.config.vocabSize, seqLen, tokenizer, appendEos: model.eosTokenIds[0] });
  return data.sequences;
}

export interface QuickAdapterOptions {
  /** VeRA rank (every adapter of the examples shares the key 0, so one engine can serve them all). */
  r: number;
  steps: number;
  /** Module name suffixes to adapt. */
  targetModules: string[];
  seed?: number;
}

/**
 * Wraps `model` with a VeRA adapter and trains its vectors (λd, λb) for a few steps on `sequences`;
 * the model is left adapted, in eval mode. A few steps are enough to make adapters differ from each
 * other and from the base; real finetuning takes more.
 */
export function quickVeraAdapter(model: CausalLMModel, sequences: Int32Array[], o: QuickAdapterOptions): PeftModel<CausalLMModel> {
  const peft = getPeftModel(model, veraConfig({ r: o.r, targetModules: o.targetModules, projectionPrngKey: 0 }));
  const params = peft.trainableParameters();
  const optimizer = new AdamW([{ params: params.map(([, t]) => t), lr: 5e-2 }]);
  model.train();
  train(params, optimizer, causalLmTask(peft, sequences, 8, model.eosTokenIds[0]), { steps: o.steps, seed: o.seed ?? 0, progress: false });
  model.eval();
  return peft;
}
