// `vera perplexity`: mean negative log-likelihood (nats) of a token sequence under a causal LM,
// with or without an adapter.
import { existsSync, readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { VeraError } from '../../io/errors.js';
import { readJsonFile } from '../../io/atomic.js';
import { isCausalLM, loadPretrained, type CausalLM } from '../../models/index.js';
import { PeftModel } from '../../peft/index.js';
import { F, noGrad } from '../../tensor/index.js';
import { loadTokenizer } from '../../data/tokenizer.js';

export interface PerplexityResult {
  /** Predicted tokens (every token but the first). */
  tokens: number;
  nll: number;
  perplexity: number;
}

/**
 * Every token after the first is predicted once. A sequence longer than the context (GPT-2's
 * n_positions, a sliding window) is cut into windows of that many tokens that overlap by one, so
 * each window predicts its own tokens from the prefix inside the window.
 */
export function perplexity(model: CausalLM, ids: Int32Array): PerplexityResult {
  const context = model.contextLength ?? ids.length;
  if (ids.length < 2) throw new VeraError(`perplexity: need at least 2 tokens, got ${ids.length}`);
  let sum = 0;
  let count = 0;
  noGrad(() => {
    for (let start = 0; start + 1 < ids.length; start += context - 1) {
      const window = ids.subarray(start, Math.min(ids.length, start + context));
      const n = window.length;
      const logits = model.forward(window, [1, n]);
      const targets = new Int32Array(n).fill(-100);
      targets.set(window.subarray(1), 0);
      const losses = F.crossEntropy(logits, targets, { reduction: 'none' }).data();
      for (let t = 0; t + 1 < n; t++) sum += losses[t]; // accumulate in double
      count += n - 1;
    }
  });
  const nll = sum / count;
  return { tokens: count, nll, perplexity: Math.exp(nll) };
}

function readTokenIds(file: string, vocab: number): Int32Array {
  const json = readJsonFile(file, 'token ids');
  if (!Array.isArray(json) || !json.every((v) => Number.isInteger(v) && v >= 0 && v < vocab)) {
    throw new VeraError(`${file}: expected a JSON array of integer token ids in [0, ${vocab})`);
  }
  return Int32Array.from(json as number[]);
}

export function registerPerplexity(program: Command): void {
  program
    .command('perplexity')
    .description('mean negative log-likelihood (nats) and perplexity of a text under a causal LM, optionally with an adapter')
    .requiredOption('--model <dir>', 'model folder')
    .option('--adapter <dir>', 'adapter folder (PEFT layout)')
    .option('--text <file>', 'text file (needs tokenizer.json in the model folder)')
    .option('--token-ids <file>', 'JSON array of token ids')
    .option('--json', 'print {"tokens", "nll", "perplexity"} as JSON')
    .option('--allow-non-finite', 'load weights holding NaN/Inf instead of refusing them (a NaN result still fails)')
    .action(async (o: { model: string; adapter?: string; text?: string; tokenIds?: string; json?: boolean; allowNonFinite?: boolean }) => {
      if ((o.text === undefined) === (o.tokenIds === undefined)) throw new VeraError('perplexity: give exactly one of --text FILE or --token-ids FILE.json');
      const allowNonFinite = o.allowNonFinite ?? false;
      const loaded = loadPretrained(o.model, { allowNonFinite });
      const model = loaded.model;
      if (!isCausalLM(model)) throw new VeraError(`${o.model}: perplexity needs a causal language model, this is a ${loaded.modelType}`);
      if (o.adapter !== undefined) PeftModel.fromPretrained(model, o.adapter, { allowNonFinite });
      let ids: Int32Array;
      if (o.tokenIds !== undefined) ids = readTokenIds(o.tokenIds, model.config.vocabSize);
      else {
        const file = o.text!;
        if (!existsSync(file)) throw new VeraError(`${file}: not found`);
        const tokenizer = await loadTokenizer(o.model);
        if (tokenizer === null) throw new VeraError(`--text needs a tokenizer.json in ${o.model} (or use --token-ids)`);
        ids = Int32Array.from(tokenizer.encode(readFileSync(file, 'utf8')));
      }
      const r = perplexity(model, ids);
      // a NaN mean is no measurement: exit non-zero rather than print "perplexity NaN" as a result
      if (!Number.isFinite(r.nll)) throw new VeraError(`perplexity: the mean NLL over ${r.tokens} tokens is ${r.nll} (non-finite weights or activations in ${o.model}${o.adapter !== undefined ? ` or ${o.adapter}` : ''})`);
      if (o.json) console.log(JSON.stringify(r));
      else console.log(`tokens ${r.tokens}  nll ${r.nll.toFixed(6)} nats  perplexity ${r.perplexity.toFixed(4)}`);
    });
}
