// Results must not depend on the thread count: GEMMs (the tiled and the shared-B paths, plain and
// transposed) and a VeRA training step (forward, loss, backward, AdamW) on a small GPT-2, run on
// two backends (one thread, several), compared bit for bit. Portable: used by
// test/wasm-kernels.test.ts in Node and by test/browser/wasm-suite.ts in Chromium.
import { GPT2LMHeadModel, causalLmLoss, type GPT2Config } from '../../src/models/gpt2.js';
import { getPeftModel } from '../../src/peft/peft_model.js';
import { veraConfig } from '../../src/peft/vera/config.js';
import { AdamW } from '../../src/train/optim.js';
import { Rng, checkedKernels, kernels, setKernels, type Kernels } from '../../src/tensor/index.js';
import { hasKernels } from '../../src/tensor/device.js';

export interface AgreementReport {
  /** One line per comparison that differed (empty: all identical). */
  differences: string[];
  /** Comparisons made. */
  compared: number;
  loss: number;
}

/** Index and values of the first element whose bits differ, or null. */
function firstDifference(a: Float32Array, b: Float32Array): string | null {
  if (a.length !== b.length) return `lengths ${a.length} and ${b.length}`;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < a.length; i++) if (ua[i] !== ub[i]) return `element ${i}: ${a[i]} vs ${b[i]}`;
  return null;
}

const GEMMS: { m: number; n: number; k: number; transA: boolean; transB: boolean; batch: number }[] = [
  { m: 320, n: 320, k: 320, transA: false, transB: false, batch: 1 }, // shared-B path at 2+ threads
  { m: 257, n: 131, k: 300, transA: false, transB: true, batch: 1 },
  { m: 96, n: 200, k: 64, transA: true, transB: false, batch: 3 },
  { m: 4, n: 300, k: 256, transA: false, transB: true, batch: 1 }, // small-m path
];

function gemm(k: Kernels, g: (typeof GEMMS)[number], seed: number): Float32Array {
  const rng = new Rng(seed);
  const a = k.fromArray(rng.fillUniform(new Float32Array(g.batch * g.m * g.k), -1, 1));
  const b = k.fromArray(rng.fillUniform(new Float32Array(g.batch * g.k * g.n), -1, 1));
  const c = k.alloc(g.batch * g.m * g.n);
  k.matmul(a, b, c, { batch: g.batch, m: g.m, n: g.n, k: g.k, transA: g.transA, transB: g.transB, strideA: g.m * g.k, strideB: g.k * g.n, accumulate: false });
  const out = k.read(c).slice();
  for (const s of [a, b, c]) k.free?.(s);
  return out;
}

const config: GPT2Config = {
  vocabSize: 211, nPositions: 64, nEmbd: 128, nLayer: 2, nHead: 4, nInner: null, activationFunction: 'gelu_new',
  residPdrop: 0, embdPdrop: 0, attnPdrop: 0, layerNormEpsilon: 1e-5, initializerRange: 0.02, scaleAttnWeights: true,
  scaleAttnByInverseLayerIdx: false, tieWordEmbeddings: true, bosTokenId: 210, eosTokenId: 210,
};
const BATCH = 4;
const SEQ = 32;

/** Loss, trainable gradients and trainable values after one AdamW step, on kernels `k`. */
function trainingStep(k: Kernels): { loss: number; grads: Float32Array[]; after: Float32Array[] } {
  const prev = hasKernels() ? kernels() : null;
  setKernels(checkedKernels(k));
  try {
    const peft = getPeftModel(new GPT2LMHeadModel(config, { rng: new Rng(7) }), veraConfig({ r: 16, projectionPrngKey: 3, targetModules: ['c_attn', 'c_proj', 'c_fc'] }));
    const params = peft.trainableParameters();
    params.forEach(([, t], i) => t.copyFrom(new Rng(100 + i).fillUniform(new Float32Array(t.size), -0.5, 0.5)));
    const ids = Int32Array.from({ length: BATCH * SEQ }, (_, i) => (i * 37 + 11) % 210);
    const opt = new AdamW([{ params: params.map(([, t]) => t), lr: 0.05 }], { weightDecay: 0.01 });
    opt.zeroGrad();
    const loss = causalLmLoss(peft.model.forward(ids, [BATCH, SEQ]), ids, [BATCH, SEQ]);
    loss.backward();
    const grads = params.map(([, t]) => t.grad!.toFloat32Array());
    opt.step();
    return { loss: loss.item(), grads, after: params.map(([, t]) => t.toFloat32Array()) };
  } finally {
    if (prev) setKernels(prev);
  }
}

/** Runs the GEMMs and the training step on `one` and `many` and lists every bit that differs. */
export function threadAgreement(one: Kernels, many: Kernels): AgreementReport {
  const differences: string[] = [];
  let compared = 0;
  GEMMS.forEach((g, i) => {
    const d = firstDifference(gemm(one, g, i + 1), gemm(many, g, i + 1));
    compared++;
    if (d) differences.push(`matmul ${g.batch}×${g.m}×${g.n}×${g.k}${g.transA ? ' Aᵀ' : ''}${g.transB ? ' Bᵀ' : ''}: ${d}`);
  });
  const a = trainingStep(one);
  const b = trainingStep(many);
  compared++;
  if (Object.is(a.loss, b.loss) === false) differences.push(`training loss: ${a.loss} vs ${b.loss}`);
  for (const [what, x, y] of [['gradient', a.grads, b.grads], ['value after the step', a.after, b.after]] as const) {
    x.forEach((t, i) => {
      compared++;
      const d = firstDifference(t, y[i]);
      if (d) differences.push(`trainable ${i} ${what}: ${d}`);
    });
  }
  return { differences, compared, loss: a.loss };
}
