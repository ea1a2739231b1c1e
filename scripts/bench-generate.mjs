// Decoding speed of a SmolLM-135M-shaped Llama (random weights, so no checkpoint is needed) on the
// current backend: prefill of a 32-token prompt, then seconds per new token with the KV cache.
// Run after `npm run build`: node scripts/bench-generate.mjs
import { LlamaForCausalLM, llamaConfigFromJson, generate, Rng } from '../dist/src/index.js';

const config = llamaConfigFromJson({
  model_type: 'llama', vocab_size: 49152, hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30,
  num_attention_heads: 9, num_key_value_heads: 3, tie_word_embeddings: true,
}, 'SmolLM-135M shape');
const model = new LlamaForCausalLM(config, { rng: new Rng(0) });
const prompt = Array.from({ length: 32 }, (_, i) => (i * 37) % config.vocabSize);
const time = (n) => {
  const t0 = performance.now();
  generate(model, prompt, { maxNewTokens: n, eosTokenIds: [] });
  return (performance.now() - t0) / 1000;
};
const prefill = time(1);
const total = time(9);
console.log(`prefill (32 tokens + 1): ${prefill.toFixed(2)} s; decoding: ${((total - prefill) / 8).toFixed(3)} s/token`);
