// PEFT's add_weighted_adapter for LoRA (linear, cat, svd with and without clamp) against a PyTorch fixture of PEFT's math (scripts/fixtures/make_dora_fixtures.py), VeRA's exact linear combination, and several active adapters.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { F, Rng, Tensor, noGrad } from '../src/tensor/index.js';
import { Linear, Module } from '../src/nn/index.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { LoraLinear, VeraLinear, getPeftModel, loraConfig, veraConfig, type PeftModel } from '../src/peft/index.js';
import { lowRankSvd, quantile } from '../src/peft/lora/svd.js';
import { maxAbsDiff, throwsVera } from './helpers.js';

const dir = new URL('../../test/fixtures/dora/', import.meta.url).pathname;

class One extends Module {
  lin: Linear;
  constructor(fio: boolean) {
    super();
    this.lin = this.addModule('lin', new Linear(12, 10, { bias: false, fanInFanOut: fio, rng: new Rng(0) }));
  }
  forward(x: Tensor): Tensor {
    return this.lin.forward(x);
  }
}

function close(got: ArrayLike<number>, want: ArrayLike<number>, what: string, tol = 2e-5): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let scale = 1;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  const d = maxAbsDiff(got, want);
  assert.ok(d <= tol * scale, `${what}: max |diff| ${d}`);
}

function setup(name: string): { peft: PeftModel<One>; st: SafetensorsFile; layer: () => LoraLinear } {
  const st = SafetensorsFile.open(join(dir, `${name}.safetensors`));
  const model = new One(name.endsWith('conv1d'));
  model.lin.weight.copyFrom(st.getFloat32('w0'));
  const peft = getPeftModel(model, loraConfig({ r: 3, loraAlpha: 6, targetModules: ['lin'], initLoraWeights: false }), 'a');
  peft.addAdapter('b', loraConfig({ r: 4, loraAlpha: 4, targetModules: ['lin'], initLoraWeights: false }));
  peft.addAdapter('c', loraConfig({ r: 3, loraAlpha: 6, targetModules: ['lin'], initLoraWeights: false }));
  const layer = (): LoraLinear => model.lin as unknown as LoraLinear;
  const set = (n: string, a: string, b: string): void => {
    layer().adapter(n).A.copyFrom(st.getFloat32(a));
    layer().adapter(n).B.copyFrom(st.getFloat32(b));
  };
  set('a', 'A0', 'B0');
  set('b', 'A1', 'B1');
  set('c', 'A1lin', 'B1lin');
  return { peft, st, layer };
}

for (const name of ['weighted-linear', 'weighted-conv1d']) {
  test(`addWeightedAdapter linear, cat, svd (and svd_clamp) against PyTorch: ${name}`, () => {
    const { peft, st, layer } = setup(name);
    const x = Tensor.fromArray(st.getFloat32('x'), [3, 12]);
    const check = (newName: string, tag: string, r: number): void => {
      const a = layer().adapter(newName);
      assert.deepEqual(a.A.shape, [r, 12]);
      assert.deepEqual(a.B.shape, [10, r]);
      assert.equal(a.scaling, 1, 'lora_alpha = r: scaling 1');
      close(a.A.data(), st.getFloat32(`ref.${tag}_A`), `${tag} A`);
      close(a.B.data(), st.getFloat32(`ref.${tag}_B`), `${tag} B`);
      assert.equal(peft.peftConfig.get(newName)!.peftType, 'LORA');
      assert.deepEqual(peft.activeAdapters, ['a'], 'the new adapter is added, not activated');
      assert.equal(a.A.requiresGrad, false);
    };
    peft.addWeightedAdapter(['a', 'b'], [0.7, -1.3], 'cat', { combinationType: 'cat' });
    check('cat', 'cat', 7);
    peft.addWeightedAdapter(['a', 'c'], [0.5, -2.0], 'lin', { combinationType: 'linear' });
    check('lin', 'linear', 3);
    peft.addWeightedAdapter(['a', 'b'], [0.7, -1.3], 'svd4');
    check('svd4', 'svd4', 4);
    peft.addWeightedAdapter(['a', 'b'], [0.7, -1.3], 'svd2', { combinationType: 'svd', svdRank: 2 });
    check('svd2', 'svd2', 2);
    peft.addWeightedAdapter(['a', 'b'], [0.7, -1.3], 'svdc', { combinationType: 'svd', svdClamp: 0.9 });
    check('svdc', 'svd4_clamp', 4);
    // cat at full rank computes exactly the weighted sum of the adapters' outputs
    const out = (names: string[]): Float32Array => {
      peft.setAdapter(names);
      return noGrad(() => peft.model.forward(x)).toFloat32Array();
    };
    const base = noGrad(() => (peft.model.lin as unknown as LoraLinear).base_layer.forward(x)).toFloat32Array();
    const ya = out(['a']);
    const yb = out(['b']);
    const want = base.map((v: number, i: number) => v + 0.7 * (ya[i] - v) - 1.3 * (yb[i] - v));
    assert.ok(maxAbsDiff(out(['cat']), want) < 1e-5);
    peft.addWeightedAdapter(['a', 'b'], [0.7, -1.3], 'svd7', { svdRank: 7 });
    assert.ok(maxAbsDiff(out(['svd7']), want) < 1e-5, 'svd at rank ≥ rank(ΔW) is exact');
    // a name already in use: nothing happens, as PEFT
    const before = layer().adapter('svd2').A.toFloat32Array();
    peft.addWeightedAdapter(['a', 'b'], [1, 1], 'svd2', { combinationType: 'cat' });
    assert.deepEqual(layer().adapter('svd2').A.toFloat32Array(), before);
  });
}

test('addWeightedAdapter refuses what PEFT refuses (and DoRA adapters)', () => {
  const { peft } = setup('weighted-linear');
  throwsVera(() => peft.addWeightedAdapter(['a', 'b'], [1, 1], 'x', { combinationType: 'linear' }), /same r value/);
  throwsVera(() => peft.addWeightedAdapter(['a', 'nope'], [1, 1], 'x'), /Adapter nope does not exist/);
  throwsVera(() => peft.addWeightedAdapter(['a', 'b'], [1, 1], 'x', { combinationType: 'ties' as 'svd' }), /Invalid combination_type/);
  peft.addAdapter('d', loraConfig({ r: 3, loraAlpha: 6, targetModules: ['lin'], useDora: true }));
  throwsVera(() => peft.addWeightedAdapter(['a', 'd'], [1, 1], 'x', { combinationType: 'cat' }), /use DoRA \(use_dora\)/);
  assert.equal(peft.peftConfig.has('x'), false);
});

test('several active LoRA adapters sum their outputs, in PEFT order', () => {
  const { peft, st } = setup('weighted-linear');
  const x = Tensor.fromArray(st.getFloat32('x'), [3, 12]);
  const run = (names: string[]): Float32Array => {
    peft.setAdapter(names);
    return noGrad(() => peft.model.forward(x)).toFloat32Array();
  };
  const base = noGrad(() => (peft.model.lin as unknown as LoraLinear).base_layer.forward(x)).toFloat32Array();
  const ya = run(['a']);
  const yb = run(['b']);
  const both = run(['a', 'b']);
  assert.ok(maxAbsDiff(both, base.map((v: number, i: number) => ya[i] + yb[i] - v)) < 1e-5);
  assert.deepEqual(peft.trainableParameters().map(([n]) => n).sort(), ['lin.lora_A.a.weight', 'lin.lora_A.b.weight', 'lin.lora_B.a.weight', 'lin.lora_B.b.weight']);
  void F;
});

test('lowRankSvd: the singular values and factors of L·R; quantile as torch.quantile', () => {
  const st = SafetensorsFile.open(join(dir, 'weighted-linear.safetensors'));
  const rng = new Rng(3);
  const L = Float64Array.from(rng.fillNormal(new Float32Array(10 * 7)));
  const R = Float64Array.from(rng.fillNormal(new Float32Array(7 * 12)));
  const svd = lowRankSvd(L, R, 10, 12, 7);
  // U·diag(S)·Vᵀ == L·R
  let err = 0;
  for (let i = 0; i < 10; i++) for (let j = 0; j < 12; j++) {
    let a = 0;
    let b = 0;
    for (let p = 0; p < 7; p++) {
      a += L[i * 7 + p] * R[p * 12 + j];
      b += svd.U[i * 7 + p] * svd.S[p] * svd.V[j * 7 + p];
    }
    err = Math.max(err, Math.abs(a - b));
  }
  assert.ok(err < 1e-10, `reconstruction ${err}`);
  for (let p = 1; p < 7; p++) assert.ok(svd.S[p - 1] >= svd.S[p]);
  assert.ok(st.getFloat32('ref.sv').length === 10);
  assert.equal(quantile([1, 2, 3, 4], 0.5), 2.5);
  assert.equal(quantile([4, 1, 3, 2], 0.9), 3.7);
});

test('VeRA adapters on one shared pair combine exactly where the sum is one VeRA adapter, and are refused in one line where it is not', () => {
  const rng = new Rng(5);
  const x = Tensor.fromArray(rng.fillNormal(new Float32Array(3 * 12), 0, 1), [3, 12]);
  for (const fio of [false, true]) {
    const model = new One(fio);
    const peft = getPeftModel(model, veraConfig({ r: 4, targetModules: ['lin'], projectionPrngKey: 7 }), 'a');
    for (const n of ['b', 'c']) peft.addAdapter(n, veraConfig({ r: 4, targetModules: ['lin'], projectionPrngKey: 7 }));
    const layer = model.lin as unknown as VeraLinear;
    const fill = (t: Tensor): void => t.copyFrom(rng.fillNormal(new Float32Array(t.size), 0, 0.5));
    // a and b: their own λd, the same λb (as only-d adapters have); c: its own λb, a's λd
    fill(layer.adapter('a').lambdaD);
    fill(layer.adapter('b').lambdaD);
    fill(layer.adapter('a').lambdaB);
    layer.adapter('b').lambdaB.copyFrom(layer.adapter('a').lambdaB);
    layer.adapter('c').lambdaD.copyFrom(layer.adapter('a').lambdaD);
    fill(layer.adapter('c').lambdaB);
    const out = (name: string | null): Float32Array => noGrad(() => {
      if (name === null) return peft.withAdaptersDisabled(() => model.forward(x).data().slice());
      peft.setAdapter(name);
      return model.forward(x).data().slice();
    });
    const base = out(null);
    const delta = (name: string): Float32Array => out(name).map((v, i) => v - base[i]);
    const cases: [string[], number[], string][] = [[['a', 'b'], [0.7, -0.3], 'ab'], [['a', 'c'], [0.4, 1.5], 'ac'], [['b'], [2], 'b2']];
    for (const [names, weights, fresh] of cases) {
      peft.addWeightedAdapter(names, weights, fresh, { combinationType: 'linear' });
      const want = new Float32Array(base.length);
      names.forEach((n, j) => delta(n).forEach((v, i) => (want[i] += weights[j] * v)));
      close(delta(fresh), want, `${fresh} (fanInFanOut ${fio})`, 1e-5);
    }
    throwsVera(() => peft.addWeightedAdapter(['b', 'c'], [1, 1], 'bc'), /on lin, VeRA adapters b, c differ in both vera_lambda_d and vera_lambda_b/);
    assert.equal(peft.peftConfig.has('bc'), false);
    throwsVera(() => peft.addWeightedAdapter(['a', 'b'], [1, 1], 'cat', { combinationType: 'cat' }), /combine linearly only/);
  }
});
