// The fused, chunked LM head + cross-entropy (F.linearCrossEntropy, causalLmForwardLoss) against
// the unfused path it replaces (linear → logits → crossEntropy), on the active backend.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { F, Rng, Tensor, noGrad } from '../src/tensor/index.js';
import { GPT2LMHeadModel, causalLmForwardLoss, causalLmLoss, gpt2ConfigFromJson, llamaFromConfig } from '../src/models/index.js';
import { getPeftModel, loraConfig, veraConfig } from '../src/peft/index.js';
import { maxAbsDiff } from './helpers.js';

// float32 rounding: the chunks' GEMMs may block rows differently from one whole GEMM
const LOSS_TOL = 1e-5;
const GRAD_TOL = 1e-6;

function randn(shape: number[], rng: Rng, scale = 1, requiresGrad = false): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.fromArray(Float32Array.from({ length: n }, () => rng.normal() * scale), shape, requiresGrad);
}

/** loss·gScale and x's gradient, by `loss(x)`. */
function lossAndGrad(x: Tensor, loss: (x: Tensor) => Tensor, gScale: number): { loss: number; grad: Float32Array } {
  x.zeroGrad();
  const l = loss(x);
  F.scale(l, gScale).backward();
  return { loss: l.item(), grad: x.grad!.toFloat32Array() };
}

test('linearCrossEntropy: loss and x gradient equal linear + crossEntropy, for every chunking', () => {
  const rng = new Rng(3);
  const [batch, seq, d, vocab] = [2, 7, 16, 53];
  const w = randn([vocab, d], rng, 0.3);
  const x = randn([batch, seq, d], rng, 1, true);
  const targets = Int32Array.from({ length: batch * seq }, (_, i) => (i % 5 === 4 ? -100 : rng.int(vocab)));
  // an upstream gradient ≠ 1: backward scales the saved unit gradient by it
  const ref = lossAndGrad(x, (t) => F.crossEntropy(F.linear(t, w, null), targets), 2.5);
  for (const chunkRows of [1, 3, 5, 14, 100, undefined]) {
    const got = lossAndGrad(x, (t) => F.linearCrossEntropy(t, w, targets, { chunkRows }), 2.5);
    assert.ok(Math.abs(got.loss - ref.loss) <= LOSS_TOL, `chunkRows ${chunkRows}: loss ${got.loss} vs ${ref.loss}`);
    assert.ok(maxAbsDiff(got.grad, ref.grad) <= GRAD_TOL, `chunkRows ${chunkRows}: gradient off by ${maxAbsDiff(got.grad, ref.grad)}`);
  }
});

test('linearCrossEntropy: ignoreIndex, all rows ignored (NaN loss, zero gradient), no tape under noGrad', () => {
  const rng = new Rng(4);
  const w = randn([11, 8], rng, 0.5);
  const x = randn([6, 8], rng, 1, true);
  const targets = Int32Array.from([3, 7, 7, -1, 0, 10]);
  const ref = lossAndGrad(x, (t) => F.crossEntropy(F.linear(t, w, null), targets, { ignoreIndex: -1 }), 1);
  const got = lossAndGrad(x, (t) => F.linearCrossEntropy(t, w, targets, { ignoreIndex: -1, chunkRows: 4 }), 1);
  assert.ok(Math.abs(got.loss - ref.loss) <= LOSS_TOL);
  assert.ok(maxAbsDiff(got.grad, ref.grad) <= GRAD_TOL);
  assert.deepEqual([...got.grad.subarray(3 * 8, 4 * 8)], new Array(8).fill(0), 'the ignored row gets no gradient');

  const none = lossAndGrad(x, (t) => F.linearCrossEntropy(t, w, new Int32Array(6).fill(-100)), 1);
  assert.ok(Number.isNaN(none.loss));
  assert.ok(none.grad.every((v) => v === 0));

  const inference = noGrad(() => F.linearCrossEntropy(x, w, targets, { ignoreIndex: -1 }));
  assert.equal(inference.gradFn, null);
  assert.ok(Math.abs(inference.item() - ref.loss) <= LOSS_TOL);
});

test('linearCrossEntropy: refuses a trainable weight, bad targets and shapes in one line', () => {
  const rng = new Rng(5);
  const x = randn([4, 8], rng, 1, true);
  const w = randn([11, 8], rng);
  assert.throws(() => F.linearCrossEntropy(x, randn([11, 8], rng, 1, true), new Int32Array(4)), /weight takes no gradient/);
  assert.throws(() => F.linearCrossEntropy(x, w, Int32Array.from([0, 1, 11, 2])), /target 11 out of range \[0, 11\)/);
  assert.throws(() => F.linearCrossEntropy(x, w, new Int32Array(3)), /3 targets for 4 rows/);
  assert.throws(() => F.linearCrossEntropy(x, randn([11, 9], rng), new Int32Array(4)), /is not \(vocab, 8\)/);
  assert.throws(() => F.linearCrossEntropy(x, w, new Int32Array(4), { chunkRows: 0 }), /chunkRows must be a positive integer/);
});

const TINY_GPT2 = { model_type: 'gpt2', n_layer: 2, n_embd: 32, n_head: 4, vocab_size: 97, n_positions: 32, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 };
const TINY_LLAMA = {
  model_type: 'llama', vocab_size: 101, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,
  num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, tie_word_embeddings: false,
};

interface Run { loss: number; grads: Float32Array[] }

/** One training step's loss and the trainable tensors' gradients. */
function step(trainable: Tensor[], loss: () => Tensor): Run {
  for (const t of trainable) t.zeroGrad();
  const l = loss();
  l.backward();
  return { loss: l.item(), grads: trainable.map((t) => t.grad!.toFloat32Array()) };
}

function assertSameRun(got: Run, ref: Run, what: string): void {
  assert.ok(Math.abs(got.loss - ref.loss) <= LOSS_TOL, `${what}: loss ${got.loss} vs ${ref.loss}`);
  got.grads.forEach((g, i) => assert.ok(maxAbsDiff(g, ref.grads[i]) <= GRAD_TOL, `${what}: gradient ${i} off by ${maxAbsDiff(g, ref.grads[i])}`));
}

for (const [family, method] of [['gpt2', 'vera'], ['gpt2', 'lora'], ['llama', 'lora']] as const) {
  test(`causalLmForwardLoss (${family}, ${method}, frozen head): same loss and adapter gradients as causalLmLoss(forward), with labels and a padding mask`, () => {
    const rng = new Rng(7);
    const base = family === 'gpt2' ? new GPT2LMHeadModel(gpt2ConfigFromJson(TINY_GPT2, 'config.json'), { rng }) : llamaFromConfig(TINY_LLAMA, 'config.json', { rng });
    const targetModules = family === 'gpt2' ? ['c_attn', 'c_fc'] : ['q_proj', 'v_proj'];
    const peft = getPeftModel(base, method === 'vera' ? veraConfig({ targetModules, r: 8, veraDropout: 0 }) : loraConfig({ targetModules, r: 4, loraAlpha: 8, loraDropout: 0 }));
    // LoRA's B starts at zero: move it so every adapter tensor gets a non-trivial gradient
    const trainable = peft.trainableParameters().map(([, t]) => t);
    for (const t of trainable) t.copyFrom(randn([...t.shape], rng, 0.1));
    const model = peft.model as GPT2LMHeadModel;
    const shape: [number, number] = [3, 9];
    const vocab = model.config.vocabSize;
    const inputIds = Int32Array.from({ length: 27 }, () => rng.int(vocab));
    const labels = Int32Array.from(inputIds, (v, i) => (i % 9 < 3 ? -100 : v));
    const attentionMask = Float32Array.from({ length: 27 }, (_, i) => (i >= 24 ? 0 : 1));
    model.train();
    const ref = step(trainable, () => causalLmLoss(model.forward(inputIds, shape, { attentionMask }), inputIds, shape, -100, labels));
    const got = step(trainable, () => causalLmForwardLoss(model, inputIds, shape, { attentionMask, labels }));
    assert.ok(Number.isFinite(ref.loss));
    assertSameRun(got, ref, `${family} ${method}`);
    // the fused path ran: the loss came straight from the hidden states
    const loss = causalLmForwardLoss(model, inputIds, shape, { attentionMask, labels });
    assert.equal(loss.gradFn?.name, 'linearCrossEntropy');
  });
}

test('causalLmForwardLoss: a trainable head or label smoothing takes the unfused path (same numbers as causalLmLoss)', () => {
  const rng = new Rng(8);
  const model = new GPT2LMHeadModel(gpt2ConfigFromJson(TINY_GPT2, 'config.json'), { rng });
  const shape: [number, number] = [2, 8];
  const inputIds = Int32Array.from({ length: 16 }, () => rng.int(97));
  const params = model.parameters();
  const ref = step(params, () => causalLmLoss(model.forward(inputIds, shape), inputIds, shape));
  const full = causalLmForwardLoss(model, inputIds, shape);
  assert.equal(full.gradFn?.name, 'crossEntropy', 'the tied head trains here: no fusion');
  assertSameRun(step(params, () => causalLmForwardLoss(model, inputIds, shape)), ref, 'trainable head');
  for (const p of params) p.requiresGrad = false;
  const smoothed = noGrad(() => causalLmForwardLoss(model, inputIds, shape, { labelSmoothing: 0.1 }).item());
  const smoothedRef = noGrad(() => causalLmLoss(model.forward(inputIds, shape), inputIds, shape, -100, undefined, 0.1).item());
  assert.equal(smoothed, smoothedRef);
});
