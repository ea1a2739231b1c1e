// NaN and Inf cannot hide: loading refuses non-finite weights and adapters (naming the tensor)
// unless asked to allow them, a NaN perplexity is a failure, merge refuses results the output dtype
// cannot hold; VeRA configs refuse fields that would change the adapter's meaning, and `inspect`
// refuses an r its tensors contradict.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseJsonExact } from '../src/io/json.js';
import { SafetensorsFile, serializeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { loadPretrained } from '../src/models/index.js';
import { PeftModel, parsePeftConfig } from '../src/peft/index.js';
import { throwsVera, withTmp } from './helpers.js';

const root = new URL('../../', import.meta.url).pathname;
const fx = (name: string): string => join(root, 'test/fixtures', name);
const bin = join(root, 'bin/vera.js');

function vera(...args: string[]): { code: number | null; signal: string | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Non-zero exit (no signal) with exactly one stderr line matching `pattern`. */
function assertOneLineFailure(r: ReturnType<typeof vera>, pattern: RegExp): void {
  assert.equal(r.signal, null, `killed by ${r.signal}`);
  assert.notEqual(r.code, 0, `should fail: ${r.stdout}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], pattern);
}

/** Copy fixture folder `name` into `dir`, rewriting tensors of `file` through `edit`. */
function editedCopy(name: string, dir: string, file: string, edit: (tensors: Record<string, TensorToWrite>) => void): string {
  const out = join(dir, `${name}-edited`);
  cpSync(fx(name), out, { recursive: true });
  const st = SafetensorsFile.open(join(out, file));
  const tensors: Record<string, TensorToWrite> = {};
  for (const k of st.keys()) {
    const info = st.info(k);
    tensors[k] = { data: st.getFloat32(k), shape: info.shape, dtype: info.dtype === 'F16' || info.dtype === 'BF16' ? info.dtype : 'F32' };
  }
  edit(tensors);
  writeFileSync(join(out, file), serializeSafetensors(tensors, { format: 'pt' }));
  return out;
}

test('a base checkpoint holding NaN is refused naming the tensor; allowNonFinite loads it', () => {
  withTmp((dir) => {
    const model = editedCopy('gpt2-tiny', dir, 'model.safetensors', (t) => {
      t['transformer.h.1.attn.c_attn.weight'].data[5] = NaN;
    });
    throwsVera(() => loadPretrained(model), /model\.safetensors: transformer\.h\.1\.attn\.c_attn\.weight contains NaN or Inf \(NaN at index 5\)/);
    const loaded = loadPretrained(model, { allowNonFinite: true });
    const w = new Map(loaded.model.namedParameters()).get('transformer.h.1.attn.c_attn.weight');
    assert.ok(w !== undefined && Number.isNaN(w.data()[5]));
    // the CLI: one line, non-zero; with the flag, the NaN result itself fails
    assertOneLineFailure(vera('perplexity', '--model', model, '--token-ids', fx('token_ids.json')), /h\.1\.attn\.c_attn\.weight contains NaN/);
    const allowed = vera('perplexity', '--model', model, '--token-ids', fx('token_ids.json'), '--allow-non-finite');
    assertOneLineFailure(allowed, /^vera: perplexity: the mean NLL over \d+ tokens is NaN/);
    assert.equal(allowed.stdout, '');
  });
});

test('an adapter holding Inf is refused by PeftModel.fromPretrained unless allowNonFinite', () => {
  withTmp((dir) => {
    const adapter = editedCopy('gpt2-tiny-vera', dir, 'adapter_model.safetensors', (t) => {
      t['base_model.model.transformer.h.0.mlp.c_fc.vera_lambda_b'].data[3] = -Infinity;
    });
    throwsVera(() => PeftModel.fromPretrained(loadPretrained(fx('gpt2-tiny')).model, adapter), /h\.0\.mlp\.c_fc\.vera_lambda_b contains NaN or Inf \(-Infinity at index 3\)/);
    const peft = PeftModel.fromPretrained(loadPretrained(fx('gpt2-tiny')).model, adapter, { allowNonFinite: true });
    assert.equal(peft.peftConfig.size, 1);
    // merging it (safe) is still refused, naming the weight it would poison
    throwsVera(() => peft.mergeAndUnload({ safe: true }), /would put NaN\/Inf into transformer\.h\.0\.mlp\.c_fc\.weight \((NaN|-?Infinity) at index \d+\)/);
  });
});

test('vera merge refuses a result its output dtype cannot hold (F32 overflow, F16 range), naming the tensor', () => {
  withTmp((dir) => {
    const huge = editedCopy('gpt2-tiny-vera', dir, 'adapter_model.safetensors', (t) => {
      t['base_model.model.transformer.h.1.attn.c_proj.vera_lambda_b'].data.fill(3e38);
      t['base_model.model.transformer.h.1.attn.c_proj.vera_lambda_d'].data.fill(3e38);
    });
    const out = join(dir, 'out');
    // finite in the file, Inf once merged in float32
    assertOneLineFailure(vera('merge', '--model', fx('gpt2-tiny'), '--adapter', huge, '--out', out), /would put NaN\/Inf into transformer\.h\.1\.attn\.c_proj\.weight/);
    assert.ok(!existsSync(out));
    // finite in float32, beyond F16's 65504: the F16 checkpoint cannot store it
    const big = editedCopy('gpt2-tiny-vera', dir, 'adapter_model.safetensors', (t) => {
      t['base_model.model.transformer.h.1.attn.c_proj.vera_lambda_b'].data.fill(1e7);
    });
    assertOneLineFailure(vera('merge', '--model', fx('gpt2-tiny-f16'), '--adapter', big, '--out', out), /h\.1\.attn\.c_proj\.weight would hold -?[\d.e+]+ \(at index \d+\), beyond F16's range/);
    assert.ok(!existsSync(out));
    // the same adapter into the F32 checkpoint is representable and merges
    const ok = vera('merge', '--model', fx('gpt2-tiny'), '--adapter', big, '--out', out, '--quiet');
    assert.equal(ok.code, 0, ok.stderr);
  });
});

test('VeRA adapter_config.json: meaning-changing fields are refused; unknown ones are listed', () => {
  const base = JSON.parse(readFileSync(fx('gpt2-tiny-vera/adapter_config.json'), 'utf8')) as Record<string, unknown>;
  throwsVera(() => parsePeftConfig({ ...base, lora_bias: true }, 'a/adapter_config.json'), /^a\/adapter_config\.json: field "lora_bias" is set \(true\), which this version does not support$/);
  // use_dora is DVoRA here (read as a boolean; anything else is refused in one line)
  throwsVera(() => parsePeftConfig({ ...base, use_dora: 'yes' }, 'f'), /^f: field "use_dora" must be true or false, got "yes"$/);
  throwsVera(() => parsePeftConfig({ ...base, rank_pattern: { c_attn: 4 } }, 'f'), /field "rank_pattern" is set/);
  throwsVera(() => parsePeftConfig({ ...base, trainable_token_indices: [1, 2] }, 'f'), /field "trainable_token_indices" is set/);
  // an integer past 2^53 reads as a bigint (exact JSON): the refusal must still be one line (found by the fuzzer, seed 99)
  for (const type of ['VERA', 'LORA']) {
    const json = parseJsonExact(`{"peft_type": "${type}", "r": 4, "target_modules": ["c_attn"], "use_dora": 9007199254740994, "init_lora_weights": 18446744073709551615}`);
    throwsVera(() => parsePeftConfig(json, 'f'), /^f: field "(use_dora|init_lora_weights)" (must be true or false, got 9007199254740994|must be true, false or a name, got 18446744073709551615)/);
  }
  // at their defaults (as PEFT writes them) they are harmless
  assert.doesNotThrow(() => parsePeftConfig({ ...base, use_dora: false, rank_pattern: {} }, 'f'));
  const parsed = parsePeftConfig({ ...base, some_future_field: 1 }, 'f');
  assert.deepEqual(parsed.ignoredFields, ['some_future_field']);
});

test('vera inspect --adapter refuses an r its stored tensors contradict; NaN needs --allow-non-finite', () => {
  withTmp((dir) => {
    for (const name of ['gpt2-tiny-vera', 'gpt2-tiny-vera-noproj', 'gpt2-tiny-lora']) {
      const bad = join(dir, name);
      cpSync(fx(name), bad, { recursive: true });
      const cfg = JSON.parse(readFileSync(join(bad, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
      writeFileSync(join(bad, 'adapter_config.json'), JSON.stringify({ ...cfg, r: 5 }));
      assertOneLineFailure(vera('inspect', '--adapter', bad), /adapter_model\.safetensors: .*(vera_lambda_d|vera_A|lora_A\.weight|lora_B\.weight) has shape \[[\d, ]+\], but adapter_config\.json says r = 5$/);
    }
    const nan = editedCopy('gpt2-tiny-vera', dir, 'adapter_model.safetensors', (t) => {
      t['base_model.model.transformer.h.0.attn.c_attn.vera_lambda_d'].data[0] = NaN;
    });
    assertOneLineFailure(vera('inspect', '--adapter', nan), /vera_lambda_d contains NaN or Inf/);
    const allowed = vera('inspect', '--adapter', nan, '--json', '--allow-non-finite');
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.equal(JSON.parse(allowed.stdout).r, 16);
  });
});
