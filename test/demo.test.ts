// `vera demo` on the embedded model (data/fortune-llama), shortened: the user's held-out
// perplexity falls, the adapter is written and loads, merged equals unmerged, VeRA's file is
// smaller than LoRA's; bad flags give one line. The story runs on the native backend only (on the
// TypeScript reference it takes minutes); its parts (training, merging, evaluation) are tested on both.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runVera, withTmp } from './helpers.js';

const native = process.env['VERA_BACKEND'] !== 'ts';

test('vera demo: a user adapter lowers held-out perplexity; merged == unmerged; VeRA bytes < LoRA bytes; --out loads', { skip: !native && 'native backend only (minutes on the TypeScript reference)' }, async () => {
  await withTmp(async (dir) => {
    const out = join(dir, 'adapter');
    const r = await runVera(['demo', '--steps', '40', '--batch-size', '8', '--samples', '1', '--max-new-tokens', '12', '--quiet', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const m = /held-out perplexity ([\d.]+) → ([\d.]+)/.exec(r.stdout);
    assert.ok(m, r.stdout);
    const [before, after] = [Number(m[1]), Number(m[2])];
    assert.ok(before > 50 && before < 500, `base perplexity ${before}`);
    assert.ok(after < before * 0.7, `perplexity ${before} → ${after}`);
    assert.match(r.stdout, /merged vs unmerged logits: max \|diff\| = [\d.e+-]+ \(agree\)/);
    const vera = Number(/VeRA r=256: ([\d,]+) bytes/.exec(r.stdout)![1].replace(/,/g, ''));
    const lora = Number(/LoRA r=8: ([\d,]+) bytes/.exec(r.stdout)![1].replace(/,/g, ''));
    assert.ok(vera * 5 < lora, `VeRA ${vera} bytes, LoRA ${lora}`);
    // the compact form: vectors only, F16, no A/B in the file
    const config = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config['peft_type'], 'VERA');
    assert.equal(config['save_projection'], false);
    const ppl = await runVera(['perplexity', '--model', 'data/fortune-llama', '--adapter', out, '--token-ids', writeIds(dir), '--json']);
    assert.equal(ppl.code, 0, ppl.stderr);
  });
});

function writeIds(dir: string): string {
  const file = join(dir, 'ids.json');
  // a Star Trek-like line in the model's own vocabulary (ids below 4096)
  writeFileSync(file, JSON.stringify([0, 464, 300, 120, 88, 1024, 77, 0]));
  return file;
}

test('vera demo: an unknown user or a model folder without config.json is one line', async () => {
  const r = await runVera(['demo', '--user', 'nobody', '--quiet']);
  assert.notEqual(r.code, 0);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /--user nobody: no such user in .*\(users: riddles, startrek, tao, zippy\)/);
  await withTmp(async (dir) => {
    const r2 = await runVera(['demo', '--model', dir, '--quiet']);
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr.trim(), /^vera: --model .*: no config\.json/);
    assert.ok(existsSync(dir));
  });
});
