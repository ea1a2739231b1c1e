// `vera perplexity`: mean negative log-likelihood (nats) of a token sequence under a causal LM,
// with or without an adapter.
import type { WeightFormat } from '../../tensor/quant.js';
import { DOUBLE_QUANT_HELP, WEIGHTS_HELP, weightFormat } from '../options.js';
import { existsSync, readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { VeraError } from '../../io/errors.js';
import { readJsonFile } from '../../io/atomic.js';
import { isCausalLM, loadPretrained } from '../../models/index.js';
import { perplexity } from '../../train/lm.js';
import { PeftModel } from '../../peft/index.js';
import { loadTokenizer } from '../../data/tokenizer.js';

// the computation is the library's (src/train/lm.ts); re-exported for existing importers
export { perplexity, type PerplexityResult } from '../../train/lm.js';

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
    .option('--weights <format>', WEIGHTS_HELP, weightFormat)
    .option('--double-quant', DOUBLE_QUANT_HELP)
    .action(async (o: { model: string; adapter?: string; text?: string; tokenIds?: string; json?: boolean; allowNonFinite?: boolean; weights?: WeightFormat; doubleQuant?: boolean }) => {
      if ((o.text === undefined) === (o.tokenIds === undefined)) throw new VeraError('perplexity: give exactly one of --text FILE or --token-ids FILE.json');
      const allowNonFinite = o.allowNonFinite ?? false;
      const loaded = loadPretrained(o.model, { allowNonFinite, weights: o.weights, doubleQuant: o.doubleQuant });
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
