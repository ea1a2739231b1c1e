// The paper's QLoRA setting on our runtime (bench section "qlora"): a VeRA training step on a
// Llama-2-7B-shaped model whose frozen linear layers are held in nf4 (double-quantized block
// scales, as QLoRA), built in memory. Reports peak RSS (it must fit this 24 GB machine with room
// to spare) and seconds per step.
//
// Building 6.5 billion random weights and quantizing each would take minutes of setup, so each
// distinct linear shape (q/k/v/o, gate/up, down) is drawn and quantized once and every layer gets
// its own copy of those bytes: memory and arithmetic are those of a real 7B, the values repeat
// across layers. The model is constructed without initialization (its float32 weights are
// zero-filled allocations the kernel never touches, so they take no memory) and each linear
// layer's float32 weight is released when its nf4 copy takes its place.
import '../src/backends/index.js';
import { Rng, kernels, quantize, quantizedBytes, type QuantizedData } from '../src/tensor/index.js';
import { LlamaForCausalLM, causalLmLoss, llamaConfigFromJson, quantizableLinears } from '../src/models/index.js';
import { getPeftModel, veraConfig } from '../src/peft/index.js';
import { AdamW } from '../src/train/index.js';
import { maxRssKiB, timed } from './stats.js';

export interface QloraSpec {
  shape: { vocab: number; hidden: number; intermediate: number; layers: number; heads: number };
  /** Tokens of the one sequence per step. */
  seq: number;
  r: number;
  /** Steps run; the first includes one-time costs (VeRA's projections, the optimizer's state). */
  steps: number;
}

export interface QloraResult {
  backend: string;
  linearLayers: number;
  /** nf4 bytes of all linear layers but the head (codes, block scales, nested scales). */
  nf4Bytes: number;
  /** float32 bytes of the rest: embedding, head, norms. */
  f32Bytes: number;
  trainableParams: number;
  buildSeconds: number;
  /** Peak RSS once the model is built (before any step). */
  builtRssKiB: number;
  stepSeconds: number[];
  losses: number[];
  maxRssKiB: number;
}

export const LLAMA2_7B: QloraSpec['shape'] = { vocab: 32000, hidden: 4096, intermediate: 11008, layers: 32, heads: 32 };
const TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

function copyQuantized(q: QuantizedData): QuantizedData {
  return {
    ...q,
    data: q.data.slice(),
    scales: q.scales.slice(),
    nested: q.nested ? { ...q.nested, qscales: q.nested.qscales.slice(), scales2: q.nested.scales2.slice() } : null,
  };
}

export function runQloraSpec(spec: QloraSpec): QloraResult {
  const s = spec.shape;
  const t0 = performance.now();
  const config = llamaConfigFromJson({
    model_type: 'llama', vocab_size: s.vocab, hidden_size: s.hidden, intermediate_size: s.intermediate, num_hidden_layers: s.layers,
    num_attention_heads: s.heads, num_key_value_heads: s.heads, tie_word_embeddings: false, max_position_embeddings: 4096,
  }, 'bench Llama-2-7B shape');
  const model = new LlamaForCausalLM(config, { init: false });
  const rng = new Rng(0);
  const templates = new Map<string, QuantizedData>();
  let nf4Bytes = 0;
  const linears = quantizableLinears(model);
  for (const [, layer] of linears) {
    const key = `${layer.outFeatures}x${layer.inFeatures}`;
    let q = templates.get(key);
    if (q === undefined) {
      q = quantize(rng.fillNormal(new Float32Array(layer.outFeatures * layer.inFeatures), 0, 0.02), layer.outFeatures, layer.inFeatures, 'nf4', { doubleQuant: true });
      templates.set(key, q);
    }
    const own = copyQuantized(q);
    layer.setQuantized(own, true);
    nf4Bytes += quantizedBytes(own);
  }
  // the embedding, the head and the norms stay float32 (QLoRA keeps the head out of 4-bit too)
  let f32Bytes = 0;
  for (const t of model.parameters()) {
    f32Bytes += 4 * t.size;
    if (t.ndim === 2) kernels().write(t.storage, rng.fillNormal(new Float32Array(t.size), 0, 0.02), 0);
  }
  const buildSeconds = (performance.now() - t0) / 1000;
  const builtRssKiB = maxRssKiB();

  const peft = getPeftModel(model, veraConfig({ targetModules: TARGETS, r: spec.r, veraDropout: 0 }));
  const trainable = peft.trainableParameters();
  const optimizer = new AdamW([{ params: trainable.map(([, t]) => t), lr: 1e-3 }], { weightDecay: 0 });
  const inputIds = Int32Array.from({ length: spec.seq }, () => rng.int(s.vocab));
  const shape: [number, number] = [1, spec.seq];
  model.train();
  const stepSeconds: number[] = [];
  const losses: number[] = [];
  for (let step = 0; step < spec.steps; step++) {
    stepSeconds.push(timed(() => {
      optimizer.zeroGrad();
      const loss = causalLmLoss(peft.model.forward(inputIds, shape), inputIds, shape);
      loss.backward();
      optimizer.step();
      losses.push(loss.item());
    }));
  }
  return {
    backend: kernels().name,
    linearLayers: linears.length,
    nf4Bytes,
    f32Bytes,
    trainableParams: peft.getNbTrainableParameters().trainable,
    buildSeconds,
    builtRssKiB,
    stepSeconds,
    losses,
    maxRssKiB: maxRssKiB(),
  };
}
