// The examples in examples/ (compiled to dist/examples/ with the suite, so tsc type-checks them)
// run as a user runs them, one child process each on tiny settings, on the suite's backend. Each
// must exit 0 and print the facts it exists to show: per-user outputs equal to the adapters alone,
// a merged model that answers as the unmerged one, folders with the files they should hold.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withTmp } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const EXAMPLES = ['peft-adapter-generate', 'per-user-adapters', 'merge-and-export', 'finetune-text-folder', 'classify-with-head'];

interface Run { code: number | null; stdout: string; stderr: string }

function runExample(name: string, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'dist', 'examples', `${name}.js`), ...args], { cwd: ROOT, env: process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function runOk(name: string, args: string[]): Promise<string> {
  const r = await runExample(name, args);
  assert.equal(r.code, 0, `${name} ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** Every "max |logit diff| = X" the output prints. */
const diffs = (out: string): number[] => [...out.matchAll(/max \|logit diff\| = (\S+)/g)].map((m) => Number(m[1]));

const TINY = ['--steps', '2', '--r', '16'];

// the runs use the embedded 5.4M model: seconds on the native backend, minutes on the TypeScript reference
const native = process.env['VERA_BACKEND'] !== 'ts';
const nativeOnly = { skip: !native && 'native backend only (minutes on the TypeScript reference)' };

test('the examples read as user code: imports from vera and node: only, no casts, no any', () => {
  const dir = path.join(ROOT, 'examples');
  const files = readdirSync(dir).filter((f) => f.endsWith('.ts'));
  for (const name of EXAMPLES) assert.ok(files.includes(`${name}.ts`), `examples/${name}.ts`);
  for (const f of files) {
    const src = readFileSync(path.join(dir, f), 'utf8').replace(/\/\/.*$/gm, ''); // code only, comments out
    for (const m of src.matchAll(/from '([^']+)'/g)) assert.match(m[1], /^(vera|node:.*|\.\/shared\.js)$/, `${f} imports ${m[1]}`);
    assert.doesNotMatch(src, /\bas (unknown|any|[A-Z]\w*)\b|: any\b|<any>|@ts-/, `${f}: a cast, any or a @ts- comment`);
  }
});

test('per-user-adapters: each user\'s output in the shared batch equals that adapter alone', nativeOnly, async () => {
  const out = await runOk('per-user-adapters', [...TINY, '--users', 'startrek,zippy', '--max-new-tokens', '6']);
  assert.match(out, /startrek: adapter trained \(\d+ parameters\), \d+ bytes on disk/);
  assert.match(out, /served 3 requests together/);
  assert.equal(out.match(/same tokens as the adapter alone: yes/g)?.length, 3, out);
  assert.match(out, /every user's output equals that adapter alone: yes/);
  assert.doesNotMatch(out, /\bNO\b/);
});

test('merge-and-export, then peft-adapter-generate on the exported adapter', nativeOnly, async () => {
  await withTmp(async (dir) => {
    const out = await runOk('merge-and-export', [...TINY, '--out', dir]);
    // the adapter in PEFT's layout, full and compact, and the merged model folder with its tokenizer
    for (const sub of ['adapter', 'adapter-compact']) {
      assert.deepEqual(readdirSync(path.join(dir, sub)).sort(), ['adapter_config.json', 'adapter_model.safetensors'], sub);
    }
    const config = JSON.parse(readFileSync(path.join(dir, 'adapter', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config['peft_type'], 'VERA');
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json']) {
      assert.ok(existsSync(path.join(dir, 'merged', f)), `merged/${f}`);
    }
    const [adapterDiff, mergedDiff] = diffs(out);
    assert.ok(adapterDiff === 0, `reloaded adapter: ${adapterDiff}`);
    assert.ok(mergedDiff <= 1e-4, `merged vs unmerged: ${mergedDiff}`);
    assert.match(out, /vs unmerged adapter: .*: equal/);
    assert.match(out, /the merged folder's tokenizer encodes as the base's: yes/);

    const gen = await runOk('peft-adapter-generate', ['--adapter', path.join(dir, 'adapter'), '--max-new-tokens', '6']);
    assert.doesNotMatch(gen, /trained a VeRA adapter/); // the given adapter, none made
    assert.match(gen, /^base model: {3}".*" \(6 tokens, length\)$/m);
    assert.match(gen, /^with adapter: ".*" \(6 tokens, length\)$/m);
    assert.match(gen, /^sampled \(temperature 0\.8, seed 1\): /m);
    assert.match(gen, /TextGenerator\.fromPretrained\(model, \{ adapter \}\) gives the same text: yes/);
  });
});

test('peft-adapter-generate makes its own adapter when none is given', nativeOnly, async () => {
  const out = await runOk('peft-adapter-generate', [...TINY, '--max-new-tokens', '4']);
  assert.match(out, /trained a VeRA adapter for 2 steps on the startrek fortunes: .*adapter_config\.json \(\d+ B\), adapter_model\.safetensors \(\d+ B\)/);
  assert.match(out, /gives the same text: yes/);
});

test('finetune-text-folder: held-out perplexity falls; best/ and last/ in --out; the reloaded best gives its recorded loss', nativeOnly, async () => {
  await withTmp(async (dir) => {
    const out = await runOk('finetune-text-folder', ['--steps', '8', '--eval-every', '4', '--fortunes', '30', '--r', '16', '--max-new-tokens', '6', '--out', dir]);
    const before = Number(/held-out perplexity before: (\S+)/.exec(out)?.[1]);
    const after = Number(/held-out perplexity after: (\S+)/.exec(out)?.[1]);
    assert.ok(after < before, `perplexity ${before} → ${after}\n${out}`);
    const evals = [...out.matchAll(/^step (\d+): held-out perplexity (\S+)/gm)].map((m) => Number(m[1]));
    assert.deepEqual(evals, [4, 8]);
    assert.match(out, /wrote 30 startrek fortunes as \.txt files/);
    assert.match(out, /30 files, \d+ paragraphs: \d+ for training, \d+ held out/);
    assert.deepEqual(readdirSync(path.join(dir, 'best')).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'best.json']);
    assert.deepEqual(readdirSync(path.join(dir, 'last')).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'training_log.json']);
    const best = JSON.parse(readFileSync(path.join(dir, 'best', 'best.json'), 'utf8')) as { value: number };
    const reloaded = Number(/reloaded .*: held-out perplexity (\S+)/.exec(out)?.[1]);
    assert.ok(Math.abs(reloaded - Math.exp(best.value)) < 0.01, `reloaded ${reloaded} vs best ${Math.exp(best.value)}`);
    assert.match(out, /^sample: "Captain, .*" \((length|stop)\)$/m);
  });
});

test('classify-with-head: accuracy rises; the head is saved in the adapter; reloaded accuracy equals', nativeOnly, async () => {
  const out = await runOk('classify-with-head', ['--train', '500', '--test', '200', '--steps', '40', '--eval-every', '20', '--r', '16']);
  const before = Number(/before training: test accuracy (\S+)%/.exec(out)?.[1]);
  const trained = /trained 40 steps: test accuracy \S+ \((\S+)\)/.exec(out)?.[1];
  assert.ok(trained !== undefined, out);
  assert.ok(100 * Number(trained) > before + 10, `accuracy ${before}% → ${100 * Number(trained)}%`);
  assert.deepEqual([...out.matchAll(/^step (\d+): test accuracy/gm)].map((m) => Number(m[1])), [20, 40]);
  assert.match(out, /head tensors in the adapter: base_model\.model\.classifier\.bias, base_model\.model\.classifier\.weight/);
  const reloaded = /reloaded on a fresh base: test accuracy \S+ \((\S+)\); equal: yes/.exec(out)?.[1];
  assert.equal(reloaded, trained);
});

test('a bad argument ends the example with a non-zero exit', async () => {
  const r = await runExample('merge-and-export', ['--no-such-flag']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /no-such-flag/);
});
