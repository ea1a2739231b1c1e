import '../src/backends/index.js';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { F, Rng, Tensor, noGrad } from '../src/tensor/index.js';
import { Module } from '../src/nn/index.js';
import { SafetensorsFile, loadCheckpointTensors, writeSafetensors, float16ArrayToFloat32, float32ArrayToFloat16, type TensorToWrite } from '../src/io/safetensors.js';
import { GPT2LMHeadModel, causalLmLoss, gpt2ConfigFromJson, gpt2ConfigToJson } from '../src/models/gpt2.js';
import { loadPretrained, savePretrained, type LoadedModel } from '../src/models/auto.js';
import { assertVeraError, maxAbsDiff, withTmp } from './helpers.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/', import.meta.url));
const fixture = (name: string): string => path.join(FIXTURES, name);

const ref = SafetensorsFile.open(fixture('gpt2-logits.safetensors'));
const inputIds = Int32Array.from(ref.getFloat32('input_ids'), (v) => Math.round(v));
const refLogits = ref.getFloat32('logits'); // float64 reference, read as float32
const SHAPE: [number, number] = [2, 9];
const VOCAB = 101;

function gpt2(loaded: LoadedModel): GPT2LMHeadModel {
  assert.equal(loaded.modelType, 'gpt2');
  if (loaded.modelType !== 'gpt2') throw new Error('unreachable');
  return loaded.model;
}

const tiny = gpt2(loadPretrained(fixture('gpt2-tiny')));

function logitsOf(model: GPT2LMHeadModel, ids: Int32Array, shape: [number, number], opts = {}): Float32Array {
  return noGrad(() => model.forward(ids, shape, opts)).toFloat32Array();
}

/** A copy of gpt2-tiny in `dir` with its tensors and config.json edited. */
function writeVariant(dir: string, editTensors: (t: Record<string, TensorToWrite>) => void, editConfig: (c: Record<string, unknown>) => void = () => {}): void {
  const ckpt = loadCheckpointTensors(fixture('gpt2-tiny'));
  const tensors: Record<string, TensorToWrite> = {};
  for (const name of ckpt.names) {
    const t = ckpt.get(name);
    tensors[name] = { data: t.data(), shape: t.shape };
  }
  editTensors(tensors);
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  const config = JSON.parse(fs.readFileSync(fixture('gpt2-tiny/config.json'), 'utf8')) as Record<string, unknown>;
  editConfig(config);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
}

describe('GPT-2 forward against PyTorch', () => {
  test('logits of gpt2-tiny match the float64 reference within 1e-4', () => {
    const logits = noGrad(() => tiny.forward(inputIds, SHAPE));
    assert.deepEqual(logits.shape, [2, 9, VOCAB]);
    assert.ok(maxAbsDiff(logits.toFloat32Array(), refLogits) < 1e-4);
  });

  test('block 0 matches the reference within 1e-5', () => {
    const x = Tensor.fromArray(ref.getFloat32('block0_in'), [2, 9, 32]);
    const y = noGrad(() => tiny.transformer.h.items[0].forward(x));
    assert.deepEqual(y.shape, [2, 9, 32]);
    assert.ok(maxAbsDiff(y.toFloat32Array(), ref.getFloat32('block0_out')) < 1e-5);
  });

  test('causalLmLoss on perplexity.json gives the documented base nll', () => {
    const px = JSON.parse(fs.readFileSync(fixture('perplexity.json'), 'utf8')) as { token_ids: number[]; base: { nll: number; perplexity: number; tokens: number } };
    const ids = Int32Array.from(px.token_ids);
    const shape: [number, number] = [1, ids.length];
    const loss = noGrad(() => causalLmLoss(tiny.forward(ids, shape), ids, shape)).item();
    assert.ok(Math.abs(loss - px.base.nll) < 1e-4, `nll ${loss} vs ${px.base.nll}`);
    assert.ok(Math.abs(Math.exp(loss) / px.base.perplexity - 1) < 1e-3);
  });

  test('causalLmLoss skips ignored labels and averages the rest', () => {
    const logits = noGrad(() => tiny.forward(inputIds, SHAPE));
    const labels = inputIds.slice();
    labels.fill(-100, 5, 9); // row 0 keeps targets 1..4
    const loss = causalLmLoss(logits, inputIds, SHAPE, -100, labels).item();
    // by hand: row 0 positions 0..3 and row 1 positions 0..7
    const lsm = F.logSoftmax(logits).toFloat32Array();
    let sum = 0;
    let n = 0;
    for (let b = 0; b < 2; b++) {
      for (let t = 0; t < 8; t++) {
        const target = labels[b * 9 + t + 1];
        if (target === -100) continue;
        sum -= lsm[(b * 9 + t) * VOCAB + target];
        n++;
      }
    }
    assert.equal(n, 12);
    assert.ok(Math.abs(loss - sum / n) < 1e-5);
  });
});

describe('GPT-2 checkpoint variants', () => {
  test('prefixed checkpoint records keys and dtypes for every parameter', () => {
    const loaded = loadPretrained(fixture('gpt2-tiny'));
    const { params, extras, source } = loaded.checkpoint;
    assert.equal(params.size, 28);
    assert.equal(extras.length, 0);
    assert.ok(source.endsWith('model.safetensors'));
    assert.deepEqual(params.get('transformer.h.0.attn.c_attn.weight'), { key: 'transformer.h.0.attn.c_attn.weight', dtype: 'F32', shape: [32, 96] });
    assert.equal(loaded.model.training, false, 'loaded in eval mode');
  });

  test('sharded unprefixed checkpoint with attn.bias buffers loads to the same model', () => {
    const loaded = loadPretrained(fixture('gpt2-tiny-sharded'));
    const model = gpt2(loaded);
    assert.deepEqual(logitsOf(model, inputIds, SHAPE), logitsOf(tiny, inputIds, SHAPE));
    assert.equal(loaded.checkpoint.params.get('transformer.wte.weight')?.key, 'wte.weight');
    assert.deepEqual(loaded.checkpoint.extras.map((e) => [e.key, e.tiedTo, e.shape]), [
      ['h.0.attn.bias', null, [1, 1, 64, 64]],
      ['h.1.attn.bias', null, [1, 1, 64, 64]],
    ]);
    assert.ok(loaded.checkpoint.source.endsWith('model.safetensors.index.json'));
  });

  test('F16 checkpoint loads, computes in float32 with the F16 values', () => {
    const loaded = loadPretrained(fixture('gpt2-tiny-f16'));
    const f16 = gpt2(loaded);
    assert.equal(loaded.checkpoint.params.get('transformer.ln_f.bias')?.dtype, 'F16');
    const logits = logitsOf(f16, inputIds, SHAPE);
    assert.ok(maxAbsDiff(logits, refLogits) < 0.05);
    // the F32 model with every weight rounded to F16 computes exactly the same logits
    const rounded = gpt2(loadPretrained(fixture('gpt2-tiny')));
    for (const [, t] of rounded.namedParameters()) t.copyFrom(float16ArrayToFloat32(float32ArrayToFloat16(t.toFloat32Array())));
    assert.deepEqual(logits, logitsOf(rounded, inputIds, SHAPE));
  });

  test('untied lm_head.weight is used as its own head; missing it is an error', () => {
    withTmp((dir) => {
      const wte = loadCheckpointTensors(fixture('gpt2-tiny')).get('transformer.wte.weight');
      writeVariant(dir, (t) => (t['lm_head.weight'] = { data: wte.data(), shape: [VOCAB, 32] }), (c) => (c['tie_word_embeddings'] = false));
      const loaded = loadPretrained(dir);
      const model = gpt2(loaded);
      assert.notEqual(model.lm_head.ownParameters()[0][1], model.transformer.wte.weight);
      assert.equal(loaded.checkpoint.params.get('lm_head.weight')?.key, 'lm_head.weight');
      assert.ok(maxAbsDiff(logitsOf(model, inputIds, SHAPE), refLogits) < 1e-4);
    });
    withTmp((dir) => {
      writeVariant(dir, () => {}, (c) => (c['tie_word_embeddings'] = false));
      assertVeraError(() => loadPretrained(dir), ['model.safetensors', 'missing tensor "lm_head.weight"']);
    });
  });

  test('a tied lm_head.weight in the checkpoint is accepted and recorded as a duplicate', () => {
    withTmp((dir) => {
      const wte = loadCheckpointTensors(fixture('gpt2-tiny')).get('transformer.wte.weight');
      writeVariant(dir, (t) => (t['lm_head.weight'] = { data: wte.data(), shape: [VOCAB, 32] }));
      const loaded = loadPretrained(dir);
      assert.deepEqual(loaded.checkpoint.extras.map((e) => [e.key, e.tiedTo]), [['lm_head.weight', 'transformer.wte.weight']]);
      assert.ok(maxAbsDiff(logitsOf(gpt2(loaded), inputIds, SHAPE), refLogits) < 1e-4);
    });
  });
});

describe('GPT-2 saving', () => {
  /** Same keys, dtypes, shapes and bytes in `dir` as in the checkpoint at `orig`. */
  function assertSameCheckpoint(dir: string, orig: string): void {
    const a = loadCheckpointTensors(orig);
    const b = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
    assert.deepEqual([...b.keys()].sort(), a.names);
    for (const name of a.names) {
      const t = a.get(name);
      assert.deepEqual(b.info(name).shape, t.shape, name);
      assert.equal(b.info(name).dtype, t.dtype, name);
      assert.deepEqual(b.getFloat32(name), t.data(), name);
    }
    assert.deepEqual(b.metadata, { format: 'pt' });
  }

  for (const variant of ['gpt2-tiny', 'gpt2-tiny-sharded', 'gpt2-tiny-f16']) {
    test(`round trip of ${variant} keeps tensor names, shapes and dtypes`, () => {
      withTmp((tmp) => {
        const loaded = loadPretrained(fixture(variant));
        const out = path.join(tmp, 'out');
        savePretrained(out, loaded.model, loaded.configJson, loaded.checkpoint);
        assertSameCheckpoint(out, fixture(variant));
        assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')), loaded.configJson);
        assert.deepEqual(logitsOf(gpt2(loadPretrained(out)), inputIds, SHAPE), logitsOf(gpt2(loaded), inputIds, SHAPE));
      });
    });
  }

  test('saving without a key map writes F32 under parameter paths, tied head once', () => {
    withTmp((tmp) => {
      savePretrained(tmp, tiny, gpt2ConfigToJson(tiny.config));
      const st = SafetensorsFile.open(path.join(tmp, 'model.safetensors'));
      assert.equal(st.keys().length, 28);
      assert.ok(!st.has('lm_head.weight'));
      assert.ok(st.keys().every((k) => st.info(k).dtype === 'F32' && k.startsWith('transformer.')));
      assert.deepEqual(logitsOf(gpt2(loadPretrained(tmp)), inputIds, SHAPE), logitsOf(tiny, inputIds, SHAPE));
    });
  });
});

describe('GPT-2 attention mask and positions', () => {
  test('right padding leaves the tokens\' logits unchanged', () => {
    const ids = inputIds.slice();
    const mask = new Float32Array(18).fill(1);
    for (let t = 6; t < 9; t++) {
      ids[9 + t] = 0; // pad id
      mask[9 + t] = 0;
    }
    const logits = logitsOf(tiny, ids, SHAPE, { attentionMask: mask });
    assert.ok(maxAbsDiff(logits.subarray(0, 9 * VOCAB), refLogits.subarray(0, 9 * VOCAB)) < 1e-4);
    assert.ok(maxAbsDiff(logits.subarray(9 * VOCAB, 15 * VOCAB), refLogits.subarray(9 * VOCAB, 15 * VOCAB)) < 1e-4);
    assert.ok(logits.every(Number.isFinite));
  });

  test('left padding with position ids from the mask reproduces the unpadded run', () => {
    // row 1 holds 3 pads then the first 6 tokens of sequence 1
    const pad = 3;
    const ids = inputIds.slice();
    const mask = new Float32Array(18).fill(1);
    const positions = new Int32Array(18);
    for (let t = 0; t < 9; t++) {
      positions[t] = t;
      ids[9 + t] = t < pad ? 7 : inputIds[9 + t - pad];
      mask[9 + t] = t < pad ? 0 : 1;
      positions[9 + t] = Math.max(0, t - pad);
    }
    const logits = logitsOf(tiny, ids, SHAPE, { attentionMask: mask, positionIds: positions });
    assert.ok(logits.every(Number.isFinite));
    assert.ok(maxAbsDiff(logits.subarray(0, 9 * VOCAB), refLogits.subarray(0, 9 * VOCAB)) < 1e-4);
    assert.ok(maxAbsDiff(logits.subarray((9 + pad) * VOCAB, 18 * VOCAB), refLogits.subarray(9 * VOCAB, (18 - pad) * VOCAB)) < 1e-4);
  });

  test('a sequence longer than n_positions is rejected clearly', () => {
    const ids = new Int32Array(65);
    assertVeraError(() => tiny.forward(ids, [1, 65]), ['sequence length 65', 'n_positions (64)']);
    assertVeraError(() => tiny.forward(Int32Array.of(1, 2, 101), [1, 3]), ['token id 101', 'vocab_size']);
  });
});

describe('GPT-2 training path', () => {
  test('train mode with attention dropout (eager path) matches the fused path and trains the tied embedding', () => {
    withTmp((dir) => {
      // attn_pdrop so small that dropout keeps everything: only the eager/fused difference remains
      writeVariant(dir, () => {}, (c) => Object.assign(c, { attn_pdrop: 1e-12, resid_pdrop: 0, embd_pdrop: 0 }));
      const model = gpt2(loadPretrained(dir)).train();
      const mask = new Float32Array(18).fill(1);
      mask.fill(0, 9, 11); // left pads in row 1 (fully masked query rows must stay finite)
      const positions = Int32Array.from({ length: 18 }, (_, i) => (i < 9 ? i : Math.max(0, i - 11)));
      const logits = model.forward(inputIds, SHAPE, { attentionMask: mask, positionIds: positions });
      const fused = logitsOf(tiny, inputIds, SHAPE, { attentionMask: mask, positionIds: positions });
      const eager = logits.toFloat32Array();
      assert.ok(eager.every(Number.isFinite));
      // pad rows are don't-care (the kernels differ there); tokens must agree
      assert.ok(maxAbsDiff(eager.subarray(0, 9 * VOCAB), fused.subarray(0, 9 * VOCAB)) < 1e-5);
      assert.ok(maxAbsDiff(eager.subarray(11 * VOCAB), fused.subarray(11 * VOCAB)) < 1e-5);

      const labels = inputIds.slice();
      labels.fill(-100, 9, 12); // no prediction from a pad position
      causalLmLoss(logits, inputIds, SHAPE, -100, labels).backward();
      const wte = model.transformer.wte.weight;
      assert.equal(model.lm_head.ownParameters()[0][1], wte, 'lm_head is tied to wte');
      for (const [name, t] of model.namedParameters()) {
        assert.ok(t.grad !== null, `${name} has a gradient`);
        assert.ok(t.grad.toFloat32Array().some((v) => v !== 0), `${name} gradient is non-zero`);
        assert.ok(t.grad.toFloat32Array().every(Number.isFinite), `${name} gradient is finite`);
      }
    });
  });

  test('fused path gradients equal eager path gradients', () => {
    withTmp((dir) => {
      writeVariant(dir, () => {}, (c) => Object.assign(c, { attn_pdrop: 1e-12, resid_pdrop: 0, embd_pdrop: 0 }));
      const eager = gpt2(loadPretrained(dir)).train();
      const fused = gpt2(loadPretrained(dir)); // eval: no dropout, fused attention
      for (const m of [eager, fused]) causalLmLoss(m.forward(inputIds, SHAPE), inputIds, SHAPE).backward();
      const g = (m: GPT2LMHeadModel): Float32Array => m.transformer.h.items[0].attn.c_attn.ownParameters()[0][1].grad!.toFloat32Array();
      assert.ok(maxAbsDiff(g(eager), g(fused)) < 1e-5);
    });
  });
});

describe('GPT-2 structure', () => {
  test('module tree and parameter names are Hugging Face\'s', () => {
    const modules = [...tiny.namedModules()].map(([n]) => n);
    for (const name of ['transformer', 'transformer.wte', 'transformer.wpe', 'transformer.drop', 'transformer.h', 'transformer.h.0', 'transformer.h.0.ln_1',
      'transformer.h.0.attn', 'transformer.h.0.attn.c_attn', 'transformer.h.0.attn.c_proj', 'transformer.h.0.attn.attn_dropout',
      'transformer.h.0.attn.resid_dropout', 'transformer.h.0.ln_2', 'transformer.h.0.mlp', 'transformer.h.0.mlp.c_fc', 'transformer.h.0.mlp.c_proj',
      'transformer.h.0.mlp.act', 'transformer.h.0.mlp.dropout', 'transformer.h.1.mlp.c_proj', 'transformer.ln_f', 'lm_head']) {
      assert.ok(modules.includes(name), name);
    }
    const keys = loadCheckpointTensors(fixture('gpt2-tiny')).names;
    assert.deepEqual(tiny.namedParameters().map(([n]) => n).sort(), [...keys].sort());
    assert.equal(tiny.stateDict().get('lm_head.weight'), tiny.transformer.wte.weight);
  });

  test('a child replaced by path is the one forward calls', () => {
    const model = gpt2(loadPretrained(fixture('gpt2-tiny')));
    const original = model.getSubmodule('transformer.h.1.attn.c_attn') as Module & { forward(x: Tensor): Tensor };
    let calls = 0;
    class Wrapper extends Module {
      forward(x: Tensor): Tensor {
        calls++;
        return F.scale(original.forward(x), 1);
      }
    }
    model.setSubmodule('transformer.h.1.attn.c_attn', new Wrapper());
    assert.ok(maxAbsDiff(logitsOf(model, inputIds, SHAPE), refLogits) < 1e-4);
    assert.equal(calls, 1);
  });

  test('fresh models are seeded and follow HF init', () => {
    const config = gpt2ConfigFromJson({ n_embd: 16, n_head: 2, n_layer: 3, vocab_size: 50, n_positions: 8 }, 'config.json');
    assert.equal(config.activationFunction, 'gelu_new');
    assert.equal(config.tieWordEmbeddings, true);
    const a = new GPT2LMHeadModel(config, { rng: new Rng(3) });
    const b = new GPT2LMHeadModel(config, { rng: new Rng(3) });
    assert.deepEqual(a.namedParameters().map(([, t]) => t.toFloat32Array()), b.namedParameters().map(([, t]) => t.toFloat32Array()));
    const std = (t: Tensor): number => Math.sqrt(t.toFloat32Array().reduce((s, v) => s + v * v, 0) / t.size);
    const fc = a.transformer.h.items[0].mlp.c_fc.ownParameters()[0][1];
    const proj = a.transformer.h.items[0].mlp.c_proj.ownParameters()[0][1];
    assert.ok(Math.abs(std(fc) - 0.02) < 0.003);
    assert.ok(Math.abs(std(proj) - 0.02 / Math.sqrt(6)) < 0.002);
    const logits = noGrad(() => a.forward(Int32Array.of(1, 2, 3), [1, 3]));
    assert.deepEqual(logits.shape, [1, 3, 50]);
  });
});

describe('GPT-2 loading errors', () => {
  test('wrong shape names the file, key and both shapes', () => {
    withTmp((dir) => {
      writeVariant(dir, (t) => (t['transformer.h.0.attn.c_attn.weight'] = { data: new Float32Array(32 * 64), shape: [32, 64] }));
      assertVeraError(() => loadPretrained(dir), [path.join(dir, 'model.safetensors'), 'transformer.h.0.attn.c_attn.weight has shape [32, 64], expected [32, 96]']);
    });
  });

  test('missing tensor', () => {
    withTmp((dir) => {
      writeVariant(dir, (t) => delete t['transformer.h.1.mlp.c_fc.bias']);
      assertVeraError(() => loadPretrained(dir), ['model.safetensors', 'missing tensor "transformer.h.1.mlp.c_fc.bias"']);
    });
  });

  test('unexpected tensor', () => {
    withTmp((dir) => {
      writeVariant(dir, (t) => (t['transformer.h.0.attn.extra'] = { data: new Float32Array(2), shape: [2] }));
      assertVeraError(() => loadPretrained(dir), ['model.safetensors', 'unexpected tensor "transformer.h.0.attn.extra"']);
    });
  });

  test('bad config fields', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ n_embd: -32 }, 'field "n_embd" must be a positive integer'],
      [{ n_head: 5 }, 'field "n_embd" (32) must be divisible by "n_head" (5)'],
      [{ activation_function: 'gelu_newer' }, 'field "activation_function" must be one of'],
      [{ layer_norm_epsilon: 'small' }, 'field "layer_norm_epsilon" must be a positive number'],
      [{ attn_pdrop: 1 }, 'field "attn_pdrop" must be a number in [0, 1)'],
      [{ model_type: 'mamba' }, 'unsupported model_type "mamba"'],
      [{ model_type: undefined }, 'field "model_type" is required'],
    ];
    for (const [edit, message] of cases) {
      withTmp((dir) => {
        writeVariant(dir, () => {}, (c) => Object.assign(c, edit));
        assertVeraError(() => loadPretrained(dir), [path.join(dir, 'config.json'), message]);
      });
    }
  });

  test('missing folder or weights', () => {
    withTmp((dir) => {
      assertVeraError(() => loadPretrained(path.join(dir, 'nope')), ['config.json', 'cannot read model config']);
      fs.copyFileSync(fixture('gpt2-tiny/config.json'), path.join(dir, 'config.json'));
      assertVeraError(() => loadPretrained(dir), [dir, 'no model.safetensors']);
    });
  });
});
