// trainStepsAsync (the loop for GPU backends, reading the loss every N steps) on the CPU backends:
// the same losses, bit for bit, as a synchronous loop doing the same steps; dataAsync/itemAsync
// resolve with what the synchronous reads give.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../src/backends/index.js';
import { Rng, Tensor, F } from '../src/tensor/index.js';
import { Linear } from '../src/nn/index.js';
import { AdamW, trainStepsAsync } from '../src/train/index.js';

function setup(): { task: { nextBatch: (r: Rng) => number; loss: () => { loss: Tensor; items: number } }; optimizer: AdamW } {
  const rng = new Rng(3);
  const lin = new Linear(6, 3, { rng });
  const x = Tensor.fromArray(rng.fillNormal(new Float32Array(8 * 6), 0, 1), [8, 6]);
  const targets = Int32Array.from([0, 1, 2, 0, 1, 2, 0, 1]);
  const params = [lin.weight, lin.bias!];
  for (const p of params) p.requiresGrad = true;
  const optimizer = new AdamW([{ params, lr: 0.05 }]);
  return { task: { nextBatch: (r) => r.int(10), loss: () => ({ loss: F.crossEntropy(lin.forward(x), targets), items: 8 }) }, optimizer };
}

test('trainStepsAsync: the losses of a synchronous loop at every readEvery-th step and the last', async () => {
  const a = setup();
  const got = await trainStepsAsync(a.task, a.optimizer, { steps: 7, rng: new Rng(1), readEvery: 3 });
  const b = setup();
  const want: number[] = [];
  for (let s = 1; s <= 7; s++) {
    const { loss } = b.task.loss();
    loss.backward();
    b.optimizer.step();
    b.optimizer.zeroGrad();
    want.push(loss.item());
  }
  assert.deepEqual(got, [{ step: 3, loss: want[2] }, { step: 6, loss: want[5] }, { step: 7, loss: want[6] }]);
  assert.ok(want[6] < want[0]);
});

test('trainStepsAsync refuses bad counts in one line; dataAsync and itemAsync give the synchronous values', async () => {
  const a = setup();
  await assert.rejects(trainStepsAsync(a.task, a.optimizer, { steps: 0, rng: new Rng(1) }), /^Error: trainStepsAsync: steps must be a positive integer, got 0$|steps must be a positive integer, got 0/);
  await assert.rejects(trainStepsAsync(a.task, a.optimizer, { steps: 2, rng: new Rng(1), readEvery: 0 }), /readEvery must be a positive integer, got 0/);
  const t = Tensor.fromArray([1.5, -2, 3], [3]);
  assert.deepEqual(await t.dataAsync(), t.toFloat32Array());
  assert.equal(await Tensor.fromArray([4.25], [1]).itemAsync(), 4.25);
  await assert.rejects(t.itemAsync(), /itemAsync\(\) needs a one-element tensor/);
});
