// Outputs allocated without zero-filling (Kernels.allocUnset, the native backend): every op that
// takes one must write all of it. With the storages poisoned (filled with NaN as they are handed
// out), forward passes of each model family, a VeRA training step's loss and gradients, and a
// mixed batch of the engine (VeRA, LoRA and base rows) must give the very bits they give without
// the poison: an element an op left unwritten would show up as a NaN or a changed value. Runs on
// the native backend (the only one with allocUnset); elsewhere it is skipped.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { poisonUnsetStorage } from '../src/backends/native/index.js';
import { F, Rng, Tensor, kernels, manualSeed, noGrad } from '../src/tensor/index.js';
import { loadPretrained, type CausalLM } from '../src/models/index.js';
import { getPeftModel, loraConfig, veraConfig } from '../src/peft/index.js';
import { InferenceEngine, type EngineRequest } from '../src/engine/index.js';
import { makeAdapter } from './serve-helpers.js';
import { withTmp } from './helpers.js';

const fixture = (p: string): string => new URL(`../../test/fixtures/${p}`, import.meta.url).pathname;
const skip = kernels().name !== 'native' ? 'allocUnset is the native backend\'s' : false;

/** fn's numbers without and with the poison: they must be the same bits, and finite. */
async function samePoisoned(what: string, fn: () => Promise<Float32Array[]> | Float32Array[]): Promise<void> {
  const plain = await fn();
  poisonUnsetStorage(true);
  let poisoned: Float32Array[];
  try {
    poisoned = await fn();
  } finally {
    poisonUnsetStorage(false);
  }
  assert.equal(poisoned.length, plain.length);
  plain.forEach((want, i) => {
    const got = poisoned[i];
    assert.equal(got.length, want.length, `${what} [${i}]: length`);
    for (let j = 0; j < want.length; j++) {
      assert.ok(Number.isFinite(got[j]), `${what} [${i}][${j}]: ${got[j]} with poisoned storages`);
      assert.ok(Object.is(got[j], want[j]), `${what} [${i}][${j}]: ${got[j]} with poisoned storages, ${want[j]} without`);
    }
  });
}

test('poisoned storages actually hold NaN (the check below can fail)', { skip }, () => {
  poisonUnsetStorage(true);
  try {
    const s = kernels().allocUnset!(5) as Float32Array;
    assert.ok(s.every((v) => Number.isNaN(v)));
  } finally {
    poisonUnsetStorage(false);
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
