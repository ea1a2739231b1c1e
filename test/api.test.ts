// The README's library flow, through the package entry: load a Hugging Face folder, wrap it with
// VeRA, train a few steps, save in PEFT layout, reload, merge.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AdamW, F, PeftModel, causalLmLoss, getPeftModel, loadPretrained, manualSeed, noGrad, veraConfig, type GPT2LMHeadModel,
} from '../src/index.js';

const tiny = new URL('../../test/fixtures/gpt2-tiny', import.meta.url).pathname;

function gpt2(): GPT2LMHeadModel {
  const loaded = loadPretrained(tiny);
  assert.equal(loaded.modelType, 'gpt2');
  return loaded.model as GPT2LMHeadModel;
}

test('README flow: getPeftModel → train → saveAdapter → fromPretrained → mergeAndUnload', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vera-api-'));
  try {
    manualSeed(0);
    const model = gpt2();
    model.train();
    const peft = getPeftModel(model, veraConfig({ targetModules: ['c_attn', 'c_proj', 'c_fc'], r: 16 }));
    const lines: string[] = [];
    peft.printTrainableParameters((l) => lines.push(l));
    assert.match(lines[0], /^trainable params: 704 \|\|/); // 8 layers × r 16 + Σ out 2 × (96+32+128+32)
    const ids = Int32Array.from({ length: 2 * 16 }, (_, i) => (i * 7) % 101);
    const shape = [2, 16] as const;
    const optimizer = new AdamW([{ params: peft.trainableParameters().map(([, t]) => t), lr: 2e-2 }], { weightDecay: 0 });
    const losses: number[] = [];
    for (let step = 0; step < 8; step++) {
      const loss = causalLmLoss(model.forward(ids, shape), ids, shape);
      losses.push(loss.item());
      optimizer.zeroGrad();
      loss.backward();
      optimizer.step();
    }
    assert.ok(losses[7] < losses[0] - 0.05, `loss ${losses[0]} → ${losses[7]}`);
    for (const [name, t] of model.namedParameters()) if (!name.includes('vera_lambda')) assert.equal(t.grad, null, `${name} stays without a gradient`);
    model.eval();
    const adapted = noGrad(() => model.forward(ids, shape)).toFloat32Array();
    peft.saveAdapter(dir);

    const again = PeftModel.fromPretrained(gpt2(), dir);
    const reloaded = noGrad(() => again.model.forward(ids, shape)).toFloat32Array();
    assert.deepEqual(reloaded, adapted);
    const merged = again.mergeAndUnload({ safe: true });
    const out = noGrad(() => merged.forward(ids, shape)).toFloat32Array();
    const diff = out.reduce((m, v, i) => Math.max(m, Math.abs(v - adapted[i])), 0);
    assert.ok(diff < 1e-4, `merged logits differ by ${diff}`);
    assert.ok(!merged.namedParameters().some(([n]) => n.includes('vera')), 'no adapter left after mergeAndUnload');
    assert.ok(F.sum(merged.forward(ids, shape)).size === 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
