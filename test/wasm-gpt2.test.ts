// End to end on the WebAssembly backend: gpt2-tiny's logits and two VeRA training steps (forward,
// causal-LM loss, backward, AdamW on λd/λb) give what the TypeScript backend gives, within float32
// rounding. Both backends run in this process, switched with setKernels.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

import { tsKernels } from '../src/backends/index.js';
import { loadWasmKernelsSync } from '../src/backends/wasm/node.js';
import { checkedKernels, kernels, noGrad, setKernels } from '../src/tensor/index.js';
import type { Kernels } from '../src/tensor/index.js';
import { causalLmLoss } from '../src/models/gpt2.js';
import { loadPretrained } from '../src/models/auto.js';
import { getPeftModel, veraConfig } from '../src/peft/index.js';
import { AdamW } from '../src/train/index.js';
import { maxAbsDiff } from './helpers.js';

const TINY = fileURLToPath(new URL('../../test/fixtures/gpt2-tiny', import.meta.url));

interface Run { logits: Float32Array; losses: number[]; lambdas: Float32Array[]; after: Float32Array }

function run(k: Kernels): Run {
  const prev = kernels();
  setKernels(checkedKernels(k));
  try {
    const loaded = loadPretrained(TINY);
    if (loaded.modelType !== 'gpt2') throw new Error('gpt2-tiny is not a GPT-2');
    const model = loaded.model;
    model.eval(); // no dropout: both backends see the same function
    const shape: [number, number] = [2, 9];
    const ids = Int32Array.from({ length: 18 }, (_, i) => (i * 37 + 5) % 101);
    const logits = noGrad(() => model.forward(ids, shape)).toFloat32Array();
    const peft = getPeftModel(model, veraConfig({ targetModules: ['c_attn', 'c_proj', 'c_fc'], r: 8, veraDropout: 0, projectionPrngKey: 3 }));
    const params = peft.trainableParameters().map(([, t]) => t);
    const opt = new AdamW([{ params, lr: 0.05 }], { weightDecay: 0.01 });
    const losses: number[] = [];
    for (let step = 0; step < 2; step++) {
      opt.zeroGrad();
      const loss = causalLmLoss(peft.model.forward(ids, shape), ids, shape);
      loss.backward();
      opt.step();
      losses.push(loss.item());
    }
    const after = noGrad(() => peft.model.forward(ids, shape)).toFloat32Array();
    return { logits, losses, lambdas: params.map((t) => t.toFloat32Array()), after };
  } finally {
    setKernels(prev);
  }
}

test('gpt2-tiny on wasm: logits and two VeRA training steps match the TypeScript backend', () => {
  const ref = run(tsKernels);
  const got = run(loadWasmKernelsSync());
  assert.ok(maxAbsDiff(got.logits, ref.logits) < 1e-4, `logits differ by ${maxAbsDiff(got.logits, ref.logits)}`);
  for (let i = 0; i < ref.losses.length; i++) assert.ok(Math.abs(got.losses[i] - ref.losses[i]) < 1e-4, `loss ${i}: ${got.losses[i]} vs ${ref.losses[i]}`);
  assert.ok(ref.losses[1] < ref.losses[0], 'the steps lower the loss');
  assert.equal(got.lambdas.length, ref.lambdas.length);
  for (let i = 0; i < ref.lambdas.length; i++) assert.ok(maxAbsDiff(got.lambdas[i], ref.lambdas[i]) < 1e-4, `λ tensor ${i} differs by ${maxAbsDiff(got.lambdas[i], ref.lambdas[i])}`);
  assert.ok(maxAbsDiff(got.after, ref.after) < 1e-3, `logits after training differ by ${maxAbsDiff(got.after, ref.after)}`);
});
