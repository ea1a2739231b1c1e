// The WebGPU bench page (bundled for Chromium by bench/webgpu.ts): GEMM GFLOP/s and VeRA training
// steps on a GPT-2 shape, on whatever adapter the browser offers.
import { loadWebGpuKernels, type WebGpuKernels } from '../src/backends/webgpu/index.js';
import { GPT2LMHeadModel, causalLmLoss, gpt2ConfigFromJson } from '../src/models/gpt2.js';
import { getPeftModel } from '../src/peft/peft_model.js';
import { veraConfig } from '../src/peft/vera/config.js';
import { AdamW } from '../src/train/optim.js';
import { Rng, setKernels, checkedKernels, type Storage } from '../src/tensor/index.js';
import type { WebGpuBenchResult, WebGpuBenchSpec } from './webgpu-types.js';

async function run(spec: WebGpuBenchSpec): Promise<WebGpuBenchResult> {
  const k: WebGpuKernels = await loadWebGpuKernels({ powerPreference: 'high-performance' });
  const swiftshader = /swiftshader/i.test(k.adapterInfo);
  // the GPU has run everything submitted so far
  const done = async (): Promise<void> => {
    k.flush();
    await k.device.queue.onSubmittedWorkDone();
  };
  const sizes = swiftshader ? spec.sizes.filter((n) => n <= 512) : spec.sizes;
  const gemm: WebGpuBenchResult['gemm'] = [];
  for (const n of sizes) {
    const rng = new Rng(n);
    const a = k.fromArray(rng.fillNormal(new Float32Array(n * n), 0, 1));
    const b = k.fromArray(rng.fillNormal(new Float32Array(n * n), 0, 1));
    const c: Storage = k.alloc(n * n);
    const p = { batch: 1, m: n, n, k: n, transA: false, transB: false, strideA: 0, strideB: 0, accumulate: false };
    k.matmul(a, b, c, p);
    await done();
    // enough back-to-back products per sample that submit and wait overheads do not dominate
    const reps = Math.max(1, Math.min(64, Math.round(2 ** 28 / n ** 3)));
    const seconds: number[] = [];
    for (let r = 0; r < spec.runs; r++) {
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) k.matmul(a, b, c, p);
      await done();
      seconds.push((performance.now() - t0) / 1000 / reps);
    }
    gemm.push({ n, seconds });
    for (const s of [a, b, c]) k.free?.(s);
  }

  // training steps: SwiftShader gets the small shape whatever was asked (a CPU rasterizer)
  const shape = swiftshader ? spec.small : spec.train;
  setKernels(checkedKernels(k));
  const config = gpt2ConfigFromJson({
    model_type: 'gpt2', n_layer: shape.layers, n_embd: shape.width, n_head: Math.max(1, Math.floor(shape.width / 64)),
    vocab_size: shape.vocab, n_positions: Math.max(1024, shape.seq), resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0,
  }, 'bench GPT-2');
  const peft = getPeftModel(new GPT2LMHeadModel(config, { rng: new Rng(0) }), veraConfig({ targetModules: ['c_attn', 'c_proj', 'c_fc'], r: shape.r, veraDropout: 0 }));
  const params = peft.trainableParameters().map(([, t]) => t);
  const optimizer = new AdamW([{ params, lr: 1e-3 }], { weightDecay: 0.01 });
  const rng = new Rng(1);
  const ids = Int32Array.from({ length: shape.batch * shape.seq }, () => rng.int(shape.vocab));
  const step = async (): Promise<number> => {
    const loss = causalLmLoss(peft.model.forward(ids, [shape.batch, shape.seq]), ids, [shape.batch, shape.seq]);
    loss.backward();
    optimizer.step();
    optimizer.zeroGrad();
    return loss.itemAsync();
  };
  const losses = [await step()];
  const stepSeconds: number[] = [];
  for (let i = 0; i < spec.steps; i++) {
    const t0 = performance.now();
    losses.push(await step());
    stepSeconds.push((performance.now() - t0) / 1000);
  }
  return { adapter: k.adapterInfo, swiftshader, gemm, train: { shape, stepSeconds, losses } };
}

(globalThis as unknown as { veraBench: { run: typeof run } }).veraBench = { run };
(globalThis as unknown as { veraReady: boolean }).veraReady = true;
