// What the autograd tape keeps alive: only the storages backward reads. Forward intermediates that
// no backward closure saved must be collectable before backward runs (the tape links GradNodes,
// not tensors), while saved ones stay until their node has run.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import vm from 'node:vm';
import { F, Rng, Tensor } from '../src/tensor/index.js';
import { maxAbsDiff } from './helpers.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** Collect after the current job (WeakRefs read in a job keep their targets until it ends). */
async function collected(refs: WeakRef<object>[]): Promise<boolean[]> {
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  return refs.map((r) => r.deref() === undefined);
}

function randn(shape: number[], rng: Rng, requiresGrad = false): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.fromArray(Float32Array.from({ length: n }, () => rng.normal()), shape, requiresGrad);
}

test('the tape drops intermediates backward does not read, keeps those it does, and the gradient is unchanged', async () => {
  const rng = new Rng(11);
  const x = randn([5, 8], rng, true);
  const w = randn([8, 6], rng); // frozen: x·W's backward reads W only
  const c = randn([5, 6], rng);
  const refs: WeakRef<object>[] = [];
  const build = (): Tensor => {
    const h = F.matmul(x, w); // read by add only: not saved
    const s = F.add(h, c); // read by tanh, whose backward reads tanh's output only: not saved
    const t = F.tanh(s); // saved (tanh's derivative reads it)
    const u = F.gelu(t, 'tanh'); // gelu's backward reads its input t; its output is not saved by sum
    refs.push(new WeakRef(h.storage), new WeakRef(s.storage), new WeakRef(u.storage));
    return F.sum(u);
  };
  const loss = build();
  const [hGone, sGone, uGone] = await collected(refs);
  assert.ok(hGone, 'x·W (read only by add) was kept by the tape');
  assert.ok(sGone, "tanh's input (its backward reads the output) was kept by the tape");
  assert.ok(uGone, "gelu's output (sum's backward reads neither) was kept by the tape");
  loss.backward();
  const got = x.grad!.toFloat32Array();

  // the same function with every intermediate held by the caller gives the same gradient
  x.zeroGrad();
  const h = F.matmul(x, w);
  F.sum(F.gelu(F.tanh(F.add(h, c)), 'tanh')).backward();
  assert.equal(maxAbsDiff(got, x.grad!.toFloat32Array()), 0);
});

test('a saved activation stays alive until its node has run', async () => {
  const rng = new Rng(12);
  const x = randn([4, 4], rng, true);
  const refs: WeakRef<object>[] = [];
  const loss = ((): Tensor => {
    const t = F.tanh(x); // tanh's backward reads t
    refs.push(new WeakRef(t.storage));
    return F.sum(F.scale(t, 2));
  })();
  const [gone] = await collected(refs);
  assert.equal(gone, false, 'the tanh output its backward needs was collected');
  loss.backward();
  const [goneAfter] = await collected(refs);
  assert.ok(goneAfter, 'backward ran, but the saved tanh output is still alive');
});
