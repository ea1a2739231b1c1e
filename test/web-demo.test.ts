// The finetuning page (web/, `npm run demo:web`) in headless Chromium: it finetunes a VeRA adapter
// on the embedded fortune model in its worker on WebAssembly, WebGPU (SwiftShader) and the
// TypeScript backend, and the loss falls; the adapter it downloads (PEFT's two files) loads in
// Node, is byte for byte what savePretrained writes, and gives the page's logits; an adapter made
// in Node loads in the page through its file input and gives Node's logits. Fails, never skips,
// when Chromium or a WebGPU adapter is missing. Few steps on short texts: SwiftShader is slow.
import '../src/backends/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildWebDemo, repoRoot } from '../scripts/demo-web.js';
import { openPage, withPage, type BrowserSession } from './browser/chromium.js';
import { loadPretrained, type LlamaForCausalLM } from '../src/models/index.js';
import { PeftModel, getPeftModel, veraConfig } from '../src/peft/index.js';
import { noGrad, Rng } from '../src/tensor/index.js';

interface Logits { prompt: string; ids: number[]; vocab: number; values: number[] }
interface State {
  phase: string;
  status: string;
  error: string | null;
  model: { backend: string; note: string } | null;
  categories: string[];
  losses: { step: number; loss: number }[];
  progress: { step: number; steps: number } | null;
  trained: { steps: number; seconds: number; tokens: number; stopped: boolean } | null;
  outputs: { prompts: string[]; base: string[]; adapter: string[] | null } | null;
  adapter: { source: string; peftType: string; r: number } | null;
  probe: Logits | null;
  files: string[];
}
declare const veraPage: { state: State };

const MODEL = join(repoRoot, 'data', 'fortune-llama');
const root = mkdtempSync(join(tmpdir(), 'vera-web-'));
await buildWebDemo(root);

// four short texts trained on as one batch every step, so the loss falls step after step
const TEXTS = ['Live long and prosper.', 'Beam me up, Scotty.', 'Logic is the beginning of wisdom, not the end.', 'Space: the final frontier.'];

function query(o: Record<string, string | number>): string {
  return `index.html?${new URLSearchParams(Object.entries(o).map(([k, v]): [string, string] => [k, String(v)])).toString()}`;
}

const state = (s: BrowserSession): Promise<State> => s.page.evaluate(() => JSON.parse(JSON.stringify(veraPage.state)) as State);

/** Waits until the page is idle ('ready'); a page error, or the error phase, fails with the page's message. */
async function idle(s: BrowserSession, timeout: number): Promise<State> {
  await s.page.waitForFunction(() => {
    const p = (globalThis as unknown as { veraPage?: { state: State } }).veraPage?.state.phase;
    return p === 'ready' || p === 'error';
  }, undefined, { timeout, polling: 250 });
  const st = await state(s);
  const early = s.log.find((l) => l.startsWith('pageerror:'));
  if (early) throw new Error(`the page failed: ${early}`);
  assert.equal(st.error, null, `the page shows an error: ${st.error}`);
  assert.equal(st.phase, 'ready', st.status);
  return st;
}

function loadModel(): LlamaForCausalLM {
  return loadPretrained(MODEL, { log: () => {} }).model as LlamaForCausalLM;
}

function nodeLogits(model: LlamaForCausalLM, ids: number[]): Float32Array {
  return noGrad(() => model.forward(Int32Array.from(ids), [1, ids.length])).toFloat32Array();
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Trains on the page, checks the loss fell, downloads the adapter and checks it in Node. */
async function trainAndCheck(s: BrowserSession, backend: string, steps: number): Promise<void> {
  const ready = await idle(s, 240_000);
  assert.equal(ready.model?.backend, backend, `the page runs on ${ready.model?.backend}`);
  assert.ok(ready.outputs !== null && ready.outputs.base.length > 0 && ready.outputs.adapter === null, 'base outputs before training');
  await s.page.click('#train');
  await s.page.waitForFunction(() => veraPage.state.phase === 'busy', undefined, { timeout: 10_000 });
  const st = await idle(s, 420_000);
  const losses = st.losses.map((l) => l.loss);
  assert.deepEqual(st.losses.map((l) => l.step), Array.from({ length: steps }, (_, i) => i + 1));
  assert.ok(losses.at(-1)! < losses[0] * 0.9, `${backend}: the loss did not fall: ${losses.map((l) => l.toFixed(3)).join(' → ')}`);
  assert.ok(st.outputs?.adapter?.length === st.outputs?.base.length, 'outputs with the adapter after training');
  assert.deepEqual(st.files, ['adapter_config.json', 'adapter_model.safetensors']);
  console.log(`# ${backend}: ${steps} steps in ${st.trained!.seconds.toFixed(1)} s (${(steps / st.trained!.seconds).toFixed(2)} steps/s, ${(st.trained!.tokens / st.trained!.seconds).toFixed(0)} tokens/s), loss ${losses[0].toFixed(3)} → ${losses.at(-1)!.toFixed(3)}`);

  // the two downloads, into a folder, load in Node as any PEFT adapter
  const dir = mkdtempSync(join(tmpdir(), 'vera-web-adapter-'));
  for (const id of ['#dl-config', '#dl-weights']) {
    const [download] = await Promise.all([s.page.waitForEvent('download'), s.page.click(id)]);
    await download.saveAs(join(dir, download.suggestedFilename()));
  }
  const peft = PeftModel.fromPretrained(loadModel(), dir);
  const probe = st.probe!;
  const diff = maxDiff(nodeLogits(peft.model, probe.ids), probe.values);
  console.log(`# ${backend}: max |page − Node| logits with the downloaded adapter: ${diff.toExponential(2)}`);
  assert.ok(diff < 1e-4, `${backend}: the page's logits and Node's with the downloaded adapter differ by ${diff}`);
  // the adapter changed the outputs (else the comparison above would prove little)
  const baseDiff = maxDiff(nodeLogits(loadModel(), probe.ids), probe.values);
  assert.ok(baseDiff > 1e-3, `${backend}: the trained adapter leaves the logits as the base model's (${baseDiff})`);
  // exactly the bytes savePretrained writes
  const again = mkdtempSync(join(tmpdir(), 'vera-web-again-'));
  peft.savePretrained(again);
  for (const f of ['adapter_config.json', 'adapter_model.safetensors']) {
    assert.ok(readFileSync(join(dir, f)).equals(readFileSync(join(again, f))), `${f}: the page's download differs from savePretrained's`);
  }
}

test('web demo: finetunes on WebAssembly, the loss falls, the downloaded adapter gives the same logits in Node', { timeout: 600_000 }, async () => {
  const steps = 12;
  const session = await openPage(root, { isolated: true, page: query({ backend: 'wasm', steps, batch: 4, maxlen: 24, lr: 0.05, r: 64, tokens: 6, text: TEXTS.join('\n\n') }) });
  await withPage('web-demo-wasm', session, async (s) => {
    await trainAndCheck(s, 'wasm', steps);
    // Stop ends a long run after the step under way; its adapter is kept and offered ("Download both": two files)
    await s.page.fill('#steps', '500');
    await s.page.click('#train');
    await s.page.waitForFunction(() => (veraPage.state.progress?.step ?? 0) >= 2, undefined, { timeout: 60_000, polling: 100 });
    assert.ok(await s.page.isEnabled('#stop') && !(await s.page.isEnabled('#train')), 'Stop enabled, Train disabled while training');
    await s.page.click('#stop');
    const st = await idle(s, 120_000);
    assert.ok(st.trained?.stopped === true && st.trained.steps < 500, `stopped at ${st.trained?.steps}`);
    const names: string[] = [];
    s.page.on('download', (d) => names.push(d.suggestedFilename()));
    await s.page.click('#download');
    for (let i = 0; i < 50 && names.length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(names.sort(), ['adapter_config.json', 'adapter_model.safetensors']);
  });
});

test('web demo: finetunes on WebGPU, the loss falls, the downloaded adapter gives the same logits in Node', { timeout: 900_000 }, async () => {
  // each SwiftShader step costs seconds: the fewest steps and tokens that still show the loss falling
  const steps = 4;
  const session = await openPage(root, { isolated: true, page: query({ backend: 'webgpu', steps, batch: 4, maxlen: 12, lr: 0.1, r: 32, tokens: 1, prompts: 'The', text: TEXTS.join('\n\n') }) });
  await withPage('web-demo-webgpu', session, (s) => trainAndCheck(s, 'webgpu', steps));
});

test('web demo: switched to the TypeScript backend, finetunes', { timeout: 600_000 }, async () => {
  const steps = 6;
  const session = await openPage(root, { isolated: true, page: query({ backend: 'wasm', steps, batch: 4, maxlen: 16, lr: 0.08, r: 32, tokens: 2, prompts: 'The', text: TEXTS.join('\n\n') }) });
  await withPage('web-demo-ts', session, async (s) => {
    // picked in the selector: the page starts a fresh worker on that backend
    await idle(s, 240_000);
    await s.page.selectOption('#backend', 'ts');
    await trainAndCheck(s, 'ts', steps);
  });
});

test('web demo: an adapter saved in Node loads through the file input and gives Node\'s logits', { timeout: 600_000 }, async () => {
  // a VeRA adapter with random λ (a fresh one would equal the base model), projections saved in the file
  const peft = getPeftModel(loadModel(), veraConfig({ r: 16, projectionPrngKey: 5, saveProjection: true, targetModules: ['q_proj', 'v_proj', 'down_proj'] }));
  peft.trainableParameters().forEach(([, t], i) => t.copyFrom(new Rng(40 + i).fillUniform(new Float32Array(t.size), -1, 1)));
  const dir = mkdtempSync(join(tmpdir(), 'vera-node-adapter-'));
  peft.savePretrained(dir);
  // what the page saves on WebGPU: the same bytes through asynchronous reads
  assert.deepEqual(await peft.saveToBytesAsync(), peft.saveToBytes());
  // the page's default backend choice: WebGPU on a hardware adapter, else (SwiftShader here) WebAssembly
  const session = await openPage(root, { isolated: true, page: query({ tokens: 4, prompts: 'The' }) });
  await withPage('web-demo-load', session, async (s) => {
    const ready = await idle(s, 240_000);
    const { backend, note } = ready.model!;
    console.log(`# auto: ${backend} (${note})`);
    assert.ok(backend === 'webgpu' || (backend === 'wasm' && note !== ''), `auto chose ${backend} (${note})`);
    // the fortune categories left out of pretraining, each a user's training text
    assert.deepEqual(ready.categories, ['riddles', 'startrek', 'tao', 'zippy']);
    await s.page.selectOption('#category', 'tao');
    await s.page.waitForFunction(`/^\\d+ texts from the "tao" fortunes$/.test(document.getElementById('data-info').textContent)`, undefined, { timeout: 30_000 });
    await s.page.setInputFiles('#load', [join(dir, 'adapter_config.json'), join(dir, 'adapter_model.safetensors')]);
    await s.page.waitForFunction(() => veraPage.state.phase === 'busy' || veraPage.state.probe !== null, undefined, { timeout: 10_000 });
    const st = await idle(s, 240_000);
    assert.equal(st.adapter?.peftType, 'VERA');
    assert.equal(st.adapter?.r, 16);
    assert.ok(st.outputs?.adapter?.length === 1, 'outputs with the loaded adapter');
    const probe = st.probe!;
    const diff = maxDiff(nodeLogits(peft.model, probe.ids), probe.values);
    console.log(`# loaded in the page: max |page − Node| logits: ${diff.toExponential(2)}`);
    assert.ok(diff < 1e-4, `the page's logits with the loaded adapter and Node's differ by ${diff}`);
    const baseDiff = maxDiff(nodeLogits(loadModel(), probe.ids), probe.values);
    assert.ok(baseDiff > 1e-3, `the loaded adapter leaves the logits as the base model's (${baseDiff})`);
    // the page offers the loaded adapter back, as the same files
    assert.deepEqual(st.files, ['adapter_config.json', 'adapter_model.safetensors']);
    // a wrong pick is one line in the page, and the page stays usable
    await s.page.setInputFiles('#load', [join(dir, 'adapter_config.json')]);
    await s.page.waitForFunction(() => veraPage.state.error !== null, undefined, { timeout: 30_000 });
    const bad = await state(s);
    assert.match(bad.error!, /choose two files, adapter_config\.json and adapter_model\.safetensors/);
    assert.equal(bad.phase, 'ready');
    assert.ok(await s.page.isVisible('#error'));
  });
});

test('web demo: the page and worker sources type-check (esbuild bundles them without checking)', () => {
  const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', join(repoRoot, 'web', 'tsconfig.json')], { encoding: 'utf8' });
  assert.equal(r.status, 0, `tsc -p web/tsconfig.json:\n${r.stdout}${r.stderr}`);
});
