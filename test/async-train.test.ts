// trainStepsAsync (the loop for GPU backends, reading the loss every N steps) on the CPU backends:
// the same losses, bit for bit, as a synchronous loop doing the same steps; dataAsync/itemAsync
// resolve with what the synchronous reads give.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../src/backends/index.js';
import { Rng, Tensor, F } from '../src/tensor/index.js';
import { Linear } from '../src/nn/index.js';
import { AdamW, clipGradNorm, clipGradNormOnDevice, trainStepsAsync } from '../src/train/index.js';

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

test('clipGradNormOnDevice: the norm and clipped gradients of clipGradNorm, without a host read', () => {
  for (const maxNorm of [0.05, 1e3]) { // clipping, and a limit above the norm (gradients unchanged)
    const grads = (): Tensor[] => {
      const rng = new Rng(11);
      const ps = [Tensor.zeros([5, 7]), Tensor.zeros([3]), Tensor.zeros([4])];
      ps[0].grad = Tensor.fromArray(rng.fillNormal(new Float32Array(35), 0, 0.3), [5, 7]);
      ps[1].grad = Tensor.fromArray(rng.fillNormal(new Float32Array(3), 0, 2), [3]);
      return ps; // the third has no gradient and is skipped
    };
    const host = grads();
    const device = grads();
    const want = clipGradNorm(host, maxNorm);
    const got = clipGradNormOnDevice(device, maxNorm);
    assert.deepEqual(got.shape, []);
    assert.ok(Math.abs(got.item() - want) <= 1e-6 * want, `norm ${got.item()} vs ${want}`);
    assert.ok(want > 0.05 && want < 1e3);
    for (let i = 0; i < 2; i++) {
      const a = host[i].grad!.toFloat32Array();
      const b = device[i].grad!.toFloat32Array();
      assert.deepEqual(device[i].grad!.shape, host[i].grad!.shape);
      for (let j = 0; j < a.length; j++) assert.ok(Math.abs(a[j] - b[j]) <= 1e-6 * (1 + Math.abs(a[j])), `grad ${i}[${j}]: ${b[j]} vs ${a[j]}`);
    }
    assert.equal(device[2].grad, null);
  }
  assert.throws(() => clipGradNormOnDevice([], 0), /^Error: clipGradNormOnDevice: maxNorm must be > 0, got 0$/);
});

test('trainStepsAsync with maxGradNorm: the losses of a synchronous loop that clips, and the norms read with them', async () => {
  const a = setup();
  const got = await trainStepsAsync(a.task, a.optimizer, { steps: 5, rng: new Rng(1), readEvery: 2, maxGradNorm: 0.1 });
  const b = setup();
  const want: { step: number; loss: number; gradNorm: number }[] = [];
  for (let s = 1; s <= 5; s++) {
    const { loss } = b.task.loss();
    loss.backward();
    const norm = clipGradNorm(b.optimizer.params(), 0.1);
    b.optimizer.step();
    b.optimizer.zeroGrad();
    if (s % 2 === 0 || s === 5) want.push({ step: s, loss: loss.item(), gradNorm: norm });
  }
  assert.equal(got.length, 3);
  for (let i = 0; i < 3; i++) {
    assert.equal(got[i].step, want[i].step);
    assert.ok(Math.abs(got[i].loss - want[i].loss) < 1e-6, `loss at step ${want[i].step}: ${got[i].loss} vs ${want[i].loss}`);
    assert.ok(Math.abs(got[i].gradNorm! - want[i].gradNorm) < 1e-6 * (1 + want[i].gradNorm), `norm at step ${want[i].step}: ${got[i].gradNorm} vs ${want[i].gradNorm}`);
  }
  assert.ok(want[0].gradNorm > 0.1, 'the limit clips');
  await assert.rejects(trainStepsAsync(a.task, a.optimizer, { steps: 1, rng: new Rng(1), maxGradNorm: -1 }), /trainStepsAsync: maxGradNorm must be > 0, got -1/);
});
