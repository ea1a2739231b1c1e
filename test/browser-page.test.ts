// vera in headless Chromium: the browser bundle (and dist/src/browser.js as plain ESM with an import
// map) loads the tiny GPT-2 from bytes served over HTTP (urlSource) and from Files (blobSource),
// and its logits equal Node's; a VeRA adapter saved in Node loads in the page with Node's outputs;
// an adapter saved to bytes in the page loads in Node with the page's outputs (and is byte for
// byte the one Node saves); the tokenizer encodes as in Node; three VeRA training steps in the
// page give Node's losses (progress lines go to the page's console). Node's reference runs on the
// TypeScript backend, which is the page's backend.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  AdamW, AutoTokenizer, PeftModel, activeBackend, causalLmTask, trainSteps, blobSource, getPeftModel, loadPretrained, noGrad, useBackend, veraConfig,
  type GPT2LMHeadModel, type PeftModel as Peft,
} from '../src/index.js';
import { bundleForBrowser } from './browser/bundle.js';
import { openPage, withPage } from './browser/chromium.js';

type Vera = typeof import('../src/browser.js');

const ROOT = new URL('../../', import.meta.url).pathname;
const FIX = join(ROOT, 'test', 'fixtures');
const TINY = join(FIX, 'gpt2-tiny');
const IDS = [5, 17, 3, 99, 42, 0, 64, 7];
const TEXT = 'Hello, world! Ünïcödé and   spaces.';
const TOL = 1e-5;

/** The adapter both sides build: VeRA on c_attn and c_fc with deterministic nonzero λ (fresh λb = 0 would equal the base). */
function adapterValues(name: string, size: number): Float32Array {
  return Float32Array.from({ length: size }, (_, i) => Math.sin(0.37 * i + name.length) * 0.8);
}
const ADAPTER = { targetModules: ['c_attn', 'c_fc'], r: 8, projectionPrngKey: 11 };

function closeTo(actual: readonly number[], expected: Float32Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  assert.ok(worst <= TOL, `${what}: max |page − node| = ${worst}`);
}

function nodeLogits(lm: GPT2LMHeadModel | Peft<GPT2LMHeadModel>): Float32Array {
  const model = lm instanceof PeftModel ? lm.model : lm;
  return noGrad(() => model.forward(Int32Array.from(IDS), [1, IDS.length]).data());
}

function nodeAdapter(): Peft<GPT2LMHeadModel> {
  const peft = getPeftModel(loadPretrained(TINY).model as GPT2LMHeadModel, veraConfig(ADAPTER));
  for (const [k, t] of peft.trainableParameters()) t.copyFrom(adapterValues(k, t.size));
  return peft;
}

/** A served folder: the bundle's page, the plain-ESM page, the fixtures, dist and node_modules (linked), and Node's adapter. */
async function servedRoot(nodeAdapterFiles: Record<string, Uint8Array>): Promise<string> {
  const root = mkdtempSync(join(tmpdir(), 'vera-page-'));
  const bundle = await bundleForBrowser("import * as vera from 'vera'; globalThis.vera = vera; globalThis.veraReady = true;");
  writeFileSync(join(root, 'app.js'), bundle.code);
  writeFileSync(join(root, 'index.html'), '<!doctype html><meta charset="utf-8"><script type="module" src="app.js"></script>\n');
  // dist/src/browser.js unbundled: the page maps the bare dependency names itself
  const importMap = {
    imports: {
      '@huggingface/tokenizers': '/node_modules/@huggingface/tokenizers/dist/tokenizers.mjs',
      '@huggingface/jinja': '/node_modules/@huggingface/jinja/dist/index.js',
    },
  };
  writeFileSync(join(root, 'esm.html'), `<!doctype html><meta charset="utf-8"><script type="importmap">${JSON.stringify(importMap)}</script>
<script type="module">import * as vera from '/dist/src/browser.js'; globalThis.vera = vera; globalThis.veraReady = true;</script>\n`);
  symlinkSync(FIX, join(root, 'fixtures'), 'dir');
  symlinkSync(join(ROOT, 'dist'), join(root, 'dist'), 'dir');
  symlinkSync(join(ROOT, 'node_modules'), join(root, 'node_modules'), 'dir');
  for (const [name, bytes] of Object.entries(nodeAdapterFiles)) {
    const file = join(root, 'node-adapter', name);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, bytes);
  }
  return root;
}

interface PageResult {
  backend: string | null;
  base: number[];
  fromFiles: number[];
  nodeAdapted: number[];
  pageAdapted: number[];
  saved: Record<string, string>;
  savedBlobSizes: Record<string, number>;
  ids: number[];
  trained: { losses: number[]; logits: number[] };
}

/** A few VeRA training steps from the same start, on both sides (the page's progress goes to its console). */
const TRAIN = { steps: 3, lr: 0.05, sequences: [[5, 17, 3, 99, 42, 0, 64, 7], [1, 2, 3, 4, 5, 6, 7, 8]] };

/** What the page computes; runs inside Chromium (serialized by playwright), so it uses only its argument and the page's globals. */
async function inPage(args: { ids: number[]; text: string; adapter: typeof ADAPTER; train: typeof TRAIN }): Promise<PageResult> {
  const v = (globalThis as unknown as { vera: Vera }).vera;
  const values = (name: string, size: number): Float32Array => Float32Array.from({ length: size }, (_, i) => Math.sin(0.37 * i + name.length) * 0.8);
  const ids = Int32Array.from(args.ids);
  const run = (m: { forward(x: Int32Array, s: readonly [number, number]): { data(): Float32Array } }): number[] => Array.from(v.noGrad(() => m.forward(ids, [1, ids.length])).data());

  const model = await v.AutoModelForCausalLM.fromPretrained(v.urlSource('fixtures/gpt2-tiny'));
  const base = run(model);
  // the same folder as File objects (what an <input type=file> gives)
  const files = await Promise.all(['config.json', 'model.safetensors'].map(async (n) => new File([new Uint8Array(await (await fetch(`fixtures/gpt2-tiny/${n}`)).arrayBuffer())], n)));
  const fromFiles = run(await v.AutoModelForCausalLM.fromPretrained(v.blobSource(files)));
  const withNode = await v.PeftModel.fromPretrained(await v.AutoModelForCausalLM.fromPretrained(v.urlSource('fixtures/gpt2-tiny')), v.urlSource('node-adapter'));
  const nodeAdapted = run(withNode.model);
  // an adapter made here, saved to bytes (and Blobs)
  const peft = v.getPeftModel(model, v.veraConfig(args.adapter));
  for (const [k, t] of peft.trainableParameters()) t.copyFrom(values(k, t.size));
  const pageAdapted = run(peft.model);
  const saved: Record<string, string> = {};
  for (const [name, bytes] of Object.entries(peft.saveToBytes())) {
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    saved[name] = btoa(s);
  }
  const savedBlobSizes = Object.fromEntries(Object.entries(peft.saveToBlobs()).map(([n, b]) => [n, b.size]));
  const tokenizer = await v.AutoTokenizer.fromPretrained(v.urlSource('fixtures/tokenizers/gpt2'));
  // training in the page: the trainer, AdamW and the progress reporter run without Node
  peft.model.train();
  const params = peft.trainableParameters();
  const optimizer = new v.AdamW([{ params: params.map(([, t]) => t), lr: args.train.lr }]);
  const losses: number[] = [];
  const task = v.causalLmTask(peft, args.train.sequences.map((q) => Int32Array.from(q)), 2);
  for (const info of v.trainSteps(params, optimizer, task, { steps: args.train.steps, seed: 0, logEvery: 1 })) losses.push(info.loss);
  peft.model.eval();
  const trained = { losses, logits: run(peft.model) };
  return { backend: v.activeBackend(), base, fromFiles, nodeAdapted, pageAdapted, saved, savedBlobSizes, ids: tokenizer.encode(args.text), trained };
}

test('in Chromium: load from URL and Files, adapters across Node and the page, the tokenizer (bundle and plain ESM)', async () => {
  const before = activeBackend()!;
  useBackend('ts');
  let root: string | null = null;
  try {
    const node = nodeAdapter();
    const nodeFiles = node.saveToBytes();
    const want = {
      base: nodeLogits(loadPretrained(TINY).model as GPT2LMHeadModel),
      adapted: nodeLogits(node),
      ids: (await AutoTokenizer.fromPretrained(join(FIX, 'tokenizers', 'gpt2'))).encode(TEXT),
    };
    const trainedNode = nodeAdapter();
    trainedNode.model.train();
    const params = trainedNode.trainableParameters();
    const optimizer = new AdamW([{ params: params.map(([, t]) => t), lr: TRAIN.lr }]);
    const task = causalLmTask(trainedNode, TRAIN.sequences.map((q) => Int32Array.from(q)), 2);
    const nodeLosses = [...trainSteps(params, optimizer, task, { steps: TRAIN.steps, seed: 0, logEvery: 1, progress: false })].map((i) => i.loss);
    trainedNode.model.eval();
    const trainedLogits = nodeLogits(trainedNode);
    // the adapter changes the outputs (else the comparisons below could not tell it was applied)
    assert.ok(want.adapted.some((x, i) => Math.abs(x - want.base[i]) > 1e-3));
    root = await servedRoot(nodeFiles);
    const session = await openPage(root);
    const results = await withPage('browser-page', session, async ({ browser, url, page, log }) => {
      const out: [string, PageResult][] = [];
      for (const [label, p] of [['bundle', page], ['plain ESM', await browser.newPage()]] as const) {
        if (label === 'plain ESM') await p.goto(url + 'esm.html');
        await p.waitForFunction(() => (globalThis as { veraReady?: boolean }).veraReady === true, undefined, { timeout: 30_000 });
        out.push([label, await p.evaluate(inPage, { ids: IDS, text: TEXT, adapter: ADAPTER, train: TRAIN })]);
      }
      // the bundle page's progress lines (no stderr in a page: console.log)
      assert.ok(log.some((l) => /^log: train \d+\/3 \| loss /.test(l)), log.join('\n'));
      return out;
    });
    for (const [label, r] of results) {
      assert.equal(r.backend, 'ts', `${label}: the page runs the TypeScript backend until initBackend picks another`);
      closeTo(r.base, want.base, `${label}: base logits`);
      closeTo(r.fromFiles, want.base, `${label}: logits from Files`);
      closeTo(r.nodeAdapted, want.adapted, `${label}: Node's adapter in the page`);
      closeTo(r.pageAdapted, want.adapted, `${label}: the page's adapter in the page`);
      assert.deepEqual(r.ids, want.ids, `${label}: tokenizer ids`);
      closeTo(r.trained.losses, Float32Array.from(nodeLosses), `${label}: training losses`);
      closeTo(r.trained.logits, trainedLogits, `${label}: logits after training`);
      assert.ok(r.trained.losses[TRAIN.steps - 1] < r.trained.losses[0], `${label}: the loss goes down (${r.trained.losses.join(', ')})`);
      // the page's bytes are Node's bytes, and load in Node to the page's outputs
      const saved = Object.fromEntries(Object.entries(r.saved).map(([n, b64]) => [n, new Uint8Array(Buffer.from(b64, 'base64'))]));
      assert.deepEqual(Object.keys(saved).sort(), Object.keys(nodeFiles).sort());
      for (const [name, bytes] of Object.entries(nodeFiles)) {
        assert.deepEqual(saved[name], bytes, `${label}: ${name} as Node writes it`);
        assert.equal(r.savedBlobSizes[name], bytes.byteLength, `${label}: ${name} as a Blob`);
      }
      const dir = join(root, `page-adapter-${label.replace(/\W/g, '')}`);
      mkdirSync(dir);
      for (const [name, bytes] of Object.entries(saved)) writeFileSync(join(dir, name), bytes);
      closeTo(r.pageAdapted, nodeLogits(PeftModel.fromPretrained(loadPretrained(TINY).model as GPT2LMHeadModel, dir)), `${label}: the page's adapter in Node`);
      const viaBytes = await PeftModel.fromPretrained(loadPretrained(TINY).model as GPT2LMHeadModel, blobSource(saved));
      closeTo(r.pageAdapted, nodeLogits(viaBytes), `${label}: the page's bytes through blobSource`);
    }
  } finally {
    useBackend(before);
    if (root !== null) rmSync(root, { recursive: true, force: true });
  }
});
