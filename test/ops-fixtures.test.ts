// Forward outputs and input gradients of the fused ops against PyTorch float64 references
// (test/fixtures/ops.safetensors, documented in scripts/fixtures/README.md §11). Inputs are
// stored F32, references F64; the gradient convention is loss = Σ out · grad_out, i.e. grad_out
// is fed to backward as the upstream gradient.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

import '../src/backends/index.js';
import { Tensor, F } from '../src/tensor/index.js';
import { SafetensorsFile } from '../src/io/safetensors.js';

const fixtures = new URL('../../test/fixtures/', import.meta.url);
const file = SafetensorsFile.open(fileURLToPath(new URL('ops.safetensors', fixtures)));

const RTOL = 1e-4;
const ATOL = 1e-5;

/** An F32 input as a leaf tensor with the stored shape. */
function input(name: string, requiresGrad = true): Tensor {
  const info = file.info(name);
  assert.equal(info.dtype, 'F32', `${name} dtype`);
  return Tensor.fromArray(file.getFloat32(name), info.shape, requiresGrad);
}

/** An F64 reference, read at full precision. */
function reference(name: string): { data: Float64Array; shape: number[] } {
  const info = file.info(name);
  assert.equal(info.dtype, 'F64', `${name} dtype`);
  const raw = file.getRaw(name);
  return { data: new Float64Array(raw.buffer, raw.byteOffset, raw.byteLength / 8), shape: info.shape };
}

function expectClose(actual: Tensor | null, refName: string, opts: { shape?: readonly number[] } = {}): void {
  assert.ok(actual !== null, `${refName}: no tensor (missing gradient?)`);
  const ref = reference(refName);
  assert.deepEqual([...actual.shape], [...(opts.shape ?? ref.shape)], `${refName}: shape`);
  const a = actual.data();
  assert.equal(a.length, ref.data.length, `${refName}: size`);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < a.length; i++) {
    const r = ref.data[i];
    const excess = Math.abs(a[i] - r) - (ATOL + RTOL * Math.abs(r));
    if (!(excess <= worstExcess)) {
      worstExcess = Number.isNaN(excess) ? Infinity : excess;
      worst = i;
    }
  }
  assert.ok(worst < 0, `${refName}: element ${worst} is ${a[worst]}, reference ${ref.data[worst]} (|diff| ${Math.abs(a[worst] - ref.data[worst]).toExponential(3)})`);
}

describe('ops vs PyTorch float64 references (ops.safetensors)', () => {
  test('fixture file holds the documented tensors', () => {
    for (const op of ['conv2d', 'max_pool2d', 'gelu_tanh', 'gelu_erf', 'silu', 'layer_norm', 'rms_norm', 'softmax', 'log_softmax', 'cross_entropy', 'sdpa_causal', 'sdpa_padmask']) {
      assert.ok(file.has(`${op}.out`), `${op}.out`);
      assert.ok(file.has(`${op}.grad_out`), `${op}.grad_out`);
    }
  });

  test('conv2d (stride 1, padding 2, with bias)', () => {
    const x = input('conv2d.x');
    const w = input('conv2d.weight');
    const b = input('conv2d.bias');
    const out = F.conv2d(x, w, b, 1, 2);
    expectClose(out, 'conv2d.out');
    out.backward(input('conv2d.grad_out', false));
    expectClose(x.grad, 'conv2d.grad_x');
    expectClose(w.grad, 'conv2d.grad_weight');
    expectClose(b.grad, 'conv2d.grad_bias');
  });

  test('max_pool2d (2×2, stride 2)', () => {
    const x = input('max_pool2d.x');
    const out = F.maxPool2d(x, 2, 2);
    expectClose(out, 'max_pool2d.out');
    out.backward(input('max_pool2d.grad_out', false));
    expectClose(x.grad, 'max_pool2d.grad_x');
  });

  const unary: [string, (x: Tensor) => Tensor][] = [
    ['gelu_tanh', (x) => F.gelu(x, 'tanh')],
    ['gelu_erf', (x) => F.gelu(x, 'erf')],
    ['silu', F.silu],
    ['softmax', F.softmax],
    ['log_softmax', F.logSoftmax],
  ];
  for (const [op, fn] of unary) {
    test(op, () => {
      const x = input(`${op}.x`);
      const out = fn(x);
      expectClose(out, `${op}.out`);
      out.backward(input(`${op}.grad_out`, false));
      expectClose(x.grad, `${op}.grad_x`);
    });
  }

  test('layer_norm (eps 1e-5, weight and bias)', () => {
    const x = input('layer_norm.x');
    const w = input('layer_norm.weight');
    const b = input('layer_norm.bias');
    const out = F.layerNorm(x, w, b, 1e-5);
    expectClose(out, 'layer_norm.out');
    out.backward(input('layer_norm.grad_out', false));
    expectClose(x.grad, 'layer_norm.grad_x');
    expectClose(w.grad, 'layer_norm.grad_weight');
    expectClose(b.grad, 'layer_norm.grad_bias');
  });

  test('rms_norm (eps 1e-6, weight)', () => {
    const x = input('rms_norm.x');
    const w = input('rms_norm.weight');
    const out = F.rmsNorm(x, w, 1e-6);
    expectClose(out, 'rms_norm.out');
    out.backward(input('rms_norm.grad_out', false));
    expectClose(x.grad, 'rms_norm.grad_x');
    expectClose(w.grad, 'rms_norm.grad_weight');
  });

  test('cross_entropy (mean, ignore_index -100)', () => {
    const logits = input('cross_entropy.logits');
    const targets = Int32Array.from(file.getFloat32('cross_entropy.targets'), (v) => Math.round(v));
    assert.deepEqual([...targets], [0, -100, 4, 4, -100, 0]);
    const out = F.crossEntropy(logits, targets, { ignoreIndex: -100 });
    assert.deepEqual(out.shape, []);
    // the reference stores the scalar as shape [1]
    expectClose(out, 'cross_entropy.out', { shape: [] });
    const gOut = file.getFloat32('cross_entropy.grad_out');
    assert.equal(gOut.length, 1);
    out.backward(Tensor.fromArray(gOut, []));
    expectClose(logits.grad, 'cross_entropy.grad_logits');
    const g = logits.grad!.data();
    for (const row of [1, 4]) for (let j = 0; j < 5; j++) assert.equal(g[row * 5 + j], 0, `ignored row ${row}`);
  });

  test('scaled dot-product attention, causal', () => {
    const q = input('sdpa_causal.q');
    const k = input('sdpa_causal.k');
    const v = input('sdpa_causal.v');
    const out = F.attention(q, k, v, { causal: true });
    expectClose(out, 'sdpa_causal.out');
    out.backward(input('sdpa_causal.grad_out', false));
    expectClose(q.grad, 'sdpa_causal.grad_q');
    expectClose(k.grad, 'sdpa_causal.grad_k');
    expectClose(v.grad, 'sdpa_causal.grad_v');
  });

  test('scaled dot-product attention, key padding mask', () => {
    const q = input('sdpa_padmask.q');
    const k = input('sdpa_padmask.k');
    const v = input('sdpa_padmask.v');
    const mask = file.getFloat32('sdpa_padmask.mask');
    assert.deepEqual([...mask], [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
    const out = F.attention(q, k, v, { keyMask: mask });
    expectClose(out, 'sdpa_padmask.out');
    out.backward(input('sdpa_padmask.grad_out', false));
    expectClose(q.grad, 'sdpa_padmask.grad_q');
    expectClose(k.grad, 'sdpa_padmask.grad_k');
    expectClose(v.grad, 'sdpa_padmask.grad_v');
    // masked keys/values (batch 1, keys 3 and 4) get exactly zero gradient
    const [, heads, t, d] = k.shape;
    for (const g of [k.grad!.data(), v.grad!.data()]) {
      for (let h = 0; h < heads; h++) {
        for (const j of [3, 4]) for (let c = 0; c < d; c++) assert.equal(g[((1 * heads + h) * t + j) * d + c], 0);
      }
    }
  });
});
