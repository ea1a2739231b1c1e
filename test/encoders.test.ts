import '../src/backends/index.js';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Rng, Tensor, manualSeed, noGrad } from '../src/tensor/index.js';
import { SafetensorsFile, loadCheckpointTensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import {
  BertForSequenceClassification, RobertaForSequenceClassification, ViTForImageClassification, bertConfigFromJson,
  loadPretrained, modelConfigJson, savePretrained, vitConfigFromJson, type LoadedModel,
} from '../src/models/index.js';
import { Linear } from '../src/nn/index.js';
import { getPeftModel, veraConfig } from '../src/peft/index.js';
import { assertVeraError, maxAbsDiff, withTmp } from './helpers.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/encoders/', import.meta.url));
const fixture = (name: string): string => path.join(FIXTURES, name);

const ref = SafetensorsFile.open(fixture('reference.safetensors'));
const ints = (name: string): Int32Array => Int32Array.from(ref.getFloat32(name), (v) => Math.round(v));

const BERT_SHAPE: [number, number] = [2, 7];
const bertIds = ints('bert_input_ids');
const bertMask = ref.getFloat32('bert_attention_mask');
const bertTypes = ints('bert_token_type_ids');
const ROBERTA_SHAPE: [number, number] = [2, 8];
const robertaIds = ints('roberta_input_ids');
const robertaMask = ref.getFloat32('roberta_attention_mask');
const pixels = (): Tensor => Tensor.fromArray(ref.getFloat32('vit_pixels'), [2, 1, 8, 8]);

/** Loads quietly, returning the notice lines too. */
function load(dir: string): { loaded: LoadedModel; notices: string[] } {
  const notices: string[] = [];
  const loaded = loadPretrained(dir, { log: (line) => notices.push(line) });
  return { loaded, notices };
}

function bert(dir: string): BertForSequenceClassification {
  const { loaded, notices } = load(dir);
  assert.equal(loaded.modelType, 'bert');
  assert.deepEqual(notices, []);
  return loaded.model as BertForSequenceClassification;
}



const bertLogits = (m: BertForSequenceClassification, opts = { attentionMask: bertMask, tokenTypeIds: bertTypes }): Float32Array =>
  noGrad(() => m.forward(bertIds, BERT_SHAPE, opts)).toFloat32Array();

/** A copy of fixture `name` in `dir`, its tensors and config.json edited. */
function writeVariant(dir: string, name: string, editTensors: (t: Record<string, TensorToWrite>) => void, editConfig: (c: Record<string, unknown>) => void = () => {}): void {
  const ckpt = loadCheckpointTensors(fixture(name));
  const tensors: Record<string, TensorToWrite> = {};
  for (const key of ckpt.names) {
    const t = ckpt.get(key);
    tensors[key] = { data: t.data(), shape: t.shape };
  }
  editTensors(tensors);
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  const config = JSON.parse(fs.readFileSync(path.join(fixture(name), 'config.json'), 'utf8')) as Record<string, unknown>;
  editConfig(config);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
}

describe('BERT against PyTorch', () => {
  const model = bert(fixture('bert-tiny-cls'));

  test('classification logits with a padding mask and token types match within 1e-4', () => {
    assert.deepEqual(model.config.id2label, ['neg', 'neu', 'pos']);
    assert.equal(model.config.numLabels, 3);
    assert.ok(maxAbsDiff(bertLogits(model), ref.getFloat32('bert_logits')) < 1e-4);
  });

  test('padding positions do not change the logits of a padded row', () => {
    const ids = bertIds.slice();
    for (let t = 4; t < 7; t++) ids[7 + t] = 17; // other tokens under the mask
    const logits = noGrad(() => model.forward(ids, BERT_SHAPE, { attentionMask: bertMask, tokenTypeIds: bertTypes })).toFloat32Array();
    assert.ok(maxAbsDiff(logits, ref.getFloat32('bert_logits')) < 1e-4);
  });

  test('regression head (num_labels 1, gelu_new) matches within 1e-4 and its MSE loss matches', () => {
    const reg = bert(fixture('bert-tiny-reg'));
    assert.equal(reg.config.numLabels, 1);
    const logits = noGrad(() => reg.forward(bertIds, BERT_SHAPE, { attentionMask: bertMask }));
    assert.deepEqual(logits.shape, [2, 1]);
    assert.ok(maxAbsDiff(logits.toFloat32Array(), ref.getFloat32('bert_reg_logits')) < 1e-4);
    const loss = reg.loss(logits, ref.getFloat32('bert_reg_labels')).item();
    assert.ok(Math.abs(loss - ref.getFloat32('bert_reg_loss_mse')[0]) < 1e-4);
  });

  test('cross-entropy (integer labels) and BCE-with-logits (float labels) losses match', () => {
    const logits = noGrad(() => model.forward(bertIds, BERT_SHAPE, { attentionMask: bertMask, tokenTypeIds: bertTypes }));
    const ce = model.loss(logits, ints('bert_ce_labels')).item();
    assert.ok(Math.abs(ce - ref.getFloat32('bert_loss_ce')[0]) < 1e-4, `ce ${ce}`);
    const bce = model.loss(logits, ref.getFloat32('bert_bce_labels')).item();
    assert.ok(Math.abs(bce - ref.getFloat32('bert_loss_bce')[0]) < 1e-4, `bce ${bce}`);
    assertVeraError(() => model.loss(logits, Int32Array.from([3, 0])), ['label 3', '[0, 3)']);
  });

  test('F16 checkpoint matches its own float64 reference within 1e-4', () => {
    assert.ok(maxAbsDiff(bertLogits(bert(fixture('bert-tiny-f16'))), ref.getFloat32('bert_f16_logits')) < 1e-4);
  });

  test('sharded checkpoint without the "bert." prefix gives the same logits', () => {
    assert.ok(maxAbsDiff(bertLogits(bert(fixture('bert-tiny-sharded'))), ref.getFloat32('bert_logits')) < 1e-4);
  });

  test('TF-era LayerNorm.gamma/beta names load as weight/bias and are written back as stored', () => {
    withTmp((dir) => {
      writeVariant(dir, 'bert-tiny-cls', (t) => {
        for (const key of Object.keys(t)) {
          const renamed = key.replace(/LayerNorm\.weight$/, 'LayerNorm.gamma').replace(/LayerNorm\.bias$/, 'LayerNorm.beta');
          if (renamed === key) continue;
          t[renamed] = t[key];
          delete t[key];
        }
      });
      const { loaded } = load(dir);
      assert.ok(maxAbsDiff(bertLogits(loaded.model as BertForSequenceClassification), ref.getFloat32('bert_logits')) < 1e-4);
      assert.equal(loaded.checkpoint.params.get('bert.embeddings.LayerNorm.weight')!.key, 'bert.embeddings.LayerNorm.gamma');
      withTmp((out) => {
        savePretrained(out, loaded.model, loaded.configJson, loaded.checkpoint);
        assert.ok(loadCheckpointTensors(out).names.includes('bert.encoder.layer.1.output.LayerNorm.beta'));
      });
    });
  });

  test('bad inputs give one-line errors', () => {
    assertVeraError(() => model.forward(bertIds, [2, 6]), ['BERT input', '14 input ids']);
    assertVeraError(() => model.forward(Int32Array.from(bertIds, () => 30), BERT_SHAPE), ['token id 30', 'vocab_size']);
    assertVeraError(() => model.forward(bertIds, BERT_SHAPE, { tokenTypeIds: Int32Array.from(bertTypes, () => 2) }), ['token type id 2', 'type_vocab_size']);
    assertVeraError(() => model.forward(new Int32Array(17), [1, 17]), ['position 16', 'max_position_embeddings (16)']);
  });
});

describe('RoBERTa against PyTorch', () => {
  const { loaded, notices } = load(fixture('roberta-tiny-cls'));
  const model = loaded.model as RobertaForSequenceClassification;

  test('logits with padding (positions from padding_idx + 1) match within 1e-4', () => {
    assert.equal(loaded.modelType, 'roberta');
    assert.deepEqual(notices, []);
    const logits = noGrad(() => model.forward(robertaIds, ROBERTA_SHAPE, { attentionMask: robertaMask }));
    assert.deepEqual(logits.shape, [2, 2]);
    assert.ok(maxAbsDiff(logits.toFloat32Array(), ref.getFloat32('roberta_logits')) < 1e-4);
  });

  test('position ids count non-padding tokens from padding_idx + 1', () => {
    assert.deepEqual([...model.roberta.embeddings.positionIds(robertaIds, ROBERTA_SHAPE)], [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5, 1, 1, 1, 1]);
  });

  test('has no pooler and one token type', () => {
    assert.equal(model.roberta.pooler, null);
    assert.ok(![...model.stateDict().keys()].some((k) => k.includes('pooler')));
    assert.deepEqual(model.roberta.embeddings.token_type_embeddings.weight.shape, [1, 16]);
  });
});

describe('ViT against PyTorch', () => {
  const { loaded, notices } = load(fixture('vit-tiny-cls'));
  const model = loaded.model as ViTForImageClassification;

  test('logits of 1-channel 8×8 images match within 1e-4', () => {
    assert.equal(loaded.modelType, 'vit');
    assert.deepEqual(notices, []);
    const logits = noGrad(() => model.forward(pixels()));
    assert.deepEqual(logits.shape, [2, 10]);
    assert.ok(maxAbsDiff(logits.toFloat32Array(), ref.getFloat32('vit_logits')) < 1e-4);
  });

  test('images of another size or channel count are refused', () => {
    assertVeraError(() => model.forward(Tensor.zeros([1, 3, 8, 8])), ['ViT input', '(N, 1, 8, 8)', '[1, 3, 8, 8]']);
    assertVeraError(() => model.forward(Tensor.zeros([1, 1, 12, 12])), ['image_size']);
  });
});

describe('newly initialized heads on base checkpoints', () => {
  test('BERT pretraining checkpoint: classifier initialized with a notice, cls.* skipped, the rest exact', () => {
    manualSeed(7);
    const { loaded, notices } = load(fixture('bert-tiny-base'));
    const model = loaded.model as BertForSequenceClassification;
    assert.equal(notices.length, 1);
    assert.match(notices[0], /newly initialized classifier\.weight, classifier\.bias: not in .*bert-tiny-base/);
    const stored = loadCheckpointTensors(fixture('bert-tiny-base'));
    const state = model.stateDict();
    for (const key of stored.names) {
      if (key.startsWith('cls.') || key.endsWith('position_ids')) {
        assert.ok(!state.has(key));
        continue;
      }
      assert.deepEqual(state.get(key)!.toFloat32Array(), stored.get(key).data(), key);
    }
    const classifier = model.classifier as Linear;
    assert.deepEqual([...classifier.bias!.toFloat32Array()], [0, 0]);
    const w = classifier.weight.toFloat32Array();
    const std = Math.sqrt(w.reduce((s, v) => s + v * v, 0) / w.length);
    assert.ok(std > 0.01 && std < 0.04, `classifier std ${std} should be near initializer_range 0.02`);
    assert.ok(loaded.checkpoint.extras.some((e) => e.key === 'cls.predictions.bias'));
  });

  test('RoBERTa masked-LM checkpoint: classifier.dense/out_proj initialized, lm_head and pooler skipped', () => {
    const { loaded, notices } = load(fixture('roberta-tiny-base'));
    assert.equal(notices.length, 1);
    for (const p of ['classifier.dense.weight', 'classifier.dense.bias', 'classifier.out_proj.weight', 'classifier.out_proj.bias']) assert.ok(notices[0].includes(p), p);
    assert.ok(!notices[0].includes('roberta.'));
    const logits = noGrad(() => (loaded.model as RobertaForSequenceClassification).forward(robertaIds, ROBERTA_SHAPE, { attentionMask: robertaMask }));
    assert.ok(logits.toFloat32Array().every(Number.isFinite));
  });

  test('ViT base checkpoint (pooler, no classifier) and a head for another label count', () => {
    const base = load(fixture('vit-tiny-base'));
    assert.match(base.notices[0], /newly initialized classifier\.weight, classifier\.bias: not in/);
    withTmp((dir) => {
      writeVariant(dir, 'vit-tiny-cls', () => {}, (c) => {
        c['id2label'] = { 0: 'a', 1: 'b', 2: 'c', 3: 'd' };
        delete c['label2id'];
      });
      const { loaded, notices } = load(dir);
      assert.equal(notices.length, 1);
      assert.ok(notices[0].includes('classifier.weight (stored there as [10, 16])'), notices[0]);
      assert.ok(notices[0].includes('classifier.bias (stored there as [10])'), notices[0]);
      const model = loaded.model as ViTForImageClassification;
      assert.deepEqual(noGrad(() => model.forward(pixels())).shape, [2, 4]);
      // saved back under the same keys with the new shapes, and loaded again without a notice
      withTmp((out) => {
        savePretrained(out, model, modelConfigJson(model), loaded.checkpoint);
        assert.deepEqual(load(out).notices, []);
      });
    });
  });

  test('missing body weights are still a one-line error', () => {
    withTmp((dir) => {
      writeVariant(dir, 'bert-tiny-base', (t) => delete t['bert.encoder.layer.1.output.dense.weight']);
      assertVeraError(() => load(dir), ['missing tensor "bert.encoder.layer.1.output.dense.weight"', 'model.safetensors']);
    });
  });
});

describe('encoder configs', () => {
  const cfgFile = (name: string): Record<string, unknown> => JSON.parse(fs.readFileSync(path.join(fixture(name), 'config.json'), 'utf8')) as Record<string, unknown>;

  test('bad fields give one-line errors naming the file and the field', () => {
    const c = cfgFile('bert-tiny-cls');
    assertVeraError(() => bertConfigFromJson({ ...c, hidden_size: 15 }, 'x/config.json'), ['x/config.json', 'field "hidden_size"', 'divisible']);
    assertVeraError(() => bertConfigFromJson({ ...c, hidden_act: 'mish' }, 'x/config.json'), ['field "hidden_act"']);
    assertVeraError(() => bertConfigFromJson({ ...c, position_embedding_type: 'relative_key' }, 'x/config.json'), ['field "position_embedding_type"']);
    assertVeraError(() => bertConfigFromJson({ ...c, num_labels: 2 }, 'x/config.json'), ['field "num_labels"', '3 labels of "id2label"']);
    assertVeraError(() => bertConfigFromJson({ ...c, problem_type: 'ranking' }, 'x/config.json'), ['field "problem_type"']);
    assertVeraError(() => bertConfigFromJson({ ...c, id2label: { 1: 'a' } }, 'x/config.json'), ['field "id2label"']);
    assertVeraError(() => bertConfigFromJson({ ...c, model_type: 'roberta', pad_token_id: 15 }, 'x/config.json', 'roberta'), ['field "max_position_embeddings"']);
    const v = cfgFile('vit-tiny-cls');
    assertVeraError(() => vitConfigFromJson({ ...v, patch_size: 3 }, 'v/config.json'), ['v/config.json', 'field "image_size"', 'multiple of "patch_size"']);
    withTmp((dir) => {
      writeVariant(dir, 'bert-tiny-cls', () => {}, (cfg) => (cfg['num_hidden_layers'] = 0));
      assertVeraError(() => load(dir), [path.join(dir, 'config.json'), 'field "num_hidden_layers"']);
    });
  });

  test('num_labels alone names LABEL_i; neither field means 2 labels', () => {
    const c = cfgFile('bert-tiny-cls');
    delete c['id2label'];
    delete c['label2id'];
    assert.deepEqual(bertConfigFromJson({ ...c, num_labels: 4 }, 'f').id2label, ['LABEL_0', 'LABEL_1', 'LABEL_2', 'LABEL_3']);
    assert.equal(bertConfigFromJson(c, 'f').numLabels, 2);
  });

  test('a freshly built model round-trips through its own config.json', () => {
    const c = bertConfigFromJson(cfgFile('bert-tiny-cls'), 'f');
    const m = new BertForSequenceClassification(c);
    assert.deepEqual(bertConfigFromJson(modelConfigJson(m), 'g'), c);
  });

  test('fresh models follow _init_weights: N(0, 0.02) matrices, LayerNorm 1/0, padding rows zero', () => {
    const m = new RobertaForSequenceClassification(bertConfigFromJson(cfgFile('roberta-tiny-cls'), 'f', 'roberta'), { rng: new Rng(1) });
    const row = (t: Tensor, i: number): number[] => [...t.toFloat32Array().slice(i * 16, (i + 1) * 16)];
    const zeros = new Array<number>(16).fill(0);
    assert.deepEqual(row(m.roberta.embeddings.word_embeddings.weight, 1), zeros); // pad_token_id 1
    assert.deepEqual(row(m.roberta.embeddings.position_embeddings.weight, 1), zeros);
    assert.notDeepEqual(row(m.roberta.embeddings.word_embeddings.weight, 2), zeros);
    assert.deepEqual([...m.roberta.embeddings.LayerNorm.weight.toFloat32Array()], new Array<number>(16).fill(1));
    const w = (m.classifier.out_proj as Linear).weight.toFloat32Array();
    const std = Math.sqrt(w.reduce((s, v) => s + v * v, 0) / w.length);
    assert.ok(std > 0.01 && std < 0.04, `std ${std}`);
  });
});

describe('savePretrained → loadPretrained', () => {
  for (const name of ['bert-tiny-cls', 'bert-tiny-f16', 'bert-tiny-sharded', 'roberta-tiny-base', 'vit-tiny-cls']) {
    test(`${name}: same tensors, names and dtypes`, () => {
      const first = load(fixture(name)).loaded;
      withTmp((dir) => {
        savePretrained(dir, first.model, first.configJson, first.checkpoint);
        const again = load(dir);
        assert.deepEqual(again.notices, []);
        const a = first.model.stateDict();
        const b = again.loaded.model.stateDict();
        assert.deepEqual([...a.keys()], [...b.keys()]);
        for (const [k, t] of a) assert.deepEqual(b.get(k)!.toFloat32Array(), t.toFloat32Array(), k);
        const entries = (l: LoadedModel): string[] => [...l.checkpoint.params.values()].map((e) => `${e.key}:${e.dtype}`).sort();
        assert.deepEqual(entries(again.loaded), entries(first));
      });
    });
  }
});

describe('training mode', () => {
  test('the eager attention path (live attention dropout) equals the fused kernel when nothing is dropped', () => {
    const c = JSON.parse(fs.readFileSync(path.join(fixture('bert-tiny-cls'), 'config.json'), 'utf8')) as Record<string, unknown>;
    const cfg = bertConfigFromJson({ ...c, hidden_dropout_prob: 0, attention_probs_dropout_prob: 1e-12 }, 'f');
    const model = new BertForSequenceClassification(cfg, { rng: new Rng(5) });
    const fused = bertLogits(model.eval());
    const eager = bertLogits(model.train());
    assert.ok(maxAbsDiff(eager, fused) < 1e-5);
    assert.ok(maxAbsDiff(eager, new Float32Array(eager.length)) > 1e-3, 'logits are not trivially zero');
    // and so are the gradients of every parameter
    const grads = (training: boolean): Float32Array[] => {
      model.train(training);
      model.zeroGrad();
      model.loss(model.forward(bertIds, BERT_SHAPE, { attentionMask: bertMask, tokenTypeIds: bertTypes }), Int32Array.from([2, 1])).backward();
      return model.parameters().map((t) => t.grad?.toFloat32Array() ?? new Float32Array(t.size));
    };
    const fusedGrads = grads(false);
    const eagerGrads = grads(true);
    const query = model.parameters().indexOf(model.bert.encoder.layer.items[0].attention.self.query.ownParameters()[0][1]);
    assert.ok(fusedGrads[query].some((g) => g !== 0), 'the query weight gets a gradient');
    fusedGrads.forEach((g, i) => assert.ok(maxAbsDiff(eagerGrads[i], g) < 1e-5, `parameter ${i}`));
  });
});

describe('VeRA on BERT query/value', () => {
  test('attaches, trains only λ and the classifier (modules_to_save), and changes the logits', () => {
    manualSeed(3);
    const { loaded } = load(fixture('bert-tiny-base'));
    const model = loaded.model as BertForSequenceClassification;
    const peft = getPeftModel(model, veraConfig({ targetModules: ['query', 'value'], r: 4, modulesToSave: ['classifier'] }));
    assert.deepEqual(peft.getNbTrainableParameters().trainable, 2 * 2 * (4 + 16) + (16 * 2 + 2)); // λd (r) + λb (out) per layer, and the classifier
    model.train();
    const trainable = model.namedParameters().filter(([, t]) => t.requiresGrad).map(([p]) => p);
    assert.ok(trainable.length > 0);
    for (const p of trainable) assert.match(p, /vera_lambda_[bd]|^classifier\./, p);
    assert.equal(trainable.filter((p) => /vera_lambda/.test(p)).length, 2 * 2 * 2); // 2 layers × (query, value) × (λb, λd)
    const before = bertLogits(model);
    const labels = Int32Array.from([1, 0]);
    const loss = model.loss(model.forward(bertIds, BERT_SHAPE, { attentionMask: bertMask, tokenTypeIds: bertTypes }), labels);
    loss.backward();
    for (const [p, t] of model.namedParameters()) {
      if (t.requiresGrad) assert.ok(t.grad !== null, `${p} has a gradient`);
      else assert.equal(t.grad, null, `frozen ${p} has no gradient buffer`);
    }
    const lambdaB = model.namedParameters().find(([p]) => /query\.vera_lambda_b/.test(p))!;
    assert.ok(lambdaB[1].grad!.toFloat32Array().some((v) => v !== 0), 'λb of a query layer gets a nonzero gradient');
    for (const [, t] of model.namedParameters()) {
      if (!t.requiresGrad || !t.grad) continue;
      const g = t.grad.toFloat32Array();
      t.copyFrom(Float32Array.from(t.toFloat32Array(), (v, i) => v - 0.5 * g[i]));
    }
    model.eval();
    const trained = bertLogits(model);
    assert.ok(maxAbsDiff(trained, before) > 1e-4, 'one step changes the logits');
    // merged into the weights and written back under the checkpoint's keys, the model gives the same logits
    const merged = peft.mergeAndUnload();
    assert.ok(maxAbsDiff(bertLogits(merged), trained) < 1e-5);
    withTmp((dir) => {
      savePretrained(dir, merged, loaded.configJson, loaded.checkpoint);
      const again = load(dir);
      assert.deepEqual(again.notices, []);
      assert.ok(maxAbsDiff(bertLogits(again.loaded.model as BertForSequenceClassification), trained) < 1e-5);
    });
  });
});

describe('VeRA on RoBERTa and ViT query/value', () => {
  // RoBERTa's head is two linear layers under `classifier`: as in PEFT, modules_to_save ['classifier']
  // copies the whole module, so both train (and naming them one by one does the same).
  const cases: [string, string[], (m: LoadedModel['model']) => Tensor][] = [
    ['roberta-tiny-base', ['classifier'], (m) => (m as RobertaForSequenceClassification).forward(robertaIds, ROBERTA_SHAPE, { attentionMask: robertaMask })],
    ['roberta-tiny-base', ['classifier.dense', 'classifier.out_proj'], (m) => (m as RobertaForSequenceClassification).forward(robertaIds, ROBERTA_SHAPE, { attentionMask: robertaMask })],
    ['vit-tiny-base', ['classifier'], (m) => (m as ViTForImageClassification).forward(pixels())],
  ];
  for (const [name, modulesToSave, forward] of cases) {
    test(`${name} with modules_to_save [${modulesToSave.join(', ')}]: gradients reach only λd, λb and the classifier copy`, () => {
      const { loaded } = load(fixture(name));
      const model = loaded.model as RobertaForSequenceClassification | ViTForImageClassification;
      getPeftModel(model, veraConfig({ targetModules: ['query', 'value'], r: 4, modulesToSave }));
      model.train();
      model.loss(forward(model), Int32Array.from([1, 0])).backward();
      let lambdas = 0;
      let classifierParams = 0;
      for (const [p, t] of model.namedParameters()) {
        if (/vera_lambda_[bd]/.test(p)) lambdas++;
        if (/^classifier\./.test(p)) classifierParams++;
        if (/vera_lambda_[bd]|^classifier\./.test(p)) assert.ok(t.requiresGrad && t.grad !== null, `${p} trains`);
        else assert.ok(!t.requiresGrad && t.grad === null, `${p} is frozen without a gradient buffer`);
      }
      assert.equal(lambdas, 2 * 2 * 2);
      assert.equal(classifierParams, name.startsWith('roberta') ? 4 : 2);
    });
  }
});
