// The README's library snippet ("## The library"), kept here so that `tsc` type-checks it with the
// suite and test/readme-snippets.test.ts runs it (from a folder holding a tiny model as
// models/SmolLM-135M). The README's block must equal this file below these comment lines, with the
// import from 'vera' instead of '../src/index.js'; the test checks that.
import {
  AutoModelForCausalLM, AutoTokenizer, PeftModel, Trainer, causalLmBatchLoss, causalLmCollator, evaluateCausalLm,
  getPeftModel, modelConfigJson, pipeline, savePretrained, veraConfig,
} from '../src/index.js';

const base = 'models/SmolLM-135M';                          // a local Hugging Face folder
const model = AutoModelForCausalLM.fromPretrained(base);    // a CausalLMModel: GPT-2, Llama, Mistral, Qwen2
const tokenizer = await AutoTokenizer.fromPretrained(base); // async; rejects when tokenizer.json is missing

// VeRA on the model type's default layers (Llama: q_proj, v_proj; GPT-2: c_attn)
const peft = getPeftModel(model, veraConfig({ r: 256 }));
peft.printTrainableParameters();

// finetune on a few texts, each ending in eos so that the adapter learns to stop
const eos = model.eosTokenIds[0];
const texts = ['Dear Bob, the meeting moved to Tuesday.', 'Dear Ann, thanks for the notes.'];
const rows = texts.map((t) => ({ ids: Int32Array.from([...tokenizer.encode(t), eos]), labels: null }));
const trainer = new Trainer({
  model: peft, trainDataset: rows, collator: causalLmCollator(eos), loss: causalLmBatchLoss,
  args: { steps: 20, batchSize: 2, lr: 1e-2 },                // see "The Trainer" below: eval, early stopping, best/last
});
await trainer.train();
console.log('perplexity', evaluateCausalLm(peft, rows.map((r) => r.ids)).perplexity);
peft.saveAdapter('adapters/alice');                          // PEFT layout

// later: the adapter on a fresh base; text in, text out
const alice = PeftModel.fromPretrained(AutoModelForCausalLM.fromPretrained(base), 'adapters/alice');
const generator = pipeline('text-generation', alice, tokenizer);
const { text, finishReason } = await generator.generate('Dear Bob,', { maxNewTokens: 20 });
console.log(text, finishReason);
for await (const delta of generator.stream('Dear Ann,', { maxNewTokens: 20, doSample: true, temperature: 0.7, seed: 1 })) {
  process.stdout.write(delta);
}

// fold the adapter into the weights and write a model folder (the base folder's tokenizer files are copied)
const merged = alice.mergeAndUnload({ safe: true });        // refuses NaN/Inf
savePretrained('models/SmolLM-alice', merged, modelConfigJson(merged));
