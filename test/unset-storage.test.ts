// Outputs allocated without zero-filling (Kernels.allocUnset, the native backend): every op that
// takes one must write all of it. Each case runs with those storages filled with zeros (the
// reference), then with NaN and with a huge finite value: the ops one by one over shapes that
// reach every GEMM path (few-row, packed, shared-B, rows against a weight; batches, transposes,
// broadcasts), multi-chunk elementwise work and ragged attention's vector and scalar paths; then
// forward passes of each model family, a VeRA training step's loss and gradients, and a mixed
// batch of the engine (VeRA, LoRA and base rows). Any element an op left unwritten changes the
// bits. Runs on the native backend (the only one with allocUnset; scripts/run-tests.mjs also runs
// it without AVX2 and without AVX-512); elsewhere it is skipped.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fillUnsetStorage } from '../src/backends/native/index.js';
import { F, Rng, Tensor, kernels, manualSeed, noGrad, unsetTensor } from '../src/tensor/index.js';
import { loadPretrained, type CausalLM } from '../src/models/index.js';
import { getPeftModel, loraConfig, veraConfig } from '../src/peft/index.js';
import { InferenceEngine, type EngineRequest } from '../src/engine/index.js';
import { makeAdapter } from './serve-helpers.js';
import { withTmp } from './helpers.js';

const fixture = (p: string): string => new URL(`../../test/fixtures/${p}`, import.meta.url).pathname;
const skip = kernels().name !== 'native' ? 'allocUnset is the native backend\'s' : false;

/** fn's numbers with unset storages zero-filled, then NaN-filled, then filled with 1e30: the same bits each time, and finite. */
async function samePoisoned(what: string, fn: () => Promise<Float32Array[]> | Float32Array[]): Promise<void> {
  const run = async (fill: number): Promise<Float32Array[]> => {
    fillUnsetStorage(fill);
    try {
      return await fn();
    } finally {
      fillUnsetStorage(null);
    }
  };
  const plain = await run(0);
  for (const poison of [NaN, 1e30]) {
    const poisoned = await run(poison);
    assert.equal(poisoned.length, plain.length);
    plain.forEach((want, i) => {
      const got = poisoned[i];
      assert.equal(got.length, want.length, `${what} [${i}]: length`);
      for (let j = 0; j < want.length; j++) {
        assert.ok(Number.isFinite(got[j]), `${what} [${i}][${j}]: ${got[j]} with unset storages filled with ${poison}`);
        assert.ok(Object.is(got[j], want[j]), `${what} [${i}][${j}]: ${got[j]} with unset storages filled with ${poison}, ${want[j]} with zeros`);
      }
    });
  }
}

test('poisoned storages actually hold the poison, and ops take them (the checks below can fail)', { skip }, () => {
  fillUnsetStorage(NaN);
  try {
    assert.ok((kernels().allocUnset!(5) as Float32Array).every((v) => Number.isNaN(v)));
    assert.ok(unsetTensor([5]).toFloat32Array().every((v) => Number.isNaN(v)));
  } finally {
    fillUnsetStorage(null);
  }
});

const rng = new Rng(17);
const rand = (shape: number[]): Tensor => Tensor.fromArray(rng.fillNormal(new Float32Array(shape.reduce((a, b) => a * b, 1)), 0, 1), shape);

test('each op given an unset output writes all of it: GEMM paths, batches, transposes, broadcasts, large elementwise work, ragged attention', { skip }, async () => {
  // m from one row to past the few-row path (64) and the packed blocks; n ≥ m (rows against a
  // weight) and not; k with tails, one slab and several
  for (const m of [1, 7, 64, 65, 200, 700]) {
    for (const [n, k] of [[m + 13, 300], [5, 600], [777, 1], [96, 1536]]) {
      const a = rand([m, k]), w = rand([n, k]), b = rand([k, n]);
      await samePoisoned(`matmul m ${m} n ${n} k ${k}`, () => noGrad(() => [F.matmul(a, w, { transB: true }), F.matmul(a, b)].map((t) => t.toFloat32Array())));
    }
  }
  const a3 = rand([3, 20, 30]), b3 = rand([3, 30, 25]), b2 = rand([30, 25]), a2 = rand([20, 30]), at = rand([3, 30, 20]);
  await samePoisoned('batched matmul', () => noGrad(() => [
    F.matmul(a3, b3), F.matmul(a3, b2), F.matmul(a2, b3), F.matmul(at, b3, { transA: true }), F.matmul(a3, F.permute(b3, [0, 2, 1]), { transB: true }),
  ].map((t) => t.toFloat32Array())));
  const big = rand([50, 1000]), row = rand([1000]), col = rand([50, 1]), cos = rand([50, 100]), sin = rand([50, 100]);
  await samePoisoned('elementwise, gather, norms', () => noGrad(() => [
    F.add(big, row), F.mul(big, col), F.sub(big, big), F.exp(big), F.relu(big), F.silu(big), F.tanh(big),
    F.permute(big, [1, 0]), F.slice(big, 1, 3, 900), F.rmsNorm(big, row), F.layerNorm(big, row, row), F.layerNorm(big, null, null), F.rotary(F.reshape(big, [50, 10, 100]), cos, sin),
    F.embedding(big, Int32Array.from({ length: 70 }, (_, i) => (i * 7) % 50)),
  ].map((t) => t.toFloat32Array())));
  // ragged attention: headDim 8 takes the vector path, 6 the scalar one
  for (const headDim of [8, 6]) {
    const heads = 4, kvHeads = 2, tokens = Int32Array.from([1, 3, 2]), past = Int32Array.from([5, 0, 2]);
    const total = 6;
    await samePoisoned(`raggedAttention headDim ${headDim}`, () => noGrad(() => {
      const r = new Rng(3); // the same caches and inputs in every run
      const t = (shape: number[]): Tensor => Tensor.fromArray(r.fillNormal(new Float32Array(shape.reduce((x, y) => x * y, 1)), 0, 1), shape);
      const kc = [...tokens].map((n, s) => t([(past[s] + n) * kvHeads * headDim]));
      const vc = [...tokens].map((n, s) => t([(past[s] + n) * kvHeads * headDim]));
      const out = F.raggedAttention(t([total, heads, headDim]), t([total, kvHeads, headDim]), t([total, kvHeads, headDim]), kc, vc, tokens, past, 0.3);
      return [out.toFloat32Array()];
    }));
  }
});

for (const dir of ['gpt2-tiny', 'decoders/llama-gqa', 'decoders/mistral', 'decoders/qwen2']) {
  test(`${dir}: forward logits, and a VeRA step's loss and gradients, the same with poisoned storages`, { skip }, async () => {
    const ids = Int32Array.from({ length: 14 }, (_, i) => (i * 37 + 5) % 90);
    await samePoisoned(`${dir} forward`, () => {
      const model = loadPretrained(fixture(dir)).model as CausalLM;
      return [noGrad(() => model.forward(ids, [2, 7])).toFloat32Array()];
    });
    await samePoisoned(`${dir} VeRA step`, () => {
      manualSeed(5); // the same λ both times
      const peft = getPeftModel(loadPretrained(fixture(dir)).model, veraConfig({ r: 4, initWeights: false }));
      const logits = (peft.model as unknown as CausalLM).forward(ids, [2, 7]);
      const targets = Int32Array.from(ids, (_, i) => ids[(i + 1) % ids.length]);
      const loss = F.crossEntropy(F.reshape(logits, [14, logits.shape[2]]), targets);
      loss.backward();
      return [loss.toFloat32Array(), ...peft.trainableParameters().map(([, p]) => p.grad!.toFloat32Array())];
    });
  });
}

test('BERT and ViT classifiers: logits the same with poisoned storages', { skip }, async () => {
  const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 7 + 3) % 30);
  await samePoisoned('bert-tiny-cls', () => {
    const model = loadPretrained(fixture('encoders/bert-tiny-cls')).model as unknown as { forward(ids: Int32Array, shape: number[]): Tensor };
    return [noGrad(() => model.forward(ids, [2, 6])).toFloat32Array()];
  });
  const rng = new Rng(3);
  const pixels = rng.fillNormal(new Float32Array(2 * 8 * 8), 0, 1);
  await samePoisoned('vit-tiny-cls', () => {
    const model = loadPretrained(fixture('encoders/vit-tiny-cls')).model as unknown as { forward(pixels: Tensor): Tensor };
    return [noGrad(() => model.forward(Tensor.fromArray(pixels, [2, 1, 8, 8]))).toFloat32Array()];
  });
});

test('the engine: a mixed batch (VeRA, LoRA, base rows) gives the same tokens and logits with poisoned storages', { skip }, async () => {
  await withTmp(async (dir) => {
    const llama = fixture('decoders/llama-gqa');
    const adapters = {
      alice: makeAdapter(llama, dir, 'alice', veraConfig({ targetModules: ['q_proj', 'v_proj', 'down_proj'], r: 8, initWeights: false }), 1, 0.4),
      carol: makeAdapter(llama, dir, 'carol', loraConfig({ targetModules: ['q_proj', 'o_proj'], r: 4, loraAlpha: 8 }), 3, 0.4),
    };
    const names = ['alice', 'carol', null];
    await samePoisoned('engine', async () => {
      const engine = new InferenceEngine(loadPretrained(llama).model as CausalLM & ReturnType<typeof loadPretrained>['model'], {
        vera: { r: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'] }, maxBatchSize: 4, maxBatchTokens: 10, prefillChunk: 4,
      });
      for (const [name, path] of Object.entries(adapters)) engine.addAdapter(name, path);
      const requests: EngineRequest[] = Array.from({ length: 6 }, (_, i) => ({
        promptIds: Array.from({ length: 2 + i * 2 }, (_, j) => (i * 11 + j * 5) % 100), adapter: names[i % 3], maxNewTokens: 4, eosTokenIds: [], returnLogits: true,
      }));
      const out: Float32Array[] = [];
      const steps = await Promise.all(requests.map(async (r) => {
        const got = [];
        for await (const s of engine.generate(r)) got.push(s);
        return got;
      }));
      for (const s of steps) out.push(Float32Array.from(s.map((t) => t.token)), ...s.map((t) => t.logits!));
      await engine.close();
      return out;
    });
  });
});
