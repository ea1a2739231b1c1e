import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { F, Rng, Tensor, manualSeed, noGrad } from '../src/tensor/index.js';
import { Linear, Module, ModuleList } from '../src/nn/index.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { VeraError } from '../src/io/errors.js';
import {
  LoraLinear, PeftModel, VeraLinear, generateProjections, getPeftModel, loraConfig, veraConfig,
} from '../src/peft/index.js';

const fixtures = new URL('../../test/fixtures/', import.meta.url).pathname;

function close(actual: Float32Array, expected: Float32Array, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  let at = 0;
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i] - expected[i]) / (1 + Math.abs(expected[i]));
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  assert.ok(worst <= tol, `${what}: element ${at} is ${actual[at]}, expected ${expected[at]} (err ${worst})`);
}

const tensorOf = (st: SafetensorsFile, name: string, requiresGrad = false): Tensor =>
  Tensor.fromArray(st.getFloat32(name), st.info(name).shape, requiresGrad);

for (const variant of ['', 'conv1d.'] as const) {
  test(`VeraLinear matches the PyTorch reference (${variant || 'Linear'})`, () => {
    const st = SafetensorsFile.open(join(fixtures, 'vera-linear.safetensors'));
    const fanInFanOut = variant === 'conv1d.';
    const base = new Linear(6, 5, { fanInFanOut });
    base.weight.copyFrom(st.getFloat32(`${variant}weight`));
    base.bias!.copyFrom(st.getFloat32(`${variant}bias`));
    base.requiresGrad_(false);
    const layer = new VeraLinear(base);
    const A = tensorOf(st, `${variant}vera_A`);
    layer.addAdapter('default', { A, B: tensorOf(st, `${variant}vera_B`) }, { r: A.shape[0], shared: true, dInitial: 0.1, bInitial: 0, dropout: 0, trainD: true, trainB: true });
    layer.activeAdapters = ['default'];
    const a = layer.adapter('default');
    a.lambdaD.copyFrom(st.getFloat32(`${variant}lambda_d`));
    a.lambdaB.copyFrom(st.getFloat32(`${variant}lambda_b`));
    a.lambdaD.requiresGrad = true;
    a.lambdaB.requiresGrad = true;
    const x = tensorOf(st, `${variant}x`, true);
    const y = layer.forward(x);
    close(y.toFloat32Array(), st.getFloat32(`${variant}y`), 1e-5, 'y');
    F.sum(F.mul(y, tensorOf(st, `${variant}grad_out`))).backward();
    close(x.grad!.toFloat32Array(), st.getFloat32(`${variant}grad_x`), 1e-5, 'grad x');
    close(a.lambdaD.grad!.toFloat32Array(), st.getFloat32(`${variant}grad_lambda_d`), 1e-5, 'grad λd');
    close(a.lambdaB.grad!.toFloat32Array(), st.getFloat32(`${variant}grad_lambda_b`), 1e-5, 'grad λb');
    assert.equal(base.weight.grad, null, 'frozen weight gets no gradient buffer');
    assert.equal(base.bias!.grad, null);
    close(noGrad(() => layer.deltaWeight('default')).toFloat32Array(), st.getFloat32(`${variant}delta_weight`), 1e-6, 'ΔW');
  });
}

test('LoraLinear matches the PyTorch reference', () => {
  const st = SafetensorsFile.open(join(fixtures, 'lora-linear.safetensors'));
  const base = new Linear(6, 5);
  base.weight.copyFrom(st.getFloat32('weight'));
  base.bias!.copyFrom(st.getFloat32('bias'));
  base.requiresGrad_(false);
  const layer = new LoraLinear(base);
  layer.addAdapter('default', 2, 4 / 2, 0, true, new Rng(0));
  layer.activeAdapters = ['default'];
  const a = layer.adapter('default');
  a.A.copyFrom(st.getFloat32('lora_A'));
  a.B.copyFrom(st.getFloat32('lora_B'));
  a.A.requiresGrad = true;
  a.B.requiresGrad = true;
  const x = tensorOf(st, 'x', true);
  const y = layer.forward(x);
  close(y.toFloat32Array(), st.getFloat32('y'), 1e-5, 'y');
  F.sum(F.mul(y, tensorOf(st, 'grad_out'))).backward();
  close(x.grad!.toFloat32Array(), st.getFloat32('grad_x'), 1e-5, 'grad x');
  close(a.A.grad!.toFloat32Array(), st.getFloat32('grad_lora_A'), 1e-5, 'grad A');
  close(a.B.grad!.toFloat32Array(), st.getFloat32('grad_lora_B'), 1e-5, 'grad B');
  assert.equal(base.weight.grad, null);
});

test('VeRA projections regenerate bit for bit from projection_prng_key (torch MT19937)', () => {
  const st = SafetensorsFile.open(join(fixtures, 'kaiming.safetensors'));
  for (const key of [0, 1, 42, 12345]) {
    for (const [r, maxIn, maxOut] of [[4, 8, 6], [256, 96, 128]]) {
      const p = generateProjections(r, maxIn, maxOut, key);
      const A = st.getFloat32(`key${key}_r${r}.vera_A`);
      const B = st.getFloat32(`key${key}_r${r}.vera_B`);
      assert.deepEqual(p.A.shape, [r, maxIn]);
      assert.deepEqual(p.B.shape, [maxOut, r]);
      assert.deepEqual(p.A.toFloat32Array(), A, `vera_A key ${key} r ${r}`);
      assert.deepEqual(p.B.toFloat32Array(), B, `vera_B key ${key} r ${r}`);
    }
  }
});

// ---------------------------------------------------------------- PeftModel on a small network

class Block extends Module {
  q: Linear;
  v: Linear;
  constructor(dim: number, rng: Rng) {
    super();
    this.q = this.addModule('q', new Linear(dim, dim, { rng }));
    this.v = this.addModule('v', new Linear(dim, dim, { rng }));
  }
  forward(x: Tensor): Tensor {
    return F.relu(this.v.forward(this.q.forward(x)));
  }
}

class Net extends Module {
  layers: ModuleList<Block>;
  head: Linear;
  constructor(seed = 1) {
    super();
    const rng = new Rng(seed);
    this.layers = this.addModule('layers', new ModuleList([new Block(8, rng), new Block(8, rng), new Block(8, rng)]));
    this.head = this.addModule('head', new Linear(8, 3, { rng }));
  }
  forward(x: Tensor): Tensor {
    for (const b of this.layers.items) x = b.forward(x);
    return this.head.forward(x);
  }
}

const input = (): Tensor => Tensor.fromArray(new Rng(9).fillNormal(new Float32Array(5 * 8)), [5, 8]);

function randomizeAdapter(peft: PeftModel, seed: number): void {
  const rng = new Rng(seed);
  for (const [, t] of peft.adapterStateDict()) {
    if (t.requiresGrad) t.copyFrom(rng.fillNormal(new Float32Array(t.size), 0, 0.5));
  }
}

test('getPeftModel: targets by suffix, freezes the base, counts r + out per layer', () => {
  const net = new Net();
  const peft = getPeftModel(net, veraConfig({ targetModules: ['q', 'v'], r: 4 }));
  const trainable = peft.trainableParameters().map(([n]) => n).sort();
  assert.deepEqual(trainable, [0, 1, 2].flatMap((i) => ['q', 'v'].flatMap((m) => [`layers.${i}.${m}.vera_lambda_b.default`, `layers.${i}.${m}.vera_lambda_d.default`])).sort());
  assert.equal(peft.getNbTrainableParameters().trainable, 6 * (4 + 8));
  const lines: string[] = [];
  peft.printTrainableParameters((l) => lines.push(l));
  assert.match(lines[0], /^trainable params: 72 \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}$/);
  // b = 0 at start: the adapted model equals the base
  const base = new Net();
  assert.deepEqual(noGrad(() => net.forward(input())).toFloat32Array(), noGrad(() => base.forward(input())).toFloat32Array());
});

test('target selection: regex, layersToTransform, and clear errors', () => {
  const regex = getPeftModel(new Net(), veraConfig({ targetModules: 'layers\\.[02]\\.q', r: 2 }));
  assert.deepEqual(regex.trainableParameters().map(([n]) => n.split('.vera')[0]).filter((v, i, a) => a.indexOf(v) === i), ['layers.0.q', 'layers.2.q']);
  // PEFT reads the layer index after a dotted prefix ("model.layers.1.v"); a layer list at the root has none
  assert.throws(() => getPeftModel(new Net(), veraConfig({ targetModules: ['v'], layersToTransform: [1], r: 2 })), /matched no linear layer/);
  const wrapper = new (class extends Module {
    model = this.addModule('model', new Net());
    forward(x: Tensor): Tensor {
      return this.model.forward(x);
    }
  })();
  const some = getPeftModel(wrapper, veraConfig({ targetModules: ['v'], layersToTransform: [1], r: 2 }));
  assert.deepEqual([...new Set(some.trainableParameters().map(([n]) => n.split('.vera')[0]))], ['model.layers.1.v']);
  assert.throws(() => getPeftModel(new Net(), veraConfig({ targetModules: ['nope'], r: 2 })), (e: unknown) => e instanceof VeraError && /matched no linear layer/.test(e.message));
  assert.throws(() => getPeftModel(new Net(), veraConfig({ targetModules: ['layers'], r: 2 })), VeraError);
  assert.throws(() => veraConfig({ targetModules: ['q'], r: 0 }), /r must be a positive integer/);
  assert.throws(() => loraConfig({ targetModules: ['q'], r: -1 }), /r must be a positive integer/);
});

test('training moves only the lambdas; merge == unmerged forward; unmerge restores; mergeAndUnload', () => {
  manualSeed(0);
  const net = new Net();
  const before = net.layers.items[0].q.weight.toFloat32Array();
  const peft = getPeftModel(net, veraConfig({ targetModules: ['q', 'v'], r: 4 }));
  const x = input();
  const loss = F.sum(F.square(net.forward(x)));
  loss.backward();
  for (const [name, t] of net.namedParameters()) {
    if (name.includes('vera_lambda_b')) assert.ok(t.grad !== null, `${name} has a gradient`);
    if (!t.requiresGrad) assert.equal(t.grad, null, `${name} is frozen and has no gradient`);
  }
  randomizeAdapter(peft, 3);
  const unmerged = noGrad(() => net.forward(x)).toFloat32Array();
  peft.merge();
  const merged = noGrad(() => net.forward(x)).toFloat32Array();
  close(merged, unmerged, 1e-5, 'merged vs unmerged');
  peft.unmerge();
  close(net.getSubmodule('layers.0.q.base_layer').ownParameters()[0][1].toFloat32Array(), before, 1e-6, 'unmerge restores W0');
  const plain = peft.mergeAndUnload();
  assert.ok(plain.layers.items[0].q instanceof Linear && !(plain.layers.items[0].q instanceof VeraLinear));
  close(noGrad(() => plain.forward(x)).toFloat32Array(), unmerged, 1e-5, 'mergeAndUnload');
});

test('safe merge refuses NaN and leaves weights untouched', () => {
  const net = new Net();
  const peft = getPeftModel(net, veraConfig({ targetModules: ['q'], r: 2 }));
  const lb = peft.adapterStateDict().get('base_model.model.layers.0.q.vera_lambda_b')!;
  lb.copyFrom(new Float32Array(8).fill(NaN));
  const w = (net.getSubmodule('layers.0.q.base_layer') as Linear).weight.toFloat32Array();
  assert.throws(() => peft.merge(undefined, { safe: true }), (e: unknown) => e instanceof VeraError && /NaN/.test(e.message));
  assert.deepEqual((net.getSubmodule('layers.0.q.base_layer') as Linear).weight.toFloat32Array(), w);
});

test('several adapters: add, switch, disable, delete', () => {
  const net = new Net();
  const x = input();
  const baseOut = noGrad(() => net.forward(x)).toFloat32Array();
  const peft = getPeftModel(net, veraConfig({ targetModules: ['q', 'v'], r: 4 }), 'alice');
  randomizeAdapter(peft, 1);
  peft.addAdapter('bob', veraConfig({ targetModules: ['q'], r: 4 }));
  assert.equal(peft.activeAdapter, 'alice');
  const alice = noGrad(() => net.forward(x)).toFloat32Array();
  peft.setAdapter('bob');
  randomizeAdapter(peft, 2);
  assert.ok(peft.trainableParameters().every(([n]) => n.includes('.bob')), 'only the active adapter trains');
  const bob = noGrad(() => net.forward(x)).toFloat32Array();
  assert.notDeepEqual(alice, bob);
  peft.setAdapter('alice');
  assert.deepEqual(noGrad(() => net.forward(x)).toFloat32Array(), alice);
  assert.deepEqual(peft.withAdaptersDisabled(() => noGrad(() => net.forward(x)).toFloat32Array()), baseOut);
  peft.merge();
  close(peft.withAdaptersDisabled(() => noGrad(() => net.forward(x)).toFloat32Array()), baseOut, 1e-6, 'disabling unmerges');
  peft.merge();
  assert.throws(() => peft.deleteAdapter('alice'), /Cannot delete adapter\(s\) \['alice'\] while they are merged/);
  peft.unmerge();
  peft.deleteAdapter('alice');
  assert.equal(peft.activeAdapter, 'bob');
  close(noGrad(() => net.forward(x)).toFloat32Array(), bob, 1e-6, 'bob after deleting alice');
  assert.throws(() => peft.setAdapter('alice'), VeraError);
  assert.throws(() => peft.addAdapter('x', loraConfig({ targetModules: ['q'] })), /Cannot combine adapters with different peft types\. Found VERA and LORA/);
});

test('save / load round trip in PEFT layout (VeRA with and without projections, LoRA, F16)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vera-peft-'));
  try {
    for (const [i, config] of [
      veraConfig({ targetModules: ['q', 'v'], r: 4, projectionPrngKey: 3 }),
      veraConfig({ targetModules: ['q', 'v'], r: 4, projectionPrngKey: 3, saveProjection: false }),
      loraConfig({ targetModules: ['v'], r: 2, loraAlpha: 4 }),
    ].entries()) {
      const net = new Net();
      const peft = getPeftModel(net, config);
      randomizeAdapter(peft, 7);
      const x = input();
      const want = noGrad(() => net.forward(x)).toFloat32Array();
      const out = join(dir, `a${i}`);
      peft.saveAdapter(out);
      assert.deepEqual(readdirSync(out).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
      const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
      assert.equal(cfg.peft_type, config.peftType);
      const keys = SafetensorsFile.open(join(out, 'adapter_model.safetensors')).keys();
      if (config.peftType === 'VERA') {
        assert.ok(keys.includes('base_model.model.layers.0.q.vera_lambda_d'));
        assert.equal(keys.includes('base_model.vera_A'), cfg.save_projection);
      } else assert.ok(keys.includes('base_model.model.layers.1.v.lora_B.weight'));
      const loaded = PeftModel.fromPretrained(new Net(), out);
      assert.equal(loaded.getNbTrainableParameters().trainable, 0, 'loaded for inference by default');
      assert.deepEqual(noGrad(() => loaded.model.forward(x)).toFloat32Array(), want);
      peft.saveAdapter(join(dir, `h${i}`), { dtype: 'F16' });
      const half = PeftModel.fromPretrained(new Net(), join(dir, `h${i}`), { isTrainable: true });
      assert.ok(half.getNbTrainableParameters().trainable > 0);
      close(noGrad(() => half.model.forward(x)).toFloat32Array(), want, 5e-3, 'F16 adapter');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('modules_to_save and bias are trained and saved with the adapter', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vera-peft-'));
  try {
    const net = new Net();
    const peft = getPeftModel(net, veraConfig({ targetModules: ['q'], r: 2, modulesToSave: ['head'], bias: 'vera_only' }));
    const names = peft.trainableParameters().map(([n]) => n);
    assert.ok(names.includes('head.weight') && names.includes('head.bias'));
    assert.ok(names.includes('layers.0.q.base_layer.bias'));
    assert.ok(!names.includes('layers.0.v.bias'));
    randomizeAdapter(peft, 4);
    const x = input();
    const want = noGrad(() => net.forward(x)).toFloat32Array();
    assert.notDeepEqual(peft.withAdaptersDisabled(() => noGrad(() => net.forward(x)).toFloat32Array()), want);
    peft.saveAdapter(dir);
    const keys = SafetensorsFile.open(join(dir, 'adapter_model.safetensors')).keys();
    assert.ok(keys.includes('base_model.model.head.weight'));
    const loaded = PeftModel.fromPretrained(new Net(), dir);
    assert.deepEqual(noGrad(() => loaded.model.forward(x)).toFloat32Array(), want);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad adapters: wrong shapes, NaN, stray keys, bad config give one-line errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vera-peft-'));
  try {
    const net = new Net();
    const peft = getPeftModel(net, veraConfig({ targetModules: ['q', 'v'], r: 4 }));
    peft.saveAdapter(dir);
    const cfgPath = join(dir, 'adapter_config.json');
    const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
    // a model whose layers have other shapes
    class Wide extends Net {
      constructor() {
        super();
        this.layers.items[0].setChild('q', new Linear(8, 16));
      }
    }
    assert.throws(() => PeftModel.fromPretrained(new Wide(), dir), (e: unknown) => e instanceof VeraError && /shape/.test(e.message) && !e.message.includes('\n'));
    writeFileSync(cfgPath, JSON.stringify({ ...cfg, r: 0 }));
    assert.throws(() => PeftModel.fromPretrained(new Net(), dir), /adapter_config\.json: r must be a positive integer/);
    writeFileSync(cfgPath, JSON.stringify({ ...cfg, r: 'four' }));
    assert.throws(() => PeftModel.fromPretrained(new Net(), dir), /field "r" must be an integer/);
    writeFileSync(cfgPath, '{ not json');
    assert.throws(() => PeftModel.fromPretrained(new Net(), dir), VeraError);
    writeFileSync(cfgPath, JSON.stringify({ ...cfg, target_modules: ['head'] }));
    assert.throws(() => PeftModel.fromPretrained(new Net(), dir), /matches no adapted module|missing tensor|shape/);
    writeFileSync(cfgPath, JSON.stringify(cfg));
    const bad = new Net();
    const p2 = getPeftModel(bad, veraConfig({ targetModules: ['q', 'v'], r: 4 }));
    p2.adapterStateDict().get('base_model.model.layers.0.q.vera_lambda_d')!.copyFrom(new Float32Array(4).fill(NaN));
    assert.throws(() => p2.saveAdapter(join(dir, 'nan')), /NaN/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ablations: only_d freezes λb at 1, only_b freezes λd at 1; unique projections differ per layer', () => {
  const onlyD = getPeftModel(new Net(), veraConfig({ targetModules: ['q'], r: 4, ablation: 'only_d', dInitial: 0 }));
  assert.ok(onlyD.trainableParameters().every(([n]) => n.includes('vera_lambda_d')));
  const lb = onlyD.adapterStateDict().get('base_model.model.layers.0.q.vera_lambda_b')!;
  assert.deepEqual([...lb.toFloat32Array()], new Array(8).fill(1));
  const onlyB = getPeftModel(new Net(), veraConfig({ targetModules: ['q'], r: 4, ablation: 'only_b' }));
  assert.ok(onlyB.trainableParameters().every(([n]) => n.includes('vera_lambda_b')));
  const uniq = getPeftModel(new Net(), veraConfig({ targetModules: ['q'], r: 4, uniqueProjections: true }));
  const a0 = (uniq.model.getSubmodule('layers.0.q') as VeraLinear).adapter('default').projections.A;
  const a1 = (uniq.model.getSubmodule('layers.1.q') as VeraLinear).adapter('default').projections.A;
  assert.notDeepEqual(a0.toFloat32Array(), a1.toFloat32Array());
  const shared = getPeftModel(new Net(), veraConfig({ targetModules: ['q'], r: 4 }));
  assert.equal((shared.model.getSubmodule('layers.0.q') as VeraLinear).adapter('default').projections.A, (shared.model.getSubmodule('layers.2.q') as VeraLinear).adapter('default').projections.A, 'one shared A for all layers');
  for (const init of ['kaiming_normal', 'uniform'] as const) {
    const p = generateProjections(4, 8, 8, 0, init);
    const a = p.A.toFloat32Array();
    if (init === 'uniform') assert.ok(a.every((v) => v >= 0 && v < 0.1));
    else assert.ok(a.some((v) => v < 0));
  }
});
