// The WebAssembly backend in headless Chromium: the kernel conformance suite and the backend bundled
// for the browser (esbuild), served from a loopback folder with wasm/vera.wasm beside the page, run
// against the TypeScript backend in the page, one result per case. Plain and cross-origin isolated
// (COOP/COEP) pages: the backend must load and agree in both. Fails (never skips) without Chromium.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

import { openPage, withPage } from './browser/chromium.js';
import { withTmp } from './helpers.js';
import type { BrowserSuiteReport } from './browser/wasm-suite.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

async function runInChromium(isolated: boolean): Promise<BrowserSuiteReport> {
  return withTmp(async (dir) => {
    await build({
      entryPoints: [join(root, 'dist', 'test', 'browser', 'wasm-suite.js')],
      bundle: true, platform: 'browser', format: 'esm', outfile: join(dir, 'suite.js'), logLevel: 'error',
    });
    copyFileSync(join(root, 'wasm', 'vera.wasm'), join(dir, 'vera.wasm'));
    writeFileSync(join(dir, 'index.html'), '<!doctype html><meta charset="utf-8"><title>vera wasm suite</title><script type="module" src="suite.js"></script>\n');
    const session = await openPage(dir, { isolated });
    return withPage(`browser-wasm${isolated ? '-isolated' : ''}`, session, async ({ page }) => {
      await page.waitForFunction('globalThis.veraSuite !== undefined', undefined, { timeout: 30_000 });
      return (await page.evaluate('globalThis.veraSuite')) as BrowserSuiteReport;
    });
  }, 'vera-browser-wasm-');
}

for (const isolated of [false, true]) {
  test(`the wasm backend passes the kernel conformance suite in Chromium${isolated ? ' (cross-origin isolated page)' : ''}`, { timeout: 300_000 }, async (t) => {
    const report = await runInChromium(isolated);
    assert.equal(report.name, 'wasm');
    assert.equal(report.crossOriginIsolated, isolated);
    assert.ok(report.results.length >= 20, `${report.results.length} cases ran`);
    const failed = report.results.filter((r) => !r.ok);
    assert.deepEqual(failed.map((r) => `${r.name}: ${r.message}`), []);
    t.diagnostic(`${report.results.length} cases passed in ${report.results.reduce((s, r) => s + r.ms, 0)} ms`);
  });
}
