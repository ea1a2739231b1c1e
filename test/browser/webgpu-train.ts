// A VeRA training run on a tiny GPT-2, on WebGPU against the TypeScript backend: the first step's
// loss and every trainable gradient must match, then an asynchronous training loop on WebGPU must
// bring the loss down.
import { GPT2LMHeadModel, causalLmLoss, type GPT2Config } from '../../src/models/gpt2.js';
import { getPeftModel } from '../../src/peft/peft_model.js';
import { veraConfig } from '../../src/peft/vera/config.js';
import { AdamW } from '../../src/train/optim.js';
import { trainStepsAsync, type AsyncTrainLoss } from '../../src/train/async-loop.js';
import { clipGradNorm, clipGradNormOnDevice } from '../../src/train/clip.js';
import { generate, generateAsync } from '../../src/models/generation.js';
import { Rng, setKernels, checkedKernels, type Kernels, type Tensor } from '../../src/tensor/index.js';

export interface TrainingReport {
  adapter: string;
  firstLossTs: number;
  firstLossGpu: number;
  /** Largest |gpu − ts| / (1 + |ts|) over all gradients' elements. */
  maxGradErr: number;
  grads: number;
  /** The first step's gradient norm: clipGradNorm on ts, clipGradNormOnDevice on WebGPU. */
  normTs: number;
  normGpu: number;
  /** Largest relative difference of the gradients clipped to half that norm. */
  maxClippedErr: number;
  /** Losses read back during the WebGPU run (every readEvery steps), with the gradient norm (clipped to 1). */
  losses: AsyncTrainLoss[];
  ms: number;
}

const config: GPT2Config = {
  vocabSize: 101, nPositions: 64, nEmbd: 32, nLayer: 2, nHead: 4, nInner: null, activationFunction: 'gelu_new',
  residPdrop: 0, embdPdrop: 0, attnPdrop: 0, layerNormEpsilon: 1e-5, initializerRange: 0.02, scaleAttnWeights: true,
  scaleAttnByInverseLayerIdx: false, tieWordEmbeddings: true, bosTokenId: 100, eosTokenId: 100,
};
const SEQ = 12;
const BATCH = 2;

/** Two fixed sequences with a learnable pattern. */
const ids = Int32Array.from({ length: BATCH * SEQ }, (_, i) => ((i % SEQ) * 7 + Math.floor(i / SEQ) * 3) % 100);

function build(): { peft: ReturnType<typeof getPeftModel<GPT2LMHeadModel>>; params: [string, Tensor][] } {
  const peft = getPeftModel(new GPT2LMHeadModel(config, { rng: new Rng(7) }), veraConfig({ r: 8, projectionPrngKey: 3, targetModules: ['c_attn', 'c_fc'] }));
  const params = peft.trainableParameters();
  // random λd/λb (λb starts at zero, which would leave λd's gradient zero)
  params.forEach(([, t], i) => t.copyFrom(new Rng(100 + i).fillUniform(new Float32Array(t.size), -0.5, 0.5)));
  return { peft, params };
}

const loss = (peft: ReturnType<typeof build>['peft']): Tensor => causalLmLoss(peft.model.forward(ids, [BATCH, SEQ]), ids, [BATCH, SEQ]);

export async function veraTrainingCheck(gpu: Kernels & { readAsync(s: unknown): Promise<Float32Array>; adapterInfo: string }, ts: Kernels, steps: number): Promise<TrainingReport> {
  const t0 = performance.now();
  setKernels(checkedKernels(ts));
  const ref = build();
  const lossTs = loss(ref.peft);
  lossTs.backward();
  const refGrads = ref.params.map(([, t]) => t.grad!.toFloat32Array());
  const firstLossTs = lossTs.item();
  const tsParams = ref.params.map(([, t]) => t);
  const normTs = Math.sqrt(refGrads.reduce((a, g) => a + g.reduce((b, x) => b + x * x, 0), 0));
  clipGradNorm(tsParams, normTs / 2);
  const refClipped = tsParams.map((t) => t.grad!.toFloat32Array());

  setKernels(checkedKernels(gpu));
  try {
    const run = build();
    const lossGpu = loss(run.peft);
    lossGpu.backward();
    let maxGradErr = 0;
    for (let i = 0; i < run.params.length; i++) {
      const g = await run.params[i][1].grad!.dataAsync();
      for (let j = 0; j < g.length; j++) maxGradErr = Math.max(maxGradErr, Math.abs(g[j] - refGrads[i][j]) / (1 + Math.abs(refGrads[i][j])));
    }
    const firstLossGpu = await lossGpu.itemAsync();
    const normGpu = await clipGradNormOnDevice(run.params.map(([, t]) => t), normTs / 2).itemAsync();
    let maxClippedErr = 0;
    for (let i = 0; i < run.params.length; i++) {
      const g = await run.params[i][1].grad!.dataAsync();
      for (let j = 0; j < g.length; j++) maxClippedErr = Math.max(maxClippedErr, Math.abs(g[j] - refClipped[i][j]) / (1 + Math.abs(refClipped[i][j])));
    }
    const optimizer = new AdamW([{ params: run.params.map(([, t]) => t), lr: 0.05 }], { weightDecay: 0 });
    optimizer.zeroGrad();
    const task = { nextBatch: () => 0, loss: () => ({ loss: loss(run.peft), items: BATCH * SEQ }) };
    const losses = await trainStepsAsync(task, optimizer, { steps, rng: new Rng(1), readEvery: Math.max(1, Math.floor(steps / 4)), maxGradNorm: 1 });
    return { adapter: gpu.adapterInfo, firstLossTs, firstLossGpu, maxGradErr, grads: refGrads.length, normTs, normGpu, maxClippedErr, losses, ms: performance.now() - t0 };
  } finally {
    setKernels(checkedKernels(ts));
  }
}

/** Greedy decoding with a KV cache: generateAsync on WebGPU against generate on the TS backend. */
export async function generationCheck(gpu: Kernels, ts: Kernels): Promise<{ gpu: number[]; ts: number[] }> {
  const prompt = [5, 17, 29, 41];
  const opts = { maxNewTokens: 10, eosTokenIds: [] };
  setKernels(checkedKernels(ts));
  const ref = generate(build().peft, prompt, opts).tokens;
  setKernels(checkedKernels(gpu));
  try {
    const stream = generateAsync(build().peft, prompt, opts);
    const tokens: number[] = [];
    for await (const step of stream) tokens.push(step.token);
    return { gpu: tokens, ts: ref };
  } finally {
    setKernels(checkedKernels(ts));
  }
}
