// The WebGPU backend in headless Chromium (SwiftShader when there is no GPU): every kernel against
// the TypeScript backend, and a VeRA training run on a tiny GPT-2. Fails, never skips, when
// Chromium or a WebGPU adapter is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bundlePage } from './browser/page-bundle.js';
import { openPage, withPage, type BrowserSession } from './browser/chromium.js';
import type { CheckResult } from './browser/webgpu-checks.js';
import { loadWebGpuKernels } from '../src/backends/webgpu/index.js';
import type { SuiteResult } from './conformance/kernel-suite.js';
import type { TrainingReport } from './browser/webgpu-train.js';

interface Api {
  adapter(): Promise<string>;
  kernels(): Promise<CheckResult[]>;
  suite(skip: string[]): Promise<SuiteResult[]>;
  suiteOtherGemm(): Promise<SuiteResult[]>;
  train(steps: number): Promise<TrainingReport>;
  generate(): Promise<{ gpu: number[]; ts: number[] }>;
}
declare const veraWebGpu: Api;

// the browser does not use the Node backend: npm test's native pass would only repeat the ts pass
const only = { skip: process.env.VERA_BACKEND === 'native' ? 'backend-independent: runs in the ts pass' : false, timeout: 300_000 };

const root = await bundlePage('test/browser/webgpu-page.ts', 'vera webgpu tests');

/** Waits for the page's module to have run; a load error fails at once with its message. */
async function ready(s: BrowserSession): Promise<void> {
  const early = s.log.find((l) => l.startsWith('pageerror:'));
  if (early) throw new Error(`the test page failed to load: ${early}`);
  let failed: ((e: Error) => void) | null = null;
  const onError = (e: Error): void => failed?.(new Error(`the test page failed to load: ${e.message}`));
  s.page.on('pageerror', onError);
  try {
    await Promise.race([
      s.page.waitForFunction('globalThis.veraReady === true', undefined, { timeout: 30_000 }),
      new Promise<never>((_, reject) => { failed = reject; }),
    ]);
  } finally {
    s.page.off('pageerror', onError);
  }
}


test('webgpu: the shared kernel conformance suite against the TypeScript backend', only, async () => {
  const session = await openPage(root);
  await withPage('webgpu-suite', session, async (s) => {
    await ready(s);
    const results = await s.page.evaluate(() => veraWebGpu.suite([]));
    assert.ok(results.length >= 20, `only ${results.length} cases ran`);
    // what a GPU cannot do: sumSquares returns a host number synchronously (it is the last step of its case, so the rest of the case ran)
    const refused: Record<string, RegExp> = {
      'fill, affine, powScalar, axpy, sumSquares': /^kernel sumSquares: |^webgpu: sumSquares returns a host number synchronously/,
    };
    const failed = results.filter((r) => !r.ok && !(refused[r.name]?.test(r.message ?? '')));
    assert.deepEqual(failed.map((r) => `${r.name}: ${r.message}`), []);
    for (const name of Object.keys(refused)) assert.ok(results.some((r) => r.name === name), `case '${name}' did not run`);
  });
});

test('webgpu: the GEMM cases also pass with the other GEMM kernel (tiled for GPUs, direct for CPU adapters)', only, async () => {
  const session = await openPage(root);
  await withPage('webgpu-suite-gemm', session, async (s) => {
    await ready(s);
    const results = await s.page.evaluate(() => veraWebGpu.suiteOtherGemm());
    assert.ok(results.length >= 5, `only ${results.length} cases ran`);
    assert.deepEqual(results.filter((r) => !r.ok).map((r) => `${r.name}: ${r.message}`), []);
  });
});

test('webgpu: every kernel matches the TypeScript backend', only, async () => {
  const session = await openPage(root);
  await withPage('webgpu-kernels', session, async (s) => {
    await ready(s);
    const results = await s.page.evaluate(() => veraWebGpu.kernels());
    const failed = results.filter((r) => !r.ok);
    assert.ok(results.length >= 40, `only ${results.length} checks ran`);
    assert.deepEqual(failed.map((r) => `${r.name}: ${r.message}`), []);
  });
});

test('webgpu: VeRA on a tiny GPT-2, first step (and its clipped gradients) as the TypeScript backend, and the loss falls with clipping', only, async () => {
  const session = await openPage(root);
  await withPage('webgpu-train', session, async (s) => {
    await ready(s);
    const r = await s.page.evaluate(() => veraWebGpu.train(20));
    assert.ok(Math.abs(r.firstLossGpu - r.firstLossTs) < 1e-4 * (1 + r.firstLossTs), `first loss ${r.firstLossGpu} vs ${r.firstLossTs}`);
    assert.ok(r.grads > 0 && r.maxGradErr < 1e-4, `gradients differ by ${r.maxGradErr}`);
    // gradient clipping on the device: the norm and the clipped gradients of the host version
    assert.ok(Math.abs(r.normGpu - r.normTs) < 1e-4 * r.normTs && r.maxClippedErr < 1e-4, `norm ${r.normGpu} vs ${r.normTs}, clipped gradients differ by ${r.maxClippedErr}`);
    assert.ok(r.losses.every((l) => Number.isFinite(l.gradNorm) && l.gradNorm! > 0), `norms read with the losses: ${JSON.stringify(r.losses)}`);
    assert.equal(r.losses.at(-1)?.step, 20);
    const seq = [r.firstLossGpu, ...r.losses.map((l) => l.loss)];
    const falls = seq.every((l, i) => i === 0 || l < seq[i - 1]);
    assert.ok(falls && seq.at(-1)! < seq[0] - 0.2, `loss ${r.firstLossGpu} → ${JSON.stringify(r.losses)}`);
  });
});


test('webgpu: greedy generateAsync with a KV cache gives the TypeScript backend\'s tokens', only, async () => {
  const session = await openPage(root);
  await withPage('webgpu-generate', session, async (s) => {
    await ready(s);
    const r = await s.page.evaluate(() => veraWebGpu.generate());
    assert.equal(r.ts.length, 10);
    assert.deepEqual(r.gpu, r.ts);
  });
});

test('loadWebGpuKernels without navigator.gpu (Node) refuses in one line', async () => {
  await assert.rejects(loadWebGpuKernels(), (e: Error) => /^webgpu: navigator\.gpu is missing/.test(e.message) && !e.message.includes('\n'));
});
