// Child process of the table12-cost experiment: one training configuration on the embedded model,
// alone in its process so that its peak RSS (process.resourceUsage().maxRSS) is its own. Prints one
// JSON line. Usage: node dist/experiments/table12-child.js '<CostSpec json>'.
import '../src/index.js';
import { loadPretrained, causalLmLoss, type LlamaForCausalLM } from '../src/models/index.js';
import { getPeftModel, loraConfig, sharedProjections, veraConfig } from '../src/peft/index.js';
import { Rng, kernels, manualSeed } from '../src/tensor/index.js';
import { AdamW, clipGradNorm } from '../src/train/index.js';

export interface CostSpec {
  model: string;
  method: 'VeRA' | 'LoRA';
  r: number;
  targets: string[];
  batch: number;
  seq: number;
  warmup: number;
  steps: number;
  seed: number;
}

export interface CostResult {
  backend: string;
  trainable: number;
  /** Frozen floats the adapter adds (VeRA's shared A and B; 0 for LoRA). */
  projectionFloats: number;
  stepSeconds: number[];
  losses: number[];
  /** Peak RSS (KiB) after loading the model, before the adapter. */
  loadedRssKiB: number;
  /** Peak RSS (KiB) of the whole run. */
  maxRssKiB: number;
}

function run(spec: CostSpec): CostResult {
  const { model } = loadPretrained(spec.model, { log: () => {} });
  const lm = model as LlamaForCausalLM;
  const loadedRssKiB = process.resourceUsage().maxRSS;
  manualSeed(spec.seed);
  const config = spec.method === 'VeRA'
    ? veraConfig({ targetModules: spec.targets, r: spec.r, projectionPrngKey: spec.seed, saveProjection: false })
    : loraConfig({ targetModules: spec.targets, r: spec.r, loraAlpha: spec.r });
  const peft = getPeftModel(lm, config);
  const params = peft.trainableParameters();
  const tensors = params.map(([, t]) => t);
  const optimizer = new AdamW([{ params: tensors, lr: 1e-3 }]);
  const pair = sharedProjections(lm);
  const vocab = lm.config.vocabSize;
  const rng = new Rng(spec.seed);
  const shape: [number, number] = [spec.batch, spec.seq];
  const ids = Int32Array.from({ length: spec.batch * spec.seq }, () => rng.int(vocab));
  lm.train();
  const stepSeconds: number[] = [];
  const losses: number[] = [];
  for (let step = 0; step < spec.warmup + spec.steps; step++) {
    const t0 = performance.now();
    const loss = causalLmLoss(lm.forward(ids, shape), ids, shape);
    loss.backward();
    clipGradNorm(tensors, 1);
    optimizer.step();
    optimizer.zeroGrad();
    for (const t of tensors) t.grad = null;
    losses.push(loss.item());
    if (step >= spec.warmup) stepSeconds.push((performance.now() - t0) / 1000);
  }
  return {
    backend: kernels().name,
    trainable: tensors.reduce((a, t) => a + t.size, 0),
    projectionFloats: pair ? pair.A.size + pair.B.size : 0,
    stepSeconds,
    losses,
    loadedRssKiB,
    maxRssKiB: process.resourceUsage().maxRSS,
  };
}

const arg = process.argv[2];
if (arg === undefined) {
  process.stderr.write("usage: table12-child.js '<json spec>'\n");
  process.exit(2);
}
process.stdout.write(`${JSON.stringify(run(JSON.parse(arg) as CostSpec))}\n`);
