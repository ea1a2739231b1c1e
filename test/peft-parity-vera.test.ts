// PEFT's VeRA tests, ported: tests/test_vera.py and test_initialization.py's TestVeraInitialization
// (PEFT main, read, not copied), plus several VeRA adapters on one model against an independent
// PyTorch implementation of PEFT's rules (scripts/fixtures/make_peft_fixtures.py, gen_multi_adapter).
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tensor, manualSeed, noGrad } from '../src/tensor/index.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { PeftModel, VeraLinear, getPeftModel, sharedProjections, veraConfig, type VeraConfig } from '../src/peft/index.js';
import { MLP, MLP4, randomInput } from './peft-models.js';
import { maxAbsDiff, throwsVera, withTmp } from './helpers.js';

const peftDir = new URL('../../test/fixtures/peft/', import.meta.url).pathname;

type Forward = { forward(x: Tensor): Tensor };
const out = (peft: PeftModel, x: Tensor): Float32Array => noGrad(() => (peft.model as unknown as Forward).forward(x)).toFloat32Array();
const allClose = (a: Float32Array, b: Float32Array, atol: number, rtol = 0): boolean => a.every((v, i) => Math.abs(v - b[i]) <= atol + rtol * Math.abs(b[i]));
const vera = (model: PeftModel, path: string): VeraLinear => model.model.getSubmodule(path) as VeraLinear;

/** test_vera.py's mlp_same_prng fixture: two adapters with init_weights=False on lin1, lin2, the same key. */
function mlpSamePrng(): PeftModel<MLP4> {
  manualSeed(0);
  const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1', 'lin2'], initWeights: false }));
  peft.addAdapter('other', veraConfig({ targetModules: ['lin1', 'lin2'], initWeights: false }));
  return peft;
}

test('test_multiple_adapters_same_prng_weights: adapters share vera_A/vera_B; with init_weights=False they still differ', () => {
  const peft = mlpSamePrng();
  for (const l of ['lin1', 'lin2']) {
    assert.equal(vera(peft, l).projections('default').A, vera(peft, l).projections('other').A);
    assert.equal(vera(peft, l).projections('default').B, vera(peft, l).projections('other').B);
  }
  const x = randomInput(5, 10, 1);
  peft.setAdapter('default');
  const a = out(peft, x);
  peft.setAdapter('other');
  const b = out(peft, x);
  assert.ok(!allClose(a, b, 1e-3, 1e-3), 'λd of each adapter is drawn from the global generator, so the two differ');
});

test('test_multiple_adapters_different_prng_raises', () => {
  const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1', 'lin2'], initWeights: false }));
  throwsVera(
    () => peft.addAdapter('other', veraConfig({ targetModules: ['lin1', 'lin2'], initWeights: false, projectionPrngKey: 123 })),
    /Vera PRNG initialisation key must be the same for all adapters\. Got config\.projection_prng_key=123 but previous config had 0/,
  );
  assert.deepEqual([...peft.peftConfig.keys()], ['default'], 'nothing was added');
  assert.ok(!vera(peft, 'lin1').adapterNames().includes('other'));
});

test('test_save_projection_true_restores_saved_projections: stored A/B win over regeneration', () => {
  withTmp((dir) => {
    manualSeed(1);
    const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1', 'lin2'], initWeights: false, saveProjection: true }));
    const pair = sharedProjections(peft.model)!;
    pair.A.copyFrom(pair.A.toFloat32Array().map((v) => v + 1));
    pair.B.copyFrom(pair.B.toFloat32Array().map((v) => v + 1));
    const x = randomInput(5, 10, 2);
    const want = out(peft, x);
    peft.savePretrained(dir);
    const loaded = PeftModel.fromPretrained(new MLP4(), dir);
    const again = sharedProjections(loaded.model)!;
    assert.deepEqual(again.A.toFloat32Array(), pair.A.toFloat32Array());
    assert.deepEqual(again.B.toFloat32Array(), pair.B.toFloat32Array());
    assert.ok(maxAbsDiff(out(loaded, x), want) < 1e-6);
  });
});

test('test_multiple_adapters_save_load_save_projection_false: savePretrained writes one folder per adapter; both reload', () => {
  withTmp((dir) => {
    manualSeed(1);
    const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1', 'lin2'], initWeights: false, saveProjection: false }), 'first');
    peft.addAdapter('second', veraConfig({ targetModules: ['lin1', 'lin2'], initWeights: false, saveProjection: false }));
    const x = randomInput(5, 10, 3);
    peft.setAdapter('first');
    const first = out(peft, x);
    peft.setAdapter('second');
    const second = out(peft, x);
    assert.ok(!allClose(first, second, 1e-3, 1e-3));
    const path = join(dir, 'vera');
    peft.savePretrained(path);
    assert.ok(existsSync(join(path, 'first', 'adapter_config.json')));
    assert.ok(existsSync(join(path, 'second', 'adapter_config.json')));
    for (const name of ['first', 'second']) {
      const keys = SafetensorsFile.open(join(path, name, 'adapter_model.safetensors')).keys();
      assert.ok(!keys.some((k) => k.includes('vera_A') || k.includes('vera_B')), `${name}: no projections saved (test_multiple_adapters_save_projection_false_contains_no_vera_A_vera_B)`);
    }
    manualSeed(0);
    const loaded = PeftModel.fromPretrained(new MLP4(), join(path, 'first'), { adapterName: 'first' });
    loaded.loadAdapter(join(path, 'second'), { adapterName: 'second' });
    loaded.setAdapter('first');
    assert.ok(allClose(out(loaded, x), first, 1e-3, 1e-3));
    loaded.setAdapter('second');
    assert.ok(allClose(out(loaded, x), second, 1e-3, 1e-3));
  });
});

test('test_vera_A_vera_B_share_memory / test_vera_lambda_dont_share_memory', () => {
  const peft = mlpSamePrng();
  const pair = sharedProjections(peft.model)!;
  for (const l of ['lin1', 'lin2']) {
    assert.equal(vera(peft, l).projections('default').A.storage, pair.A.storage);
    assert.equal(vera(peft, l).projections('default').B.storage, pair.B.storage);
  }
  assert.notEqual(pair.A.storage, pair.B.storage);
  const lam = (l: string, a: string, v: 'lambdaB' | 'lambdaD'): unknown => vera(peft, l).adapter(a)[v].storage;
  for (const v of ['lambdaB', 'lambdaD'] as const) {
    assert.notEqual(lam('lin1', 'default', v), lam('lin1', 'other', v));
    assert.notEqual(lam('lin1', 'default', v), lam('lin2', 'default', v));
    assert.notEqual(lam('lin1', 'other', v), lam('lin2', 'other', v));
  }
});

test('test_vera_different_shapes: the pair is (r, largest in) and (largest out, r)', () => {
  const base = new MLP4();
  const config = veraConfig({ targetModules: ['lin0', 'lin3'], initWeights: false });
  const peft = getPeftModel(base, config);
  const { A, B } = sharedProjections(peft.model)!;
  assert.deepEqual(A.shape, [config.r, 20]); // lin3's in
  assert.deepEqual(B.shape, [20, config.r]); // lin0's out
  out(peft, randomInput(5, 10, 4)); // runs
});

test('TestVeraInitialization: mixing save_projection, a larger input shape or a higher rank is refused', () => {
  const mlp2 = (): MLP => new MLP(); // lin0 10 → 20, lin1 20 → 2
  const p0 = getPeftModel(mlp2(), veraConfig({ targetModules: ['lin0'], initWeights: false, saveProjection: true }));
  throwsVera(
    () => p0.addAdapter('other', veraConfig({ targetModules: ['lin0'], initWeights: false, saveProjection: false })),
    /VeRA projection weights must be saved for all adapters or none, but got multiple different values: \[False, True\]/,
  );
  const p1 = getPeftModel(mlp2(), veraConfig({ targetModules: ['lin0'], r: 8 }));
  throwsVera(() => p1.addAdapter('other', veraConfig({ targetModules: ['lin1'] })), /vera_A has a size of 10 but 20 or greater is required/);
  assert.ok(!(p1.model.getSubmodule('lin1') instanceof VeraLinear), 'a refused adapter leaves no wrapper behind');
  const p2 = getPeftModel(mlp2(), veraConfig({ targetModules: ['lin0'], r: 123 }));
  throwsVera(() => p2.addAdapter('other', veraConfig({ targetModules: ['lin0'], r: 456 })), /vera_A has a size of 123 but 456 or greater is required/);
  assert.deepEqual(vera(p2, 'lin0').adapterNames(), ['default']);
});

test('the bias guard: only one adapter may train biases', () => {
  const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1'], bias: 'all' }));
  throwsVera(() => peft.addAdapter('other', veraConfig({ targetModules: ['lin1'], bias: 'vera_only' })), /VeraModel supports only 1 adapter with bias\. When using multiple adapters, set bias to 'none' for all adapters/);
  peft.addAdapter('plain', veraConfig({ targetModules: ['lin1'] })); // bias none is fine
});

test('a regex target on a second adapter does not reach into the first adapter\'s layer (self-targeting)', () => {
  const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: 'lin1.*', initWeights: false }), 'a');
  peft.addAdapter('b', veraConfig({ targetModules: 'lin1.*', initWeights: false }));
  assert.ok(vera(peft, 'lin1').base_layer.constructor.name === 'Linear', 'lin1.base_layer is not wrapped');
  assert.deepEqual(vera(peft, 'lin1').adapterNames(), ['a', 'b']);
  const keys = [...peft.adapterStateDict('b').keys()];
  assert.ok(!keys.some((k) => k.includes('base_layer.vera')), keys.join(', '));
  peft.setAdapter('b');
  const x = randomInput(3, 10, 5);
  const unmerged = out(peft, x);
  peft.merge();
  assert.ok(maxAbsDiff(out(peft, x), unmerged) < 1e-5, 'b applied once, merged or not');
});

test('negative and 64-bit projection_prng_key: accepted as torch takes them, saved and read back exactly', () => {
  withTmp((dir) => {
    for (const key of [-1, -(2 ** 63), 2n ** 64n - 1n, 2n ** 53n + 1n]) {
      const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1'], r: 4, projectionPrngKey: key, saveProjection: false }));
      const path = join(dir, String(key));
      peft.saveAdapter(path);
      const text = readFileSync(join(path, 'adapter_config.json'), 'utf8');
      assert.match(text, new RegExp(`"projection_prng_key": ${BigInt(key).toString()},`));
      const loaded = PeftModel.fromPretrained(new MLP4(), path);
      assert.equal(BigInt((loaded.peftConfig.get('default') as VeraConfig).projectionPrngKey), BigInt(key));
      assert.deepEqual(sharedProjections(loaded.model)!.A.toFloat32Array(), sharedProjections(peft.model)!.A.toFloat32Array());
    }
    // -1 and 2**32 - 1 have the same low 32 bits: the same pair
    const a = sharedProjections(getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1'], r: 2, projectionPrngKey: -1 })).model)!;
    const b = sharedProjections(getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1'], r: 2, projectionPrngKey: 2 ** 32 - 1 })).model)!;
    assert.deepEqual(a.A.toFloat32Array(), b.A.toFloat32Array());
    throwsVera(() => veraConfig({ projectionPrngKey: 2n ** 64n }), /projection_prng_key must be an integer in \[-2\^63, 2\^64\)/);
    throwsVera(() => veraConfig({ projectionPrngKey: -(2n ** 63n) - 1n }), /projection_prng_key/);
    throwsVera(() => veraConfig({ projectionPrngKey: 0.5 }), /projection_prng_key/);
    // two adapters whose keys differ as numbers are refused even where the low bits agree, as PEFT compares the keys
    const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1'], projectionPrngKey: -1 }));
    throwsVera(() => peft.addAdapter('x', veraConfig({ targetModules: ['lin1'], projectionPrngKey: 2 ** 32 - 1 })), /previous config had -1/);
  });
});

interface MultiCase {
  name: string;
  key: number;
  adapters: { name: string; r: number; targets: string[] }[];
  actives: string[][];
}

const multiSt = SafetensorsFile.open(join(peftDir, 'multi-adapter.safetensors'));
const multiCases = JSON.parse(readFileSync(join(peftDir, 'multi-adapter.json'), 'utf8')) as MultiCase[];

/** PEFT's test MLP with the fixture's weights. */
function fixtureMlp(): MLP4 {
  const m = new MLP4();
  for (const [path, t] of m.namedParameters()) t.copyFrom(multiSt.getFloat32(path));
  return m;
}

function setLambdas(peft: PeftModel, c: MultiCase, a: MultiCase['adapters'][number]): void {
  for (const layer of a.targets) {
    const v = vera(peft, layer).adapter(a.name);
    v.lambdaD.copyFrom(multiSt.getFloat32(`${c.name}.${a.name}.${layer}.lambda_d`));
    v.lambdaB.copyFrom(multiSt.getFloat32(`${c.name}.${a.name}.${layer}.lambda_b`));
  }
}

for (const c of multiCases) {
  test(`several VeRA adapters on one model compute with the first one's pair, as PEFT (${c.name}, PyTorch fixture)`, () => {
    const x = Tensor.fromArray(multiSt.getFloat32('x'), [5, 10]);
    const [first, ...rest] = c.adapters;
    const peft = getPeftModel(fixtureMlp(), veraConfig({ targetModules: first.targets, r: first.r, projectionPrngKey: c.key }), first.name);
    for (const a of rest) peft.addAdapter(a.name, veraConfig({ targetModules: a.targets, r: a.r, projectionPrngKey: c.key }));
    for (const a of c.adapters) setLambdas(peft, c, a);
    const pair = sharedProjections(peft.model)!;
    assert.deepEqual(pair.A.toFloat32Array(), multiSt.getFloat32(`${c.name}.vera_A`), 'the pair is the first adapter\'s');
    assert.deepEqual(pair.B.toFloat32Array(), multiSt.getFloat32(`${c.name}.vera_B`));
    for (const active of c.actives) {
      peft.setAdapter(active);
      const want = multiSt.getFloat32(`${c.name}.out.${active.join('+')}`);
      const got = out(peft, x);
      assert.ok(maxAbsDiff(got, want) < 2e-5, `${active.join('+')}: ${maxAbsDiff(got, want)}`);
      peft.merge();
      assert.ok(maxAbsDiff(out(peft, x), want) < 1e-4, `${active.join('+')} merged`);
      peft.unmerge();
    }
    // each adapter alone on a fresh model makes its own pair from its own targets (PEFT's behaviour
    // too: why an adapter trained beside a larger first one reloads differently alone)
    for (const a of c.adapters) {
      const alone = getPeftModel(fixtureMlp(), veraConfig({ targetModules: a.targets, r: a.r, projectionPrngKey: c.key }), a.name);
      setLambdas(alone, c, a);
      assert.ok(maxAbsDiff(out(alone, x), multiSt.getFloat32(`${c.name}.alone.${a.name}`)) < 2e-5, `${a.name} alone`);
    }
  });
}

test('an adapter with a lower r than the first (but not 1) is accepted, and refused at forward in one line, as PEFT fails there', () => {
  const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1'], r: 8 }));
  peft.addAdapter('low', veraConfig({ targetModules: ['lin1'], r: 4 }));
  peft.setAdapter('low');
  throwsVera(() => out(peft, randomInput(2, 10)), /VeRA adapter 'low' has r=4 but the model's shared vera_A has 8 rows/);
  throwsVera(() => peft.merge(), /has r=4/);
});

test('the shared pair outlives the adapter that made it, and a second adapter saved from the model carries it', () => {
  withTmp((dir) => {
    const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin0', 'lin1'], r: 4, initWeights: false }), 'big');
    peft.addAdapter('small', veraConfig({ targetModules: ['lin0'], r: 4, initWeights: false }));
    const pair = sharedProjections(peft.model)!;
    peft.deleteAdapter('big');
    assert.equal(sharedProjections(peft.model), pair);
    // as PEFT: a layer picks its next adapter among all the model's VeRA adapters (they share the
    // pair's dict), so lin1, which carries none now, reports 'small' too (and skips it in forward)
    assert.deepEqual([...peft.activeAdapters], ['small']);
    assert.deepEqual(vera(peft, 'lin1').activeAdapters, ['small']);
    const x = randomInput(4, 10, 6);
    const want = out(peft, x);
    peft.saveAdapter(join(dir, 'small'));
    const st = SafetensorsFile.open(join(dir, 'small', 'adapter_model.safetensors'));
    assert.deepEqual(st.info('base_model.vera_A').shape, [4, 20], 'the shared (first adapter\'s) A, as PEFT saves it');
    // the compact form is refused: this adapter's key alone regenerates another (smaller) pair
    throwsVera(() => peft.saveAdapter(join(dir, 'c'), { saveProjection: false }), /shared by the model's adapters\) is not what projection_prng_key 0 regenerates/);
    // loaded alone, its own pair is (4, 10): the stored (4, 20) does not fit, as PyTorch's load_state_dict refuses it
    throwsVera(() => PeftModel.fromPretrained(new MLP4(), join(dir, 'small')), /base_model\.vera_A has shape \[4, 20\], the model needs \[4, 10\]/);
    // beside an adapter whose pair has that shape it loads, and computes as before
    const host = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin0', 'lin1'], r: 4 }), 'host');
    host.loadAdapter(join(dir, 'small'), { adapterName: 'small' });
    host.setAdapter('small');
    assert.ok(maxAbsDiff(out(host, x), want) < 1e-6);
  });
});

// ---------------------------------------------------------------- deliberate differences (README: "Several adapters on one model")

test('deliberate: a refused loadAdapter or fromPretrained leaves the model as it was', () => {
  withTmp((dir) => {
    const src = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin2', 'lin3'], r: 4, projectionPrngKey: 5 }));
    src.saveAdapter(join(dir, 'k5'));
    const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1'], r: 4 }));
    const before = [...peft.model.namedModules()].map(([p, m]) => `${p}:${m.constructor.name}`);
    throwsVera(() => peft.loadAdapter(join(dir, 'k5'), { adapterName: 'k5' }), /Vera PRNG initialisation key must be the same/);
    assert.deepEqual([...peft.model.namedModules()].map(([p, m]) => `${p}:${m.constructor.name}`), before);
    assert.deepEqual([...peft.peftConfig.keys()], ['default']);
    // a file whose tensors do not fit: the layers wrapped for it are unwrapped again
    const other = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1'], r: 8 }));
    other.saveAdapter(join(dir, 'r8'));
    const cfgPath = join(dir, 'r8', 'adapter_config.json');
    const cfg = JSON.parse(readFileSync(cfgPath, 'utf8')) as Record<string, unknown>;
    writeFileSync(cfgPath, JSON.stringify({ ...cfg, r: 4, target_modules: ['lin1', 'lin2'] }));
    throwsVera(() => peft.loadAdapter(join(dir, 'r8'), { adapterName: 'bad' }), /adapter_model\.safetensors/);
    assert.deepEqual([...peft.model.namedModules()].map(([p, m]) => `${p}:${m.constructor.name}`), before, 'lin2 unwrapped again');
    const fresh = new MLP4();
    const freshModules = [...fresh.namedModules()].map(([p, m]) => `${p}:${m.constructor.name}`);
    throwsVera(() => PeftModel.fromPretrained(fresh, join(dir, 'r8')), /adapter_model\.safetensors/);
    assert.deepEqual([...fresh.namedModules()].map(([p, m]) => `${p}:${m.constructor.name}`), freshModules);
  });
});

test('deliberate: merge is all or nothing when a safe merge meets NaN', () => {
  const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin0', 'lin1', 'lin2'], r: 4, initWeights: false }));
  const weights = (): Float32Array[] => ['lin0', 'lin1', 'lin2'].map((l) => vera(peft, l).base_layer.weight.toFloat32Array());
  const w0 = weights();
  const b = vera(peft, 'lin2').adapter('default').lambdaB;
  b.copyFrom(b.toFloat32Array().map((v, i) => (i === 3 ? Number.NaN : v)));
  throwsVera(() => peft.merge(undefined, { safe: true }), /NaN\/Inf/);
  assert.deepEqual(weights(), w0, 'lin0 and lin1, merged before lin2 failed, are unmerged again');
  assert.ok(['lin0', 'lin1', 'lin2'].every((l) => !vera(peft, l).merged));
});

test('deliberate: an adapter loaded for inference stays frozen when activated or re-enabled', () => {
  withTmp((dir) => {
    getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1'], r: 4 })).saveAdapter(dir);
    const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1'], r: 4 }), 'train');
    peft.loadAdapter(dir, { adapterName: 'frozen' });
    peft.setAdapter('frozen');
    peft.withAdaptersDisabled(() => undefined);
    assert.deepEqual(peft.trainableParameters().map(([n]) => n), []);
    peft.setAdapter('train');
    assert.deepEqual(peft.trainableParameters().map(([n]) => n).sort(), ['lin1.vera_lambda_b.train', 'lin1.vera_lambda_d.train']);
    peft.loadAdapter(dir, { adapterName: 'more', isTrainable: true });
    assert.deepEqual(peft.trainableParameters().map(([n]) => n).sort(), ['lin1.vera_lambda_b.train', 'lin1.vera_lambda_d.train'], 'loading another adapter leaves the active one trainable');
  });
});

test('deliberate: after every VeRA adapter is deleted, the next one makes a fresh pair', () => {
  const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1'], r: 4 }));
  peft.deleteAdapter('default');
  assert.deepEqual([...peft.activeAdapters], []);
  assert.equal(sharedProjections(peft.model), null);
  const x = randomInput(3, 10, 7);
  assert.deepEqual(out(peft, x), noGrad(() => new MLP4().forward(x)).toFloat32Array(), 'no adapter: the base model');
  peft.addAdapter('again', veraConfig({ targetModules: ['lin0', 'lin1'], r: 8 }));
  assert.deepEqual(sharedProjections(peft.model)!.A.shape, [8, 20]);
  peft.setAdapter('again');
  out(peft, x);
});

test('deliberate: disabling adapters freezes the biases an adapter trains', () => {
  const peft = getPeftModel(new MLP4(), veraConfig({ targetModules: ['lin1'], r: 4, bias: 'vera_only' }));
  assert.ok(peft.trainableParameters().some(([n]) => n === 'lin1.base_layer.bias'));
  peft.withAdaptersDisabled(() => assert.deepEqual(peft.trainableParameters(), []));
  assert.ok(peft.trainableParameters().some(([n]) => n === 'lin1.base_layer.bias'));
});

test("deliberate: targetModules ['all-linear'] (a one-name list) means all-linear", () => {
  const adapted = (p: PeftModel): string[] => [...p.model.namedModules()].filter(([, m]) => m instanceof VeraLinear).map(([path]) => path);
  assert.deepEqual(adapted(getPeftModel(new MLP4(), veraConfig({ targetModules: ['all-linear'], r: 2 }))), ['lin0', 'lin1', 'lin2', 'lin3']);
  assert.deepEqual(adapted(getPeftModel(new MLP4(), veraConfig({ targetModules: 'all-linear', r: 2 }))), ['lin0', 'lin1', 'lin2', 'lin3']);
});
