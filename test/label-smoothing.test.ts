// Label-smoothed cross-entropy against torch.nn.CrossEntropyLoss(label_smoothing=ε) (scripts/fixtures/make_e2e_fixtures.py).
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tensor } from '../src/tensor/index.js';
import { labelSmoothedCrossEntropy } from '../src/nn/index.js';
import { causalLmLoss } from '../src/models/index.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIX = JSON.parse(fs.readFileSync(path.join(ROOT, 'test/fixtures/e2e/label_smoothing.json'), 'utf8')) as {
  rows: number; classes: number; logits: number[]; targets: number[]; cases: { epsilon: number; loss: number; grad: number[] }[];
};

for (const c of FIX.cases) {
  test(`label smoothing ${c.epsilon}: loss and gradient are torch's`, () => {
    const logits = Tensor.fromArray(FIX.logits, [FIX.rows, FIX.classes], true);
    const loss = labelSmoothedCrossEntropy(logits, Int32Array.from(FIX.targets), c.epsilon);
    assert.ok(Math.abs(loss.item() - c.loss) < 1e-5, `${loss.item()} vs ${c.loss}`);
    loss.backward();
    const grad = logits.grad!.toFloat32Array();
    c.grad.forEach((g, i) => assert.ok(Math.abs(grad[i] - g) < 1e-6, `grad[${i}] ${grad[i]} vs ${g}`));
  });
}

test('causalLmLoss with labelSmoothing shifts the labels as without', () => {
  // one row of FIX.rows + 1 positions: position t predicts label t+1
  const seq = FIX.rows + 1;
  const logits = Tensor.fromArray([...FIX.logits, ...new Array<number>(FIX.classes).fill(0)], [1, seq, FIX.classes]);
  const labels = Int32Array.from([-100, ...FIX.targets]);
  const loss = causalLmLoss(logits, new Int32Array(seq), [1, seq], -100, labels, 0.1);
  assert.ok(Math.abs(loss.item() - FIX.cases[1].loss) < 1e-5);
});
