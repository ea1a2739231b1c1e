// The WebGPU backend in headless Chromium (SwiftShader when there is no GPU): every kernel against
// the TypeScript backend, and a VeRA training run on a tiny GPT-2. Fails, never skips, when
// Chromium or a WebGPU adapter is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bundlePage } from './browser/bundle.js';
import { openPage, withPage, type BrowserSession } from './browser/chromium.js';
import type { CheckResult } from './browser/webgpu-checks.js';
import type { TrainingReport } from './browser/webgpu-train.js';

interface Api {
  adapter(): Promise<string>;
  kernels(): Promise<CheckResult[]>;
  train(steps: number): Promise<TrainingReport>;
}
declare const veraWebGpu: Api;

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


test('webgpu: every kernel matches the TypeScript backend', { timeout: 300_000 }, async () => {
  const session = await openPage(root);
  await withPage('webgpu-kernels', session, async (s) => {
    await ready(s);
    const results = await s.page.evaluate(() => veraWebGpu.kernels());
    const failed = results.filter((r) => !r.ok);
    assert.ok(results.length >= 40, `only ${results.length} checks ran`);
    assert.deepEqual(failed.map((r) => `${r.name}: ${r.message}`), []);
  });
});

test('webgpu: VeRA on a tiny GPT-2, first step as the TypeScript backend and the loss falls', { timeout: 300_000 }, async () => {
  const session = await openPage(root);
  await withPage('webgpu-train', session, async (s) => {
    await ready(s);
    const r = await s.page.evaluate(() => veraWebGpu.train(20));
    assert.ok(Math.abs(r.firstLossGpu - r.firstLossTs) < 1e-4 * (1 + r.firstLossTs), `first loss ${r.firstLossGpu} vs ${r.firstLossTs}`);
    assert.ok(r.grads > 0 && r.maxGradErr < 1e-4, `gradients differ by ${r.maxGradErr}`);
    assert.equal(r.losses.at(-1)?.step, 20);
    assert.ok(r.losses.at(-1)!.loss < r.firstLossGpu * 0.8, `loss ${r.firstLossGpu} → ${JSON.stringify(r.losses)}`);
  });
});

