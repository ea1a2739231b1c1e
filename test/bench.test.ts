// The bench's machinery on tiny shapes (no timing assertions): it must train exactly the adapter
// tensors, count tokens right, write its report where told, and work without PyTorch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { backendNames } from '../src/backends/index.js';
import { runBench, type BenchOptions } from '../bench/main.js';
import { optionsFromArgv } from '../bench/cli.js';
import { adapterWork, checkSummary, tokensPerSecond } from '../bench/report.js';
import { torchTrain } from '../bench/torch.js';
import type { TrainSpec } from '../bench/step.js';
import { withTmp } from './helpers.js';

const LAYERS = 2;
const WIDTH = 32;
const VOCAB = 97;
const BATCH = 2;
const SEQ = 8;
const VERA_R = 16;
const LORA_R = 4;

function tinyOptions(dir: string): BenchOptions {
  return {
    sections: ['gemm', 'vera', 'lora'],
    quick: true,
    out: join(dir, 'BENCH.md'),
    jsonOut: join(dir, 'bench.json'),
    pythons: [join(dir, 'no-such-python')], // PyTorch absent, whatever this machine has
    threads: 1,
    gemm: { sizes: [16, 33], warmup: 1, runs: 2, minSeconds: 0 },
    models: [{ layers: LAYERS, width: WIDTH }],
    batch: BATCH,
    seq: SEQ,
    vocab: VOCAB,
    positions: 64,
    veraR: VERA_R,
    loraR: LORA_R,
    loraAlpha: 8,
    warmup: 1,
    steps: 2,
    decode: { shape: { vocab: 97, hidden: 32, intermediate: 64, layers: 2, heads: 4, kvHeads: 2 }, prompt: 4, newTokens: 4, batch: 3, mixed: 4, wide: 6, prefill: 9, veraR: 8, loraR: 2, loopTokens: 3, registry: 50, runs: 1 },
    quant: { sizes: [64], runs: 1, minSeconds: 0, decode: { shape: { vocab: 97, hidden: 64, intermediate: 128, layers: 2, heads: 4, kvHeads: 2 }, prompt: 4, newTokens: 3, runs: 1 }, accuracy: null },
    qlora: { shape: { vocab: 97, hidden: 64, intermediate: 128, layers: 2, heads: 4 }, seq: 8, r: 8, steps: 2 },
    wasm: {
      gemm: { sizes: [16, 33], warmup: 1, runs: 2, minSeconds: 0 },
      train: { method: 'vera', layers: LAYERS, width: WIDTH, vocab: VOCAB, positions: 64, batch: BATCH, seq: SEQ, r: VERA_R, alpha: 8, warmup: 1, steps: 1 },
    },
    webgpu: { sizes: [64, 100], runs: 2, steps: 1, train: { layers: 1, width: 64, vocab: 97, batch: 2, seq: 8, r: 8 }, small: { layers: 1, width: 64, vocab: 97, batch: 2, seq: 8, r: 8 } },
    command: 'npm run bench -- (test)',
    note: null,
    log: () => {},
  };
}

// Per block: c_attn 32→96, attn.c_proj 32→32, c_fc 32→128, mlp.c_proj 128→32.
const LAYER_SHAPES: [number, number][] = [[WIDTH, 3 * WIDTH], [WIDTH, WIDTH], [WIDTH, 4 * WIDTH], [4 * WIDTH, WIDTH]];

test('bench in quick mode on tiny shapes: trains only the adapter, counts tokens, reports without PyTorch', () => {
  withTmp((dir) => {
    const o = tinyOptions(dir);
    const r = runBench(o);
    assert.equal(r.torch.python, null);
    assert.match(r.torch.python === null ? r.torch.reason : '', /no-such-python/);
    assert.ok(r.backend && backendNames().includes(r.backend.name), `backend ${r.backend?.name}`);
    assert.equal(r.backend.threads, 1, 'the children ran with the thread count asked for');

    assert.ok(r.gemm?.ours.ok, 'our GEMM ran');
    assert.deepEqual(r.gemm.ours.value.results.map((x) => [x.n, x.seconds.length]), [[16, 2], [33, 2]]);
    assert.equal(r.gemm.torch, null);

    assert.equal(r.train.length, 2);
    const [veraRun, loraRun] = r.train.map((e) => {
      assert.ok(e.ours.ok, e.ours.ok ? '' : e.ours.error);
      assert.equal(e.torch, null);
      return { spec: e.spec, res: e.ours.value };
    });
    for (const { res } of [veraRun, loraRun]) {
      assert.equal(res.tokensPerStep, BATCH * SEQ);
      assert.equal(res.targetsPerStep, BATCH * (SEQ - 1));
      assert.equal(res.stepSeconds.length, 2, 'timed steps exclude the warm-up');
      assert.equal(res.losses.length, 3);
      // random GPT-2 init (std 0.02) gives near-uniform logits: the first loss is about ln(vocab)
      assert.ok(Math.abs(res.losses[0] - Math.log(VOCAB)) < 0.05, `first loss ${res.losses[0]}`);
      assert.equal(res.checks.adaptedLayers, 4 * LAYERS, 'c_attn, attn.c_proj, c_fc and mlp.c_proj of every block; not lm_head');
      assert.deepEqual(res.checks.updated, res.checks.trainableNames, 'every adapter tensor changed');
      assert.deepEqual(res.checks.frozenChanged, []);
      assert.deepEqual(res.checks.frozenWithGrad, []);
      assert.ok(res.checks.trainableNames.every((n) => n.startsWith('transformer.h.')), 'lm_head and embeddings are not adapted');
    }
    assert.equal(veraRun.res.checks.trainableNames.length, 2 * 4 * LAYERS);
    assert.ok(veraRun.res.checks.trainableNames.every((n) => /\.vera_lambda_[db]\.default$/.test(n)), 'VeRA trains only λd and λb');
    assert.equal(veraRun.res.trainableParams, LAYERS * LAYER_SHAPES.reduce((s, [, out]) => s + VERA_R + out, 0));
    assert.ok(loraRun.res.checks.trainableNames.every((n) => /\.lora_[AB]\.default\.weight$/.test(n)));
    assert.equal(loraRun.res.trainableParams, LAYERS * LAYER_SHAPES.reduce((s, [inF, out]) => s + LORA_R * (inF + out), 0));

    // The report went where told, says PyTorch is absent, and shows the tok/s of the median step.
    const md = readFileSync(o.out!, 'utf8');
    assert.match(md, /\| PyTorch \| \*\*not available\*\*/);
    assert.match(md, /\| 16 \| [\d.]+ \([\d.]+\) \| — \| n\/a \|/);
    for (const { spec, res } of [veraRun, loraRun]) {
      const row = md.split('\n').find((l) => l.startsWith(`| ${LAYERS}×${WIDTH} | ${spec.method === 'vera' ? 'VeRA' : 'LoRA'} r ${spec.r} |`));
      assert.ok(row, `row for ${spec.method}`);
      const cells = row.split('|').map((c) => c.trim());
      assert.equal(cells[5], tokensPerSecond(BATCH * SEQ, res.stepSeconds).toFixed(0));
      assert.equal(cells[6], '—');
      assert.equal(cells[7], 'n/a');
      assert.equal(cells[11], 'ok');
    }
    assert.match(md, /## VeRA against LoRA/);
    // adapter multiply-adds over the adapted layers': Σ r·(in+out) / Σ in·out = 16·r·w / 12·w²
    const work = LAYER_SHAPES.reduce((a, [i, o]) => a + VERA_R * (i + o), 0) / LAYER_SHAPES.reduce((a, [i, o]) => a + i * o, 0);
    assert.ok(Math.abs(adapterWork({ r: VERA_R, width: WIDTH }) - work) < 1e-12);
    assert.ok(md.includes(`| ${(100 * work).toFixed(1)}% / ${(100 * adapterWork({ r: LORA_R, width: WIDTH })).toFixed(1)}% |`));
    assert.deepEqual(JSON.parse(readFileSync(o.jsonOut!, 'utf8')).train.length, 2);
  });
});

test('bench options: --quick, --only and shape checks', () => {
  const q = optionsFromArgv(['--quick', '--only', 'gemm,vera', '--out', 'x.md']);
  assert.deepEqual(q.sections, ['gemm', 'vera']);
  assert.deepEqual(q.gemm.sizes, [256, 512]);
  assert.deepEqual(q.models, [{ layers: 2, width: 128 }]);
  assert.ok(q.out!.endsWith('x.md'));
  const full = optionsFromArgv(['--no-torch']);
  assert.deepEqual(full.models.map((m) => `${m.layers}x${m.width}`), ['2x128', '6x384', '12x768']);
  assert.deepEqual([full.batch, full.seq, full.vocab, full.veraR, full.loraR], [8, 128, 50257, 256, 8]);
  assert.deepEqual(full.pythons, []);
  assert.equal(optionsFromArgv(['--quick', '--note', "it's busy"]).command, `npm run bench -- --quick --note 'it'\\''s busy'`);
  assert.throws(() => optionsFromArgv(['--only', 'gemm,bogus']), /unknown section 'bogus'/);
  assert.throws(() => optionsFromArgv(['--models', '12x770']), /not divisible by its 12 heads/);
  assert.throws(() => optionsFromArgv(['--threads', '0']), /--threads must be a positive integer/);
});

const hasTorch = spawnSync('/usr/bin/python3', ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;

test('the PyTorch side counts the same tokens and trainable parameters', {
  skip: !hasTorch ? 'no PyTorch at /usr/bin/python3' : process.env.VERA_BACKEND === 'native' ? 'PyTorch side only: runs in the ts pass' : false,
}, () => {
  for (const method of ['vera', 'lora'] as const) {
    const spec: TrainSpec = { method, layers: LAYERS, width: WIDTH, vocab: VOCAB, positions: 64, batch: BATCH, seq: SEQ, r: method === 'vera' ? VERA_R : LORA_R, alpha: 8, warmup: 1, steps: 1 };
    const t = torchTrain('/usr/bin/python3', spec, 1);
    assert.equal(t.tokens_per_step, BATCH * SEQ);
    assert.equal(t.targets_per_step, BATCH * (SEQ - 1));
    const expected = method === 'vera'
      ? LAYERS * LAYER_SHAPES.reduce((s, [, out]) => s + VERA_R + out, 0)
      : LAYERS * LAYER_SHAPES.reduce((s, [inF, out]) => s + LORA_R * (inF + out), 0);
    assert.equal(t.trainable_params, expected);
    assert.ok(Math.abs(t.losses[0] - Math.log(VOCAB)) < 0.05, `first loss ${t.losses[0]}`);
  }
});

test('bench decode section on a tiny shape: every measurement runs, resident bytes are the vectors, the report has the table', () => {
  withTmp((dir) => {
    const o = { ...tinyOptions(dir), sections: ['decode' as const] };
    const r = runBench(o);
    assert.ok(r.decode, 'decode results');
    assert.ok(r.decode.ours.ok, r.decode.ours.ok ? '' : r.decode.ours.error);
    const d = r.decode.ours.value;
    const s = o.decode.shape;
    // weights: embedding (tied head) + per layer q, k, v, o, gate, up, down and two norms, + the final norm
    const hd = s.hidden / s.heads;
    const perLayer = s.hidden * s.heads * hd * 2 + 2 * s.hidden * s.kvHeads * hd + 3 * s.hidden * s.intermediate + 2 * s.hidden;
    assert.equal(d.weightBytes, 4 * (s.vocab * s.hidden + s.layers * perLayer + s.hidden));
    for (const runs of [d.batch1, d.batchN, d.mixedVera, d.singleVera, d.base, d.mixedLora, d.peftLoop, d.wideBase]) {
      assert.ok(runs.length > 0 && runs.every((x) => Number.isFinite(x.tokensPerSecond) && x.tokensPerSecond > 0));
    }
    assert.equal(d.mixedVera[0].requests, o.decode.mixed);
    assert.equal(d.wideBase[0].requests, o.decode.wide);
    assert.ok(d.prefillSeconds.length === 1 && d.prefillSeconds[0] > 0);
    // the registry's adapters: q_proj and v_proj of every layer, r + out each
    assert.equal(d.memory.bytesPerAdapter, 4 * s.layers * (2 * o.decode.veraR + s.heads * hd + s.kvHeads * hd));
    assert.equal(d.memory.adapters, 50);
    const md = readFileSync(o.out!, 'utf8');
    assert.match(md, /## Decoding with many adapters/);
    assert.match(md, /% of the bound/);
    assert.match(md, /prefill: one 9-token prompt/);
  });
});

test('bench quant section on tiny shapes: every format runs, bytes per token shrink, the report has the tables', () => {
  withTmp((dir) => {
    const o = { ...tinyOptions(dir), sections: ['gemm', 'quant'] as BenchOptions['sections'] };
    const r = runBench(o);
    const q = r.quant?.ours;
    if (!q?.ok) assert.fail(q ? q.error : 'no quant section');
    const v = q.value;
    assert.deepEqual(v.gemm.map((x) => x.format), ['f32', 'bf16', 'int8', 'nf4']);
    const bytes = Object.fromEntries(v.decode.map((x) => [x.format, x.linearBytes]));
    assert.ok(bytes.f32 === 2 * bytes.bf16 && bytes.bf16 > bytes.int8 && bytes.int8 > bytes.nf4, JSON.stringify(bytes));
    for (const x of v.decode) assert.equal(x.tokenSeconds.length, 3, x.format);
    assert.equal(v.accuracy, null);
    const md = readFileSync(o.out!, 'utf8');
    assert.match(md, /## Compact weight formats/);
    assert.match(md, /\| n \| f32 \| bf16 \| int8 \| nf4 \|/);
    assert.match(md, /% of bound/);
    if (r.backend?.name === 'native' && r.gemm?.ours.ok && r.gemm.ours.value.kernel !== 'portable') {
      assert.ok((r.gemm.ours.value.peakGflops ?? 0) > 0);
      assert.match(md, /Machine peak: [\d.]+ GFLOP\/s/);
    }
  });
});

test('bench qlora section on a tiny Llama: every linear layer but the head in nf4, each its own bytes, the step trains, the report has the table', () => {
  withTmp((dir) => {
    const o = { ...tinyOptions(dir), sections: ['qlora'] as BenchOptions['sections'] };
    const r = runBench(o);
    const q = r.qlora?.ours;
    if (!q?.ok) assert.fail(q ? q.error : 'no qlora section');
    const v = q.value;
    const s = o.qlora.shape;
    assert.equal(v.linearLayers, 7 * s.layers);
    // per layer: 4 attention (h×h) and 3 MLP (h×i) matrices at half a byte per weight, plus block scales
    const weights = s.layers * (4 * s.hidden * s.hidden + 3 * s.hidden * s.intermediate);
    assert.ok(v.nf4Bytes >= weights / 2 && v.nf4Bytes < weights / 2 * 1.1, `${v.nf4Bytes} bytes for ${weights} weights`);
    assert.equal(v.stepSeconds.length, 2);
    assert.ok(v.losses.every(Number.isFinite) && v.losses[1] < v.losses[0], `losses ${v.losses}`);
    const md = readFileSync(o.out!, 'utf8');
    assert.match(md, /## A 7B-class model in nf4/);
    assert.match(md, /\| peak RSS, after the steps \| [\d.]+ GiB/);
  });
});

test('bench wasm section on tiny shapes: ours, TF.js and jax-js each time every size, both VeRA steps train the adapter, the report has the tables', () => {
  withTmp((dir) => {
    const o = { ...tinyOptions(dir), sections: ['wasm'] as BenchOptions['sections'] };
    const r = runBench(o);
    const w = r.wasm;
    assert.ok(w, 'no wasm section');
    for (const [name, g] of [['ours', w.ours], ['ours threaded', w.oursThreads], ['tfjs', w.tfjs], ['jax', w.jax]] as const) {
      if (!g.ok) assert.fail(`${name}: ${g.error}`);
      assert.deepEqual(g.value.results.map((x) => x.n), [16, 33], name);
      // two rounds pooled: at least twice the runs of one
      for (const x of g.value.results) assert.ok(x.seconds.length >= 4, `${name} n ${x.n}: ${x.seconds.length} runs`);
    }
    if (w.ours.ok) assert.equal(w.ours.value.backend, 'wasm');
    // the threaded child reports the threads it ran
    assert.ok(w.oursThreads.ok && w.oursThreads.value.backend === 'wasm' && w.oursThreads.value.threads === w.threads, JSON.stringify(w.oursThreads.ok ? w.oursThreads.value.threads : w.oursThreads));
    if (w.ours.ok) assert.equal(w.ours.value.threads, 1);
    if (!w.trainWasm.ok) assert.fail(w.trainWasm.error);
    assert.equal(w.trainWasm.value.backend, 'wasm');
    assert.equal(checkSummary(w.trainWasm.value), 'ok');
    // native is absent where the addon was not built
    if (w.trainNative.ok) assert.equal(checkSummary(w.trainNative.value), 'ok');
    else assert.match(w.trainNative.error, /native backend not available/);
    const md = readFileSync(o.out!, 'utf8');
    assert.match(md, /## WebAssembly backend/);
    assert.match(md, /\| n \| ours \(wasm, 1 thread\) \| ours \(wasm, \d+ threads\) \| TF\.js .* \| jax-js .* \| ours \/ TF\.js \(best\) \| ours \/ jax-js \(best\) \| ours threaded \/ TF\.js \(best\) \| ours threaded \/ jax-js \(best\) \|/);
    assert.match(md, /wasm \/ native: /);
  });
});

test('bench webgpu section: Chromium runs GEMM and VeRA steps on its adapter, named in the report (SwiftShader flagged)', { skip: process.env.VERA_BACKEND === 'native' ? 'backend-independent: runs in the ts pass' : false }, () => {
  withTmp((dir) => {
    const o = { ...tinyOptions(dir), sections: ['webgpu'] as BenchOptions['sections'] };
    const r = runBench(o);
    const w = r.webgpu?.ours;
    if (!w?.ok) assert.fail(w ? w.error : 'no webgpu section');
    assert.deepEqual(w.value.gemm.map((g) => g.n), [64, 100]);
    assert.ok(w.value.gemm.every((g) => g.seconds.length === 2 && g.seconds.every((x) => x > 0)));
    assert.equal(w.value.train.stepSeconds.length, 1);
    assert.ok(w.value.train.losses.every(Number.isFinite));
    const md = readFileSync(o.out!, 'utf8');
    assert.match(md, /## WebGPU \(headless Chromium\)/);
    assert.ok(md.includes(`Adapter: ${w.value.adapter}.`));
    if (w.value.swiftshader) assert.match(md, /not GPU speed/);
  });
});
