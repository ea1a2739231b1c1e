// The fused rotary kernel (F.rotary) against the op-by-op form it replaced in the Llama family:
// x·cos + rotate_half(x)·sin with slices, neg, concat, mul and add. Same bits on the CPU backends,
// forward and backward (each product is rounded and then added, as the separate ops do), and a
// Llama's logits unchanged by the position-major layout the attention now rotates in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../src/backends/index.js';
import { F, Rng, Tensor } from '../src/tensor/index.js';
import { LlamaRotaryEmbedding, llamaConfigFromJson } from '../src/models/index.js';

/** The op-by-op reference (the code the model ran before the fused kernel). */
function rotaryByOps(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const d = x.shape[x.ndim - 1];
  const rotated = F.concat([F.neg(F.slice(x, -1, d / 2, d)), F.slice(x, -1, 0, d / 2)], -1);
  return F.add(F.mul(x, cos), F.mul(rotated, sin));
}

test('rotary: the bits of the op-by-op form, forward and backward, on real rotary tables', () => {
  const config = llamaConfigFromJson({ model_type: 'llama', vocab_size: 10, hidden_size: 48, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 3, num_key_value_heads: 1, rope_theta: 10000 }, 'test config');
  const [b, t, heads, dim] = [2, 7, 3, 16];
  const positions = Int32Array.from({ length: b * t }, (_, i) => 1000 + 13 * i);
  const [cos, sin] = new LlamaRotaryEmbedding(config).forward(positions, b, t); // (B, 1, T, D)
  const rng = new Rng(5);
  const xData = rng.fillNormal(new Float32Array(b * t * heads * dim), 0, 3);
  const gData = rng.fillNormal(new Float32Array(b * t * heads * dim), 0, 1);
  // the op-by-op form on (B, heads, T, D), as the attention ran it; the kernel on (B, T, heads, D)
  const xRef = F.permute(Tensor.fromArray(xData, [b, t, heads, dim]), [0, 2, 1, 3]).detach();
  xRef.requiresGrad = true;
  const ref = rotaryByOps(xRef, cos, sin);
  ref.backward(F.permute(Tensor.fromArray(gData, [b, t, heads, dim]), [0, 2, 1, 3]).detach());
  const x = Tensor.fromArray(xData, [b, t, heads, dim], true);
  const got = F.rotary(x, cos, sin);
  got.backward(Tensor.fromArray(gData, [b, t, heads, dim]));
  assert.deepEqual([...F.permute(got, [0, 2, 1, 3]).toFloat32Array()], [...ref.toFloat32Array()]);
  assert.deepEqual([...F.permute(x.grad!, [0, 2, 1, 3]).toFloat32Array()], [...xRef.grad!.toFloat32Array()]);
  assert.ok(got.toFloat32Array().some((v, i) => v !== xData[i]), 'positions past 0 rotate');
});

test('rotary refuses in one line: an odd head dim, tables of the wrong size, a table that wants a gradient', () => {
  const x = Tensor.zeros([2, 3, 4]);
  const t = Tensor.zeros([2, 4]);
  assert.throws(() => F.rotary(Tensor.zeros([2, 3, 5]), Tensor.zeros([2, 5]), Tensor.zeros([2, 5])), /^Error: rotary: the last dim must be even, got 5$/);
  assert.throws(() => F.rotary(x, Tensor.zeros([3, 4]), t), /^Error: rotary: cos \[3, 4\] does not hold 2 rows of 4$/);
  assert.throws(() => F.rotary(x, t, Tensor.zeros([2, 4], true)), /^Error: rotary: sin is a constant; no gradient flows to it$/);
  assert.throws(() => F.rotary(Tensor.zeros([4]), t, t), /^Error: rotary: x must be \(\.\.\., heads, dim\), got \[4\]$/);
});
