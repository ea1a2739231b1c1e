// temporary profiling script (not committed)
import '../src/backends/index.js';
import { Rng } from '../src/tensor/index.js';
import { LlamaForCausalLM, llamaConfigFromJson } from '../src/models/index.js';
import { InferenceEngine } from '../src/engine/index.js';
const s = { vocab: 49152, hidden: 576, intermediate: 1536, layers: 30, heads: 9, kvHeads: 3 };
const config = llamaConfigFromJson({ model_type: 'llama', vocab_size: s.vocab, hidden_size: s.hidden, intermediate_size: s.intermediate, num_hidden_layers: s.layers, num_attention_heads: s.heads, num_key_value_heads: s.kvHeads, tie_word_embeddings: true }, 'x');
const model = new LlamaForCausalLM(config, { rng: new Rng(0) });
const engine = new InferenceEngine(model, { vera: { r: 256, targetModules: ['q_proj'] } });
const n = Number(process.argv[2] ?? 64);
for (let rep = 0; rep < 2; rep++) {
  const t0 = performance.now();
  let steps = 0;
  for await (const _ of engine.generate({ promptIds: [1, 2, 3, 4], adapter: null, maxNewTokens: n, eosTokenIds: [] })) steps++;
  console.log(`${steps} tokens, ${((performance.now() - t0) / steps).toFixed(1)} ms/token`);
}
await engine.close();
