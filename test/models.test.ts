import '../src/backends/index.js';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { F, Rng, Tensor, noGrad } from '../src/tensor/index.js';
import { Linear, Module } from '../src/nn/index.js';
import { VeraError } from '../src/io/errors.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { CNN } from '../src/models/cnn.js';
import { MLP } from '../src/models/mlp.js';
import { loadPretrained, modelConfigJson, modelFromConfig, savePretrained } from '../src/models/auto.js';
import { withTmp } from './helpers.js';


function randomTensor(shape: number[], seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.fromArray(new Rng(seed).fillNormal(new Float32Array(n)), shape);
}

const labels = Int32Array.of(3, 7, 0, 9);

describe('CNN', () => {
  test('maps (N, 1, 28, 28) images to (N, 10) logits with the walk-through\'s layers', () => {
    const cnn = new CNN({ numClasses: 10 }, new Rng(0));
    const logits = noGrad(() => cnn.forward(randomTensor([4, 1, 28, 28], 1)));
    assert.deepEqual(logits.shape, [4, 10]);
    assert.ok(logits.toFloat32Array().every(Number.isFinite));
    assert.deepEqual(
      cnn.namedParameters().map(([n, t]) => `${n}:${t.shape.join('x')}`),
      ['conv1.weight:6x1x5x5', 'conv1.bias:6', 'conv2.weight:16x6x5x5', 'conv2.bias:16', 'fc1.weight:120x400', 'fc1.bias:120',
        'fc2.weight:84x120', 'fc2.bias:84', 'fc3.weight:84x84', 'fc3.bias:84', 'fc4.weight:84x84', 'fc4.bias:84', 'fc5.weight:10x84', 'fc5.bias:10'],
    );
    assert.ok(cnn.getSubmodule('fc3') instanceof Linear);
    assert.throws(() => cnn.forward(randomTensor([1, 3, 28, 28], 2)), /expected images \(N, 1, 28, 28\)/);
  });

  test('the same seed builds the same weights', () => {
    const a = new CNN({ numClasses: 10 }, new Rng(5)).namedParameters().map(([, t]) => t.toFloat32Array());
    const b = new CNN({ numClasses: 10 }, new Rng(5)).namedParameters().map(([, t]) => t.toFloat32Array());
    const c = new CNN({ numClasses: 10 }, new Rng(6)).namedParameters().map(([, t]) => t.toFloat32Array());
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  });

  test('gradients reach every parameter', () => {
    const cnn = new CNN({ numClasses: 10 }, new Rng(0));
    F.crossEntropy(cnn.forward(randomTensor([4, 1, 28, 28], 1)), labels).backward();
    for (const [name, t] of cnn.namedParameters()) {
      assert.ok(t.grad, `${name} has a gradient`);
      assert.ok(t.grad.toFloat32Array().some((v) => v !== 0), `${name} gradient is non-zero`);
    }
  });

  test('save/load round trip', () => {
    withTmp((dir) => {
      const cnn = new CNN({ numClasses: 10 }, new Rng(0));
      const x = randomTensor([2, 1, 28, 28], 3);
      savePretrained(dir, cnn, modelConfigJson(cnn));
      const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
      assert.equal(config.model_type, 'vera_cnn');
      assert.equal(config.num_classes, 10);
      const loaded = loadPretrained(dir);
      assert.equal(loaded.modelType, 'vera_cnn');
      if (loaded.modelType !== 'vera_cnn') return;
      assert.deepEqual(loaded.config, { numClasses: 10 });
      assert.equal(loaded.checkpoint.params.get('fc1.weight')?.dtype, 'F32');
      assert.deepEqual(noGrad(() => loaded.model.forward(x)).toFloat32Array(), noGrad(() => cnn.forward(x)).toFloat32Array());
    });
  });
});

describe('MLP', () => {
  const config = { inputSize: 12, hiddenSizes: [16, 8], numClasses: 10 };

  test('maps (N, inputSize) to (N, numClasses) through layers.0, layers.1, …', () => {
    const mlp = new MLP(config, new Rng(0));
    assert.deepEqual(mlp.namedParameters().map(([n, t]) => `${n}:${t.shape.join('x')}`), [
      'layers.0.weight:16x12', 'layers.0.bias:16', 'layers.1.weight:8x16', 'layers.1.bias:8', 'layers.2.weight:10x8', 'layers.2.bias:10',
    ]);
    const logits = noGrad(() => mlp.forward(randomTensor([4, 12], 1)));
    assert.deepEqual(logits.shape, [4, 10]);
    assert.throws(() => mlp.forward(randomTensor([4, 11], 1)), /expected input \(N, 12\)/);
    const bare = new MLP({ inputSize: 5, hiddenSizes: [], numClasses: 3 }, new Rng(0));
    assert.deepEqual(noGrad(() => bare.forward(randomTensor([2, 5], 1))).shape, [2, 3]);
  });

  test('ReLU sits between layers, not after the last one', () => {
    const mlp = new MLP({ inputSize: 2, hiddenSizes: [2], numClasses: 2 }, new Rng(0));
    const [l0, l1] = mlp.layers.items as Linear[];
    l0.weight.copyFrom(Float32Array.of(1, 0, 0, 1));
    l0.bias!.copyFrom(Float32Array.of(0, 0));
    l1.weight.copyFrom(Float32Array.of(1, 0, 0, 1));
    l1.bias!.copyFrom(Float32Array.of(-5, 0));
    const y = noGrad(() => mlp.forward(Tensor.fromArray([-1, 2], [1, 2]))).toFloat32Array();
    assert.deepEqual([...y], [-5, 2]); // relu(-1) = 0, then the last layer's output stays negative
  });

  test('gradients reach every parameter', () => {
    const mlp = new MLP(config, new Rng(0));
    F.crossEntropy(mlp.forward(randomTensor([4, 12], 1)), labels).backward();
    for (const [name, t] of mlp.namedParameters()) {
      assert.ok(t.grad?.toFloat32Array().some((v) => v !== 0), `${name} gradient is non-zero`);
    }
  });

  test('a layer replaced by path is the one forward calls', () => {
    const mlp = new MLP(config, new Rng(0));
    const x = randomTensor([3, 12], 2);
    const before = noGrad(() => mlp.forward(x)).toFloat32Array();
    const original = mlp.getSubmodule('layers.1') as Linear;
    class Doubled extends Module {
      forward(v: Tensor): Tensor {
        return F.scale(original.forward(v), 2);
      }
    }
    mlp.setSubmodule('layers.1', new Doubled());
    const after = noGrad(() => mlp.forward(x)).toFloat32Array();
    assert.notDeepEqual(after, before);
  });

  test('save/load round trip and config errors', () => {
    withTmp((dir) => {
      const mlp = new MLP(config, new Rng(1));
      savePretrained(dir, mlp, modelConfigJson(mlp));
      const st = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
      assert.deepEqual(st.keys().sort(), mlp.namedParameters().map(([n]) => n).sort());
      const loaded = loadPretrained(dir);
      if (loaded.modelType !== 'vera_mlp') throw new Error(`got ${loaded.modelType}`);
      assert.deepEqual(loaded.config, config);
      const x = randomTensor([2, 12], 4);
      assert.deepEqual(noGrad(() => loaded.model.forward(x)).toFloat32Array(), noGrad(() => mlp.forward(x)).toFloat32Array());

      // a second save with the key map keeps the same file layout
      const again = path.join(dir, 'again');
      savePretrained(again, loaded.model, loaded.configJson, loaded.checkpoint);
      assert.deepEqual(SafetensorsFile.open(path.join(again, 'model.safetensors')).keys().sort(), st.keys().sort());

      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'vera_mlp', hidden_sizes: [4], num_classes: 2 }));
      assert.throws(() => loadPretrained(dir), (e: unknown) => e instanceof VeraError && /config\.json: field "input_size" is required/.test(e.message));
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'vera_mlp', input_size: 12, hidden_sizes: [16, 0], num_classes: 10 }));
      assert.throws(() => loadPretrained(dir), (e: unknown) => e instanceof VeraError && /field "hidden_sizes" must be an array of positive integers/.test(e.message));
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'vera_mlp', input_size: 12, hidden_sizes: [16, 9], num_classes: 10 }));
      assert.throws(() => loadPretrained(dir), (e: unknown) => e instanceof VeraError && /model\.safetensors: layers\.1\.bias has shape \[8\], expected \[9\]/.test(e.message));
    });
  });

  test('modelFromConfig builds any registered family', () => {
    const m = modelFromConfig({ model_type: 'vera_mlp', input_size: 3, hidden_sizes: [4], num_classes: 2 }, 'config.json', { rng: new Rng(0) });
    assert.equal(m.modelType, 'vera_mlp');
    const c = modelFromConfig({ model_type: 'vera_cnn', num_classes: 3 }, 'config.json');
    assert.equal(c.modelType, 'vera_cnn');
    assert.throws(() => modelFromConfig({ model_type: 'mamba' }, 'config.json'), /config\.json: unsupported model_type "mamba" \(supported: gpt2, vera_cnn, vera_mlp, .*\)/);
    assert.throws(() => modelFromConfig({ model_type: 'llama' }, 'config.json'), /config\.json: field "hidden_size" is required/);
  });
});
