// End-to-end tests of `vera merge`, `perplexity`, `inspect` and `demo` against PyTorch fixtures,
// run as a user would: the built bin in a child process.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsFile, float16ToFloat32 } from '../src/io/safetensors.js';
import { serializeSafetensors } from '../src/io/safetensors.js';
import { withTmp } from './helpers.js';

const root = new URL('../../', import.meta.url).pathname;
const fx = (name: string): string => join(root, 'test/fixtures', name);
const bin = join(root, 'bin/vera.js');

function vera(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}


/** Same names, shapes, dtypes; values within tol (F16: within one unit in the last place). */
function assertSameCheckpoint(outFile: string, refFile: string, tol: number): void {
  const out = SafetensorsFile.open(outFile);
  const ref = SafetensorsFile.open(refFile);
  assert.deepEqual(out.keys().sort(), ref.keys().sort());
  for (const k of ref.keys()) {
    const a = out.info(k);
    const b = ref.info(k);
    assert.equal(a.dtype, b.dtype, `${k} dtype`);
    assert.deepEqual(a.shape, b.shape, `${k} shape`);
    const x = out.getFloat32(k);
    const y = ref.getFloat32(k);
    for (let i = 0; i < x.length; i++) {
      const allowed = a.dtype === 'F16' ? Math.abs(float16ToFloat32(0x3c01) - 1) * Math.max(Math.abs(y[i]), 6.1e-5) * 1.01 : tol;
      assert.ok(Math.abs(x[i] - y[i]) <= allowed, `${k}[${i}]: ${x[i]} vs ${y[i]}`);
    }
  }
}

for (const [base, adapter, merged, tol] of [
  ['gpt2-tiny', 'gpt2-tiny-vera', 'gpt2-tiny-vera-merged', 1e-5],
  ['gpt2-tiny-sharded', 'gpt2-tiny-vera', 'gpt2-tiny-vera-merged', 1e-5],
  ['gpt2-tiny', 'gpt2-tiny-vera-noproj', 'gpt2-tiny-vera-merged', 1e-6],
  ['gpt2-tiny', 'gpt2-tiny-lora', 'gpt2-tiny-lora-merged', 1e-5],
  ['gpt2-tiny-f16', 'gpt2-tiny-vera', 'gpt2-tiny-f16-vera-merged', 0],
] as const) {
  test(`vera merge ${base} + ${adapter} equals the float64 PyTorch merge`, () => {
    withTmp((dir) => {
      const out = join(dir, 'merged');
      const r = vera('merge', '--model', fx(base), '--adapter', fx(adapter), '--out', out);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')), JSON.parse(readFileSync(join(fx(base), 'config.json'), 'utf8')));
      if (base === 'gpt2-tiny-sharded') {
        // same names as the sharded input (no prefix, attn.bias buffers kept)
        const index = JSON.parse(readFileSync(join(fx(base), 'model.safetensors.index.json'), 'utf8'));
        assert.deepEqual(SafetensorsFile.open(join(out, 'model.safetensors')).keys().sort(), Object.keys(index.weight_map).sort());
      } else assertSameCheckpoint(join(out, 'model.safetensors'), join(fx(merged), 'model.safetensors'), tol);
    });
  });
}

test('vera merge carries the tokenizer files along', () => {
  withTmp((dir) => {
    const model = join(dir, 'model');
    cpSync(fx('gpt2-tiny'), model, { recursive: true });
    writeFileSync(join(model, 'tokenizer.json'), '{"version": "1.0"}');
    writeFileSync(join(model, 'notes.txt'), 'not a model file');
    const out = join(dir, 'merged');
    const r = vera('merge', '--model', model, '--adapter', fx('gpt2-tiny-vera'), '--out', out, '--quiet');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '');
    assert.equal(readFileSync(join(out, 'tokenizer.json'), 'utf8'), '{"version": "1.0"}');
    assert.ok(!existsSync(join(out, 'notes.txt')));
  });
});

test('vera perplexity matches float64 PyTorch GPT-2 with and without adapters', () => {
  const ref = JSON.parse(readFileSync(fx('perplexity.json'), 'utf8'));
  for (const [name, adapter] of [['base', null], ['vera', 'gpt2-tiny-vera'], ['lora', 'gpt2-tiny-lora']] as const) {
    const args = ['perplexity', '--model', fx('gpt2-tiny'), '--token-ids', fx('token_ids.json'), '--json'];
    if (adapter) args.push('--adapter', fx(adapter));
    const r = vera(...args);
    assert.equal(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout);
    assert.equal(got.tokens, ref[name].tokens);
    assert.ok(Math.abs(got.nll - ref[name].nll) < 1e-4, `${name}: nll ${got.nll} vs ${ref[name].nll}`);
    assert.ok(Math.abs(got.perplexity / ref[name].perplexity - 1) < 1e-4);
  }
});

test('vera inspect reports parameters, bytes and per-layer norms', () => {
  const r = vera('inspect', '--adapter', fx('gpt2-tiny-vera'), '--json');
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout);
  assert.equal(rep.peftType, 'VERA');
  // 2 layers × (c_attn 96 + attn.c_proj 32 + c_fc 128 + mlp.c_proj 32) outputs + 8 layers × r 16
  assert.equal(rep.trainableParams, 2 * (96 + 32 + 128 + 32) + 8 * 16);
  assert.equal(rep.projectionParams, 16 * 128 + 128 * 16);
  assert.equal(rep.layers.length, 8);
  assert.ok(rep.layers.every((l: { norms: Record<string, number> }) => l.norms.lambda_d > 0 && l.norms.lambda_b > 0));
  const m = vera('inspect', '--model', fx('gpt2-tiny'), '--json');
  assert.equal(m.code, 0, m.stderr);
  assert.equal(JSON.parse(m.stdout).linearLayers.filter((l: { module: string }) => l.module.endsWith('c_attn')).length, 2);
  const text = vera('inspect', '--adapter', fx('gpt2-tiny-vera'));
  assert.match(text.stdout, /transformer\.h\.1\.mlp\.c_fc/);
});

test('bad input: one line on stderr, non-zero exit, no partial output', () => {
  withTmp((dir) => {
    const out = join(dir, 'out');
    const cases: [string[], RegExp][] = [
      [['merge', '--model', join(dir, 'nope'), '--adapter', fx('gpt2-tiny-vera'), '--out', out], /config\.json/],
      [['merge', '--model', fx('gpt2-tiny'), '--adapter', join(dir, 'nope'), '--out', out], /adapter_config\.json/],
      [['merge', '--model', fx('gpt2-tiny'), '--adapter', fx('gpt2-tiny-vera'), '--out', out, '--bogus'], /unknown option '--bogus'/],
      [['perplexity', '--model', fx('gpt2-tiny'), '--json'], /--text FILE or --token-ids/],
    ];
    // an adapter whose shapes do not fit: the LoRA adapter with its r changed in the config
    const badShape = join(dir, 'bad-shape');
    cpSync(fx('gpt2-tiny-lora'), badShape, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(badShape, 'adapter_config.json'), 'utf8'));
    writeFileSync(join(badShape, 'adapter_config.json'), JSON.stringify({ ...cfg, r: 3 }));
    cases.push([['merge', '--model', fx('gpt2-tiny'), '--adapter', badShape, '--out', out], /lora_A\.weight has shape \[4, 32\], but adapter_config\.json says r = 3/]);
    // NaN in an adapter
    const nan = join(dir, 'nan');
    cpSync(fx('gpt2-tiny-vera-noproj'), nan, { recursive: true });
    const st = SafetensorsFile.open(join(nan, 'adapter_model.safetensors'));
    const tensors: Record<string, { data: Float32Array; shape: number[] }> = {};
    for (const k of st.keys()) tensors[k] = { data: st.getFloat32(k), shape: st.info(k).shape };
    tensors[st.keys()[0]].data[0] = NaN;
    writeFileSync(join(nan, 'adapter_model.safetensors'), serializeSafetensors(tensors));
    cases.push([['merge', '--model', fx('gpt2-tiny'), '--adapter', nan, '--out', out], /NaN/]);
    // a safetensors header that lies about its size
    const lying = join(dir, 'lying');
    cpSync(fx('gpt2-tiny'), lying, { recursive: true });
    const bytes = readFileSync(join(lying, 'model.safetensors'));
    bytes.writeUInt32LE(bytes.length * 2, 0);
    writeFileSync(join(lying, 'model.safetensors'), bytes);
    cases.push([['merge', '--model', lying, '--adapter', fx('gpt2-tiny-vera'), '--out', out], /model\.safetensors/]);
    // target modules that match nothing
    const nomatch = join(dir, 'nomatch');
    cpSync(fx('gpt2-tiny-vera'), nomatch, { recursive: true });
    const vcfg = JSON.parse(readFileSync(join(nomatch, 'adapter_config.json'), 'utf8'));
    writeFileSync(join(nomatch, 'adapter_config.json'), JSON.stringify({ ...vcfg, target_modules: ['q_proj'] }));
    cases.push([['merge', '--model', fx('gpt2-tiny'), '--adapter', nomatch, '--out', out], /matched no linear layer/]);
    for (const [args, pattern] of cases) {
      const r = vera(...args);
      assert.notEqual(r.code, 0, `${args.join(' ')} should fail`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line for ${args.join(' ')}: ${r.stderr}`);
      assert.match(lines[0], pattern);
      assert.ok(!existsSync(out), `no output for ${args.join(' ')}`);
    }
  });
});

test('vera demo fashion-mnist (short run): finetuned classes gain accuracy, merged == unmerged', () => {
  const r = vera('demo', 'fashion-mnist', '--base-steps', '120', '--vera-steps', '120', '--quiet');
  assert.equal(r.code, 0, r.stderr);
  const m = /finetuned classes:\s+([\d.]+)% →\s+([\d.]+)%/.exec(r.stdout);
  assert.ok(m, r.stdout);
  assert.ok(Number(m[2]) > Number(m[1]) + 30, `finetuned classes ${m[1]}% → ${m[2]}%`);
  assert.match(r.stdout, /merged vs unmerged logits: max \|diff\| = [\d.e+-]+ \(agree\)/);
  assert.match(r.stdout, /LoRA adapter at r=64/);
});
